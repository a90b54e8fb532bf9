"""Typed recipe configuration (see :mod:`voxssl.config.loader`)."""

from voxssl.config.recipe import Recipe, load_recipe, require_section, save_resolved

__all__ = ["Recipe", "load_recipe", "require_section", "save_resolved"]
