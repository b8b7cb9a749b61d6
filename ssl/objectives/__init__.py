"""Training objectives, one module each; every loss is a pure function of tensors."""
