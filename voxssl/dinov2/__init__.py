"""Continued DINOv2 self-supervised training of a ViT on 2D medical images (``voxssl dinov2``).

- :mod:`voxssl.dinov2.model`: the student (ViT + DINO head (+ iBOT head)) and its EMA teacher;
- :mod:`voxssl.dinov2.objective`: DINO + iBOT + KoLeo from one batch of multi-crops;
- :mod:`voxssl.dinov2.schedules`, :mod:`voxssl.dinov2.param_groups`: DINOv2's schedules and
  layer-wise learning rates;
- :mod:`voxssl.dinov2.data`: images (cache slices, 2D folders) -> batches of crops and masks;
- :mod:`voxssl.dinov2.loop`: the training loop.

The losses are in :mod:`voxssl.losses` (``dino_clstoken``, ``ibot_patch``, ``koleo``,
``dino_targets``), the head in :mod:`voxssl.models.dino_head`, the augmentation in
:mod:`voxssl.transforms.multicrop` and :mod:`voxssl.transforms.block_mask`. Import submodules
directly; this package imports nothing heavy.
"""
