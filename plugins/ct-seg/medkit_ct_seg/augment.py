"""Slice transforms of ct-seg, image and mask together: label mapping, resizing, and the paper's augmentations.

Values follow the authors' code (spec, Training facts): rotation within 5 degrees with p 0.7, random resized
crop keeping 95-100 % of the area, Gaussian noise with p 0.1. Blur and flips exist but are off by default: the
report found that blur erases the thin trachea and that a flip swaps the left and right lung labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from medkit import Augmenter, UsageError

from .config import AugmentConfig


def label_lookup(label_map: dict[int, int]) -> torch.Tensor | None:
    """A 256-entry table mapping stored mask values to classes (values not listed map to 0)."""
    if not label_map:
        return None
    table = torch.zeros(256, dtype=torch.int64)
    for value, label in label_map.items():
        if not 0 <= int(value) < 256:
            raise UsageError(f"label_map: mask value {value} is outside 0..255")
        table[int(value)] = int(label)
    return table


class SliceTransform(Augmenter):
    """Maps labels, resizes to ``size`` and, for training, applies the enabled augmentations."""

    def __init__(self, size: int, augment: AugmentConfig | None, label_map: dict[int, int]) -> None:
        self.size, self.augment, self.table = size, augment, label_lookup(label_map)

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image, mask = sample["image"], sample["mask"]
        if self.table is not None:
            mask = self.table[mask.clamp(0, 255)]
        if image.shape[-1] != self.size or image.shape[-2] != self.size:
            image = tvf.resize(image, [self.size, self.size], antialias=True)
            mask = tvf.resize(mask[None], [self.size, self.size], interpolation=InterpolationMode.NEAREST)[0]
        if self.augment is not None:
            image, mask = self._augment(image, mask, rng)
        return {**sample, "image": image, "mask": mask}

    def _augment(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator):
        a = self.augment
        if a.rotate_degrees > 0 and rng.random() < 0.7:
            angle = float(rng.uniform(-a.rotate_degrees, a.rotate_degrees))
            image = tvf.rotate(image, angle, interpolation=InterpolationMode.BILINEAR)
            mask = tvf.rotate(mask[None], angle, interpolation=InterpolationMode.NEAREST)[0]
        if a.crop_scale < 1.0:
            side = round(float(self.size * np.sqrt(rng.uniform(a.crop_scale, 1.0))))
            top, left = (int(v) for v in rng.integers(0, self.size - side + 1, size=2))
            image = tvf.resized_crop(image, top, left, side, side, [self.size, self.size], antialias=True)
            mask = tvf.resized_crop(
                mask[None],
                top,
                left,
                side,
                side,
                [self.size, self.size],
                interpolation=InterpolationMode.NEAREST,
            )[0]
        if a.flips and rng.random() < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        if a.blur and rng.random() < 0.2:
            image = tvf.gaussian_blur(image, [3, 3])
        if a.brightness_contrast > 0 and rng.random() < 0.5:
            gain = 1 + rng.uniform(-a.brightness_contrast, a.brightness_contrast)
            shift = rng.uniform(-a.brightness_contrast, a.brightness_contrast)
            image = (image - image.mean()) * gain + image.mean() + shift
        if a.noise_std > 0 and rng.random() < 0.1:
            generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
            image = image + a.noise_std * torch.randn(image.shape, generator=generator)
        return image, mask
