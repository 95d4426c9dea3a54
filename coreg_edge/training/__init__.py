"""Training: trainer, methods, checkpoints, peer selection."""
