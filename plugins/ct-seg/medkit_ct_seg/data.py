"""Where ct-seg's slices come from: the embedded phantoms, a slice cache, or a folder of volumes and masks.

Everything is read through the core H5 slice cache; a folder is converted into a cache once (kept in the user
cache folder, keyed by the folder's path) so that later runs start at once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medkit import UsageError
from medkit.cache.build import build_cache
from medkit.cache.pairing import Pair, find_pairs
from medkit.cache.store import Preprocessing, SliceCache
from medkit.user_cache import build_once, cache_folder

from .phantoms import phantom

CLASS_NAMES = ("background", "right_lung", "left_lung", "airway")
LUNA16_LABELS = {3: 1, 4: 2, 5: 3}  # seg-lungs-LUNA16: 3, 4 the lungs, 5 the trachea (spec, Task)
LUNA16_MASKS = "seg-lungs-LUNA16"


def cache_root() -> Path:
    return cache_folder("ct-seg")


def phantom_cache(volumes: int, slices: int, size: int, seed: int = 0) -> Path:
    """The embedded phantoms as a slice cache (generated once, about a second per phantom)."""
    target = cache_root() / f"phantoms-v2-{volumes}x{slices}x{size}-seed{seed}.h5"

    def build(path: Path) -> None:
        with tempfile.TemporaryDirectory() as folder:
            pairs = []
            for i in range(volumes):
                image, mask = phantom(slices, size, seed=seed * 100_003 + i)
                file = Path(folder) / f"phantom{i:03d}.npz"
                np.savez(file, image=image, mask=mask, spacing=np.array([2.5, 0.7, 0.7]))
                pairs.append(Pair(f"phantom{i:03d}", file, file))
            build_cache(pairs, path, workers=1)

    return build_once(target, build)


def folder_cache(folder: Path) -> tuple[Path, dict[int, int]]:
    """A folder of volumes as a slice cache, and the label map its layout implies (LUNA16 or ``*_seg``)."""
    folder = Path(folder).resolve()
    luna = next((p for p in (folder / LUNA16_MASKS, folder.parent / LUNA16_MASKS) if p.is_dir()), None)
    key = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    target = cache_root() / f"data-{folder.name}-{key}.h5"

    def build(path: Path) -> None:
        rule = {"mask_dir": luna} if luna else {"mask_suffix": "_seg"}
        build_cache(find_pairs([folder], **rule), path, workers=min(4, os.cpu_count() or 1))

    return build_once(target, build), (LUNA16_LABELS if luna else {})


def open_cache(data: Path | None, config: Any) -> tuple[SliceCache, dict[int, int]]:
    """The slice cache a run trains on, with the run's intensity preprocessing, and its label map."""
    label_map = dict(config.label_map)
    if data is None:
        path = phantom_cache(config.phantoms.volumes, config.phantoms.slices, config.image_size)
    elif Path(data).is_file():
        path = Path(data)
    else:
        path, implied = folder_cache(Path(data))
        label_map = label_map or implied
    cache = SliceCache(path)
    cache.preprocessing = (
        Preprocessing("minmax") if config.intensity == "minmax" else Preprocessing("window", *config.window)
    )
    check_labels(cache, label_map, len(CLASS_NAMES))
    return cache, label_map


def check_labels(cache: SliceCache, label_map: dict[int, int], num_classes: int) -> None:
    """Every volume needs a mask, and every mask value must be a class or be mapped to one."""
    unlabelled = [info.id for info in cache.volumes if not info.has_mask]
    if unlabelled:
        raise UsageError(
            f"{cache.path}: {len(unlabelled)} volume(s) have no mask (e.g. {unlabelled[0]}); training needs a mask "
            "for every volume - pair them when building the cache (--mask-suffix, --mask-dir or --manifest)"
        )
    present = set()
    for v in range(len(cache)):
        present.update(np.flatnonzero(cache.mask_area(v).sum(axis=0) > 0).tolist())
    allowed = set(label_map) if label_map else set(range(num_classes))
    unexpected = sorted(present - allowed - {0})
    if unexpected:
        raise UsageError(
            f"{cache.path}: masks hold values {unexpected} that are not classes 0..{num_classes - 1}; map them with "
            f"--set 'label_map={{{', '.join(f'{v}: 1' for v in unexpected)}}}' (LUNA16: {{3: 1, 4: 2, 5: 3}})"
        )


def split_volumes(cache: SliceCache, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Whole volumes (patients) go to one side: never slices of one patient in both."""
    if len(cache) < 2:
        raise UsageError(
            f"{cache.path} holds {len(cache)} volume(s); training and validation need at least 2"
        )
    order = np.random.default_rng(seed).permutation(len(cache))
    n_val = min(len(cache) - 1, max(1, round(len(cache) * val_fraction)))
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
