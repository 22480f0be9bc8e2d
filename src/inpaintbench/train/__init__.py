"""Trainer, losses, perceptual backbones and checkpoints."""
