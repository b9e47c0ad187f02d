"""ct-seg: slice-wise CT segmentation of lungs and trachea (paper 002, sections 1-5)."""

__version__ = "0.1.0"
