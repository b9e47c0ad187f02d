"""ubc: the Unet-boosted classifier and its small-sample study (paper 003)."""

__version__ = "0.1.0"
