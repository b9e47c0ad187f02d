"""Which slices of a cache a plugin trains on: all, those with a label, the N with the largest mask area per
volume (ubc takes 5), and 2.5D stacks of neighbouring slices. Selections read the per-slice class areas the
build stored, never the masks themselves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..interfaces import Dataset
from .store import SliceCache, make_sample

Selection = dict[int, list[int]]
"""Volume index -> the slice indices chosen in it (the form the samplers and datasets take)."""


def label_area(cache: SliceCache, volume: int, labels: Sequence[int] | None = None) -> np.ndarray:
    """Pixels of ``labels`` (default: every foreground class) in each slice of ``volume``, from stored areas."""
    area = cache.mask_area(volume)
    columns = [c for c in (labels or range(1, area.shape[1])) if c < area.shape[1]]
    return area[:, columns].sum(axis=1) if columns else np.zeros(area.shape[0], dtype=np.int64)


def all_slices(cache: SliceCache) -> Selection:
    return {v: list(range(info.slices)) for v, info in enumerate(cache.volumes)}


def labelled_slices(cache: SliceCache, labels: Sequence[int] | None = None) -> Selection:
    """Slices containing any of ``labels`` (default: any foreground class)."""
    return {v: np.flatnonzero(label_area(cache, v, labels) > 0).tolist() for v in range(len(cache))}


def largest_mask_slices(cache: SliceCache, n: int, labels: Sequence[int] | None = None) -> Selection:
    """The ``n`` slices of each volume with the largest area of ``labels`` (default: all foreground), largest
    first; slices without any of it are never chosen."""
    chosen = {}
    for v in range(len(cache)):
        total = label_area(cache, v, labels)
        chosen[v] = [int(s) for s in np.argsort(-total, kind="stable")[:n] if total[s] > 0]
    return chosen


class CachedSlices(Dataset):
    """A map-style dataset of selected slices, optionally as 2.5D stacks of ``context`` neighbours each side.

    With ``context=k`` the image has 2k+1 channels: slices s-k..s+k, clamped at the volume's ends; the mask is
    the centre slice's.
    """

    task = "segmentation"

    def __init__(
        self,
        cache: SliceCache,
        selection: Selection,
        context: int = 0,
        class_names: Sequence[str] = (),
        transform: Callable[[dict[str, Any], np.random.Generator], dict[str, Any]] | None = None,
    ) -> None:
        self.cache, self.context, self.transform = cache, context, transform
        self.keys = [(v, s) for v in sorted(selection) for s in selection[v]]
        self.in_channels = 2 * context + 1
        self.class_names = tuple(class_names)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict[str, Any]:
        volume, centre = self.keys[index]
        last = self.cache.volumes[volume].slices - 1
        neighbours = [min(max(centre + d, 0), last) for d in range(-self.context, self.context + 1)]
        images, masks = self.cache.read_slices(volume, neighbours)
        sample = make_sample(
            self.cache, volume, centre, images[self.context], None if masks is None else masks[self.context]
        )
        if self.context:
            import torch

            sample["image"] = torch.from_numpy(self.cache.preprocessing.apply(images))
        if self.transform is not None:  # seeded by the index: the same sample every time it is read
            sample = self.transform(sample, np.random.default_rng(index))
        return sample

    def groups(self) -> list[str]:
        return [self.cache.volumes[v].id for v, _ in self.keys]
