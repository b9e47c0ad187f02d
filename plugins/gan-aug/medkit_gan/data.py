"""The real images of a recipe: the embedded synthetic histology, or --data in one of the layouts, split into a
training set (what the GAN and the classifiers learn from) and a validation set (what the classifiers are scored
on), never putting one slide or source image on both sides."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medkit import UsageError

from .config import DataConfig
from .folders import load_dataset
from .imageset import ImageSet
from .synthetic import embedded_split


def split_by_group(images: ImageSet, val_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """About ``val_fraction`` of every class's groups (slides, source images) held out; a group is never on both
    sides (paper 001 splits PATH-DT-MSU by slide and BACH by image). A slide that shows several classes counts
    for each of them, so the rarest classes choose first and the common ones add only what they still lack."""
    if not 0 < val_fraction < 1:
        raise UsageError(f"data_options.val_fraction={val_fraction}: give a share between 0 and 1")
    groups = images.groups if images.groups is not None else np.arange(len(images)).astype(str)
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for c in np.argsort(np.bincount(images.labels, minlength=len(images.class_names)), kind="stable"):
        own = np.unique(groups[images.labels == c])
        wanted = min(len(own) - 1, max(1, round(val_fraction * len(own))))
        free = [g for g in rng.permutation(own) if g not in held]
        held.update(free[: max(0, wanted - sum(g in held for g in own))])
    in_val = np.isin(groups, sorted(held))
    for c, name in enumerate(images.class_names):
        sides = [bool(((images.labels == c) & side).any()) for side in (~in_val, in_val)]
        if not all(sides):
            where = "training" if not sides[0] else "validation"
            raise UsageError(
                f"class {name!r} has no images in the {where} split: its {len(np.unique(groups[images.labels == c]))} "
                "source image(s)/slide(s) cannot be shared out; add images of that class or give a layout with its "
                "own validation split (path_dt_msu: FOLDER/train and FOLDER/val)"
            )
    return images.subset(np.flatnonzero(~in_val)), images.subset(np.flatnonzero(in_val))


def load_real(
    options: DataConfig, data: Path | None, resolution: int, seed: int
) -> tuple[ImageSet, ImageSet]:
    """(train, val) at the GAN's resolution."""
    if data is None:
        # the embedded set does not follow --seed: runs with other seeds train on the same images
        return embedded_split(resolution=resolution, seed=options.embedded_seed, scale=options.scale)
    kwargs = {
        "layout": options.layout,
        "resolution": resolution,
        "patch_size": options.patch_size,
        "overlap": options.overlap,
    }
    if (Path(data) / "val").is_dir() and (Path(data) / "train").is_dir():
        return load_dataset(Path(data), split="train", **kwargs), load_dataset(
            Path(data), split="val", **kwargs
        )
    return split_by_group(load_dataset(Path(data), **kwargs), options.val_fraction, seed)
