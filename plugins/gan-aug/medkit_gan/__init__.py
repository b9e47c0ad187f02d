"""gan-aug: conditional StyleGAN2 augmentation for histology (paper 001)."""
