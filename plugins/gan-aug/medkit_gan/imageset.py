"""ImageSet: a labelled set of RGB patches in memory, the one data type every gan-aug module passes around.

Histology patches are small (32-256 px) and the sets this plugin trains on fit in RAM once decoded, so an
ImageSet is plain arrays: ``images`` uint8 (N, H, W, 3), ``labels`` int64 (N,), the class names, and an
optional group per image (the slide or large image a patch came from, so that a split never puts one slide on
both sides).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medkit import UsageError


@dataclass
class ImageSet:
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    groups: np.ndarray | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.class_names = tuple(self.class_names)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"ImageSet images must be uint8 (N, H, W, 3); got {self.images.dtype} {self.images.shape}"
            )
        if len(self.labels) != len(self.images):
            raise ValueError(f"ImageSet has {len(self.images)} images but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(
                f"ImageSet labels must lie in 0..{len(self.class_names) - 1} for classes {self.class_names}"
            )
        if self.groups is not None:
            self.groups = np.asarray(self.groups).astype(str)
            if len(self.groups) != len(self.images):
                raise ValueError(f"ImageSet has {len(self.images)} images but {len(self.groups)} groups")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def counts(self) -> dict[str, int]:
        """Images per class, every class named (zero included)."""
        found = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, found, strict=True)}

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        indices = np.asarray(indices, dtype=np.int64)
        return ImageSet(
            self.images[indices],
            self.labels[indices],
            self.class_names,
            None if self.groups is None else self.groups[indices],
            self.source,
            list(self.notes),
        )

    def require_every_class(self, what: str) -> None:
        """Refuse a set in which a class has no image: a conditional GAN or a classifier cannot learn it."""
        empty = [name for name, n in self.counts().items() if n == 0]
        if empty:
            raise UsageError(
                f"{what}: class(es) {', '.join(empty)} have no images; give every class at least one image or "
                "drop the class"
            )

    @staticmethod
    def concatenate(parts: Sequence[ImageSet]) -> ImageSet:
        """Join sets with the same classes and image size (real + synthetic, as in the paper's BACH protocol)."""
        first = parts[0]
        for part in parts[1:]:
            if part.class_names != first.class_names:
                raise UsageError(f"cannot join sets with classes {first.class_names} and {part.class_names}")
            if part.images.shape[1:] != first.images.shape[1:]:
                raise UsageError(
                    f"cannot join sets of {first.images.shape[1:3]} and {part.images.shape[1:3]} images; "
                    "generate at the real images' resolution"
                )
        groups = None
        if all(p.groups is not None for p in parts):
            groups = np.concatenate([p.groups for p in parts])
        return ImageSet(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.labels for p in parts]),
            first.class_names,
            groups,
            " + ".join(p.source for p in parts if p.source),
        )


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights under which every class is drawn with the same probability (paper 001's sampler, used
    for both the GANs and the classifiers): 1 / (count of the sample's class), normalised to sum 1."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    return weights / weights.sum()


def to_tensor_range(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1], the range the GAN works in."""
    return (np.asarray(images, dtype=np.float32).transpose(0, 3, 1, 2) / 127.5) - 1.0


def from_tensor_range(images: np.ndarray) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3), rounded and clipped."""
    scaled = (np.asarray(images, dtype=np.float32) + 1.0) * 127.5
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
