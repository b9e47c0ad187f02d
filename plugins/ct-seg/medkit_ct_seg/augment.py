"""Slice transforms of ct-seg, image and mask together: label mapping, resizing, and the paper's augmentations.

Values follow the authors' code (spec, Training facts): rotation within 5 degrees with p 0.7, random resized
crop keeping 95-100 % of the area, Gaussian noise with p 0.1. Blur and flips exist but are off by default: the
report found that blur erases the thin trachea and that a flip swaps the left and right lung labels.
"""

from __future__ import annotations

from collections.abc import Callable
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


def warped_mask(mask: torch.Tensor, warp: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``mask`` (H, W) of class indices through the image's own ``warp``: each class as a plane, warped with
    the image's interpolation, and the likeliest class per pixel. The label then samples exactly the points the
    image does (nearest-neighbour sampling is off by up to half a pixel after a resize or crop), and a
    downsampled mask takes the majority of the pixels it covers. Outside the image (rotation corners) every
    plane is 0 and the pixel is background."""
    classes = int(mask.max()) + 1
    planes = torch.nn.functional.one_hot(mask.long(), classes).permute(2, 0, 1).float()
    return warp(planes).argmax(dim=0).to(mask.dtype)


class SliceTransform(Augmenter):
    """Maps labels, resizes to ``size`` and, for training, applies the enabled augmentations."""

    def __init__(self, size: int, augment: AugmentConfig | None, label_map: dict[int, int]) -> None:
        self.size, self.augment, self.table = size, augment, label_lookup(label_map)

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        image, mask = sample["image"], sample["mask"]
        if self.table is not None:
            mask = self.table[mask.clamp(0, 255)]
        if image.shape[-1] != self.size or image.shape[-2] != self.size:
            image, mask = self._warp(image, mask, tvf.resize, [self.size, self.size], antialias=True)
        if self.augment is not None:
            image, mask = self._augment(image, mask, rng)
        return {**sample, "image": image, "mask": mask}

    @staticmethod
    def _warp(image: torch.Tensor, mask: torch.Tensor, warp: Callable[..., torch.Tensor], *args, **kwargs):
        """One geometric transform, with the same interpolation, for the image and the mask."""

        def apply(x: torch.Tensor) -> torch.Tensor:
            return warp(x, *args, **kwargs)

        return apply(image), warped_mask(mask, apply)

    def _augment(self, image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator):
        a = self.augment
        if a.rotate_degrees > 0 and rng.random() < 0.7:
            angle = float(rng.uniform(-a.rotate_degrees, a.rotate_degrees))
            image, mask = self._warp(image, mask, tvf.rotate, angle, interpolation=InterpolationMode.BILINEAR)
        if a.crop_scale < 1.0:
            side = round(float(self.size * np.sqrt(rng.uniform(a.crop_scale, 1.0))))
            top, left = (int(v) for v in rng.integers(0, self.size - side + 1, size=2))
            box = (top, left, side, side, [self.size, self.size])
            image, mask = self._warp(image, mask, tvf.resized_crop, *box, antialias=True)
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
