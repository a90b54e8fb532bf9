"""Data layer: readers, dataset adapters, preprocessing, cache, phantoms."""
