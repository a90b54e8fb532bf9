"""2D few-shot segmentation: SSL-ALPNet / DINOv2-ALPNet on voxssl's preprocessed cache.

Modules: alp (prototypes, loss), encoders / dinov2 (slice encoders, LoRA), slices, superpixels,
augment, episodes (self-supervision), protocol (folds, C chunks, Dice), inference, cca, ttt,
train (the loop), experiment (train all protocol models), evaluate, segment (a user's 1-shot run),
checkpoint (weights files). See docs/fewshot.md.
"""
