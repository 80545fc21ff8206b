"""Training machinery shared by every trainable method: the loop, checkpoints, distribution."""
