"""Augmentations (MONAI-style array transforms), exact spatial transforms and the view generator.

Import the modules directly (``voxssl.transforms.spatial``, ``.intensity``, ``.local``,
``.pairs``); this package imports nothing itself so that importing one stays light.
"""
