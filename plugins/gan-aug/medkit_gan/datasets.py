"""gan-aug's registered datasets: the embedded synthetic histology and histology folders, as medkit Datasets."""

from __future__ import annotations

from pathlib import Path

from .folders import ImageSetDataset, load_dataset
from .synthetic import embedded_split


def synthetic_dataset(split: str = "train", resolution: int = 64, seed: int = 0) -> ImageSetDataset:
    """The embedded procedural H&E-like patches (``split`` train or val)."""
    train, val = embedded_split(resolution=resolution, seed=seed)
    return ImageSetDataset(train if split == "train" else val)


def folder_dataset(root: str | Path, layout: str = "auto", resolution: int = 64) -> ImageSetDataset:
    """Class folders, NCT-CRC-HE-100K, BACH or PATH-DT-MSU-like layouts at ``resolution`` px."""
    return ImageSetDataset(load_dataset(Path(root), layout=layout, resolution=resolution))
