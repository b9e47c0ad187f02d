"""Recipes of anomaly-backbones: fit/test, predict and the backbone study."""
