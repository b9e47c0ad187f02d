"""anomaly-backbones: embedding-based anomaly detection and the backbone study (paper 004)."""

__version__ = "0.1.0"
