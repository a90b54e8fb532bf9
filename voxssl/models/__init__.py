"""Backbones (the 3D FPN), heads, voxel gathering and the self-describing weights format.
Import the modules directly (``voxssl.models.fpn``, ``.build``, ``.weights`` ...)."""
