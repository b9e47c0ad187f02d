"""Where ct-seg's slices come from: the embedded phantoms, a slice cache, or a folder of volumes and masks.

Everything is read through the core H5 slice cache; a folder is converted into a cache once (kept in the user
cache folder, keyed by the volumes found in it) so that later runs start at once. The folder's layout (LUNA16,
images/ + masks/, nnU-Net, ``<name>_seg`` masks, DICOM series) is recognised by the core's ``find_layout``.
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
from medkit.cache.pairing import (
    LAYOUTS,
    LUNA16,
    VOLUMES,
    Layout,
    Pair,
    find_layout,
    layouts_text,
)
from medkit.cache.store import Preprocessing, SliceCache
from medkit.user_cache import build_once, cache_folder

from .phantoms import phantom

CLASS_NAMES = ("background", "left_lung", "right_lung", "airway")  # the report's order, section 5
# seg-lungs-LUNA16: 3 left lung, 4 right lung, 5 trachea (ct-seg README, "Class order")
LUNA16_LABELS = {3: 1, 4: 2, 5: 3}


def cache_root() -> Path:
    return cache_folder("ct-seg")


def phantom_cache(volumes: int, slices: int, size: int, seed: int = 0) -> Path:
    """The embedded phantoms as a slice cache (generated once, about a second per phantom)."""
    target = cache_root() / f"phantoms-v3-{volumes}x{slices}x{size}-seed{seed}.h5"

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


def implied_labels(layout: Layout) -> dict[int, int]:
    """LUNA16's masks hold 3, 4, 5 for the classes 1, 2, 3; the other layouts hold the classes themselves."""
    return dict(LUNA16_LABELS) if layout.name == LUNA16 else {}


def folder_cache(folder: Path) -> tuple[Path, dict[int, int]]:
    """A folder in any accepted layout as a slice cache, and the label map its layout implies."""
    layout = find_layout(Path(folder).resolve())
    return layout_cache(Path(folder), layout), implied_labels(layout)


def layout_cache(folder: Path, layout: Layout) -> Path:
    """``layout``'s volumes converted into a cache once. The key covers every pair, so added, removed or
    re-paired volumes give a new cache instead of a stale one."""
    folder = Path(folder).resolve()
    listing = "\n".join(f"{pair.id}\t{pair.image}\t{pair.mask or ''}" for pair in layout.pairs)
    key = hashlib.sha256(f"{folder}\n{layout.name}\n{listing}".encode()).hexdigest()[:16]
    target = cache_root() / f"data-{folder.name}-{key}.h5"

    def build(path: Path) -> None:
        build_cache(layout.pairs, path, workers=min(4, os.cpu_count() or 1))

    return build_once(target, build)


def require_masks(folder: Path, layout: Layout) -> None:
    """Training needs a mask for every volume: say so before converting a folder, not after."""
    unlabelled = [pair.id for pair in layout.pairs if pair.mask is None]
    if not unlabelled:
        return
    with_masks = [name for name in LAYOUTS if name != VOLUMES]
    raise UsageError(
        f"{folder}: {len(unlabelled)} of {len(layout.pairs)} volume(s) have no mask (e.g. {unlabelled[0]}); "
        "training needs a mask for every volume. Volumes without masks, DICOM series among them, can be "
        f"segmented with `medkit run ct-seg predict --data {folder}`. To train, lay the data out as one of:\n"
        + layouts_text(with_masks)
    )


def open_cache(data: Path | None, config: Any) -> tuple[SliceCache, dict[int, int]]:
    """The slice cache a run trains on, with the run's intensity preprocessing, and its label map."""
    label_map = dict(config.label_map)
    if data is None:
        path = phantom_cache(config.phantoms.volumes, config.phantoms.slices, config.image_size)
    elif Path(data).is_file():
        path = Path(data)
    else:
        layout = find_layout(Path(data).resolve())
        require_masks(Path(data), layout)
        path = layout_cache(Path(data), layout)
        label_map = label_map or implied_labels(layout)
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
