"""Image- and slice-level classification with a DINOv2 ViT (``voxssl classify``): data
(:mod:`.data`), the classifier and its weights (:mod:`.model`), one fold's training
(:mod:`.train`), AUC (:mod:`.metrics`) and the k-fold protocol with its report (:mod:`.protocol`).
Import submodules directly; this package imports nothing heavy."""
