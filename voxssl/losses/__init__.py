"""Losses, one per module: the pretraining terms (InfoNCE, reconstruction, equivariance) and the
supervised segmentation loss of the downstream protocols. Import the modules directly."""
