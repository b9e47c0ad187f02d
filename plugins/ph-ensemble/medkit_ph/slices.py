"""CT slices as a medkit classification Dataset for the CNN baselines: grayscale, resized, optionally rotated."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from medkit import Dataset, Sample


class SliceSet(Dataset):
    """Images ``indices`` of an ImageSet as (1, size, size) float tensors in [0, 1] with their labels; a
    training set rotates each slice by a random angle up to ``rotate_degrees`` (report section 7)."""

    task = "classification"
    in_channels = 1

    def __init__(
        self, data, indices: Sequence[int], size: int, rotate_degrees: float = 0.0, seed: int = 0
    ) -> None:
        self.data, self.indices = data, list(indices)
        self.size, self.rotate_degrees = size, rotate_degrees
        self.class_names = list(data.class_names)
        self.generator = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        i = self.indices[index]
        image = self.data.images[i]
        if image.ndim == 3:  # RGB: luminance, as torchvision's Grayscale
            image = (image @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)
        x = torch.from_numpy(np.array(image, copy=True))[None]
        x = F.resize(x, [self.size, self.size], antialias=True)
        x = F.to_dtype(x, torch.float32, scale=True)
        if self.rotate_degrees > 0:
            angle = float(self.generator.uniform(-self.rotate_degrees, self.rotate_degrees))
            x = F.rotate(x, angle, interpolation=F.InterpolationMode.BILINEAR)
        return {"image": x, "label": int(self.data.labels[i])}


def split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified random split (the report's 90:10)."""
    from sklearn.model_selection import train_test_split

    every = np.arange(len(labels))
    train, val = train_test_split(every, test_size=val_fraction, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(val)


def cross_entropy(output: torch.Tensor, batch: dict) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(output, batch["label"])
