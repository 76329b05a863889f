"""Training: the loop (fit, early stopping, resume, DDP) and checkpoints."""
