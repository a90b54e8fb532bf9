"""Pretrained weights: the registry of published models, a verified downloader, converters from
the vox2vec and hierarchical-dense-ssl layouts, and export of releases and MONAI bundles.

Every ``--weights`` argument goes through :func:`voxssl.hub.resolve.resolve_weights`, which
turns a registry name, a release folder, a ``.safetensors`` file or a foreign checkpoint into one
voxssl ``.safetensors`` file that :func:`voxssl.models.weights.load_backbone` reads.
"""
