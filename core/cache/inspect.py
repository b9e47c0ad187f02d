"""``medkit cache info`` and ``medkit cache verify``: what a cache holds, and whether every byte of it is sound."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .build import checksum, mask_area
from .store import SliceCache


def cache_info(path: Path) -> dict[str, Any]:
    """Summary: volumes, slices, shapes, classes, bytes, codec, preprocessing."""
    cache = SliceCache(path)
    classes: set[int] = set()
    for v in range(len(cache)):
        area = cache.mask_area(v)
        classes.update(np.flatnonzero(area.sum(axis=0) > 0).tolist())
    cache.close()
    shapes = Counter(f"{info.height}x{info.width}" for info in cache.volumes)
    return {
        "path": str(cache.path),
        "volumes": len(cache),
        "slices": sum(info.slices for info in cache.volumes),
        "slices_per_volume": {
            "min": min((i.slices for i in cache.volumes), default=0),
            "max": max((i.slices for i in cache.volumes), default=0),
        },
        "slice_shapes": dict(shapes),
        "with_masks": sum(info.has_mask for info in cache.volumes),
        "classes": sorted(classes),
        "bytes_on_disk": cache.path.stat().st_size,
        "bytes_decoded": sum(info.bytes for info in cache.volumes),
        "codec": cache.codec,
        "preprocessing": cache.preprocessing.to_json(),
    }


@dataclass
class VerifyReport:
    volumes_checked: int = 0
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_cache(path: Path) -> VerifyReport:
    """Read every chunk of every volume; check checksums, mask/image shapes and the stored class areas."""
    cache = SliceCache(path)
    report = VerifyReport()
    for v, info in enumerate(cache.volumes):
        report.volumes_checked += 1
        try:
            image, mask = cache.read_volume(v)
        except Exception as err:  # a damaged chunk raises from deep inside HDF5
            report.problems[info.id] = f"unreadable: {type(err).__name__}: {err}"
            continue
        if mask is not None and mask.shape != image.shape:
            report.problems[info.id] = f"mask shape {mask.shape} differs from image shape {image.shape}"
        elif checksum(image, mask) != info.sha256:
            report.problems[info.id] = "checksum mismatch: the stored data changed after it was written"
        elif mask is not None and not np.array_equal(mask_area(mask), cache.mask_area(v)):
            report.problems[info.id] = "stored per-slice class areas do not match the mask"
    cache.close()
    return report
