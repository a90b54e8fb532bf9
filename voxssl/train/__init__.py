"""Pretraining: the loop (:func:`voxssl.train.loop.pretrain`), checkpoints, distributed helpers,
logging. Import the submodules directly; this package imports nothing heavy on its own."""
