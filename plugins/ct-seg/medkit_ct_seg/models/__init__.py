"""Architectures of paper 002, one module per family; each is registered by name for ``--arch``."""
