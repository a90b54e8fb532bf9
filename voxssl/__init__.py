"""voxssl: dense (voxel-level) self-supervised learning for 3D CT and MRI."""

__version__ = "0.1.0"
