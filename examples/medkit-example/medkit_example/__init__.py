"""Example medkit plugin: segmentation of procedurally drawn discs and squares with a tiny CNN."""

__version__ = "0.1.0"
