"""Dataset helpers every plugin needs: subsets and train/validation splits that keep a patient on one side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import UsageError
from .interfaces import Dataset, Sample


class Subset(Dataset):
    """The samples ``indices`` of ``base``, keeping its task, classes and groups."""

    def __init__(self, base: Dataset, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)
        self.task = base.task  # type: ignore[misc]
        self.class_names = base.class_names
        self.in_channels = base.in_channels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        return self.base[self.indices[index]]

    def groups(self) -> Sequence[str] | None:
        groups = self.base.groups()
        return None if groups is None else [groups[i] for i in self.indices]


def train_val_split(dataset: Dataset, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Random split; when the dataset has groups (patients, volumes) whole groups go to one side."""
    if not 0.0 < val_fraction < 1.0:
        raise UsageError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    groups: Any = dataset.groups()
    if groups is None:
        groups = list(range(len(dataset)))
    unique = np.array(sorted(set(groups), key=str), dtype=object)
    if len(unique) < 2:
        raise UsageError(f"cannot split {len(unique)} group(s) into training and validation parts")
    rng.shuffle(unique)
    n_val = min(len(unique) - 1, max(1, round(len(unique) * val_fraction)))
    val_groups = set(unique[:n_val].tolist())
    val = [i for i, g in enumerate(groups) if g in val_groups]
    train = [i for i, g in enumerate(groups) if g not in val_groups]
    return Subset(dataset, train), Subset(dataset, val)
