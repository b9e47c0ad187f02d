"""Generated data sets on disk: class folders of PNGs (what any image tool opens) or one H5 file (what training
reads fastest), both written atomically, and read back as an :class:`ImageSet`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from medkit import UsageError
from medkit.atomic import atomic_path

from .folders import load_class_folders
from .imageset import ImageSet

H5_FORMAT = 1


def save_h5(images: ImageSet, path: Path, attributes: dict | None = None) -> Path:
    """``images`` (uint8, chunked one image per chunk, gzip), ``labels`` and the class names in one file."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        chunk = (1, *images.images.shape[1:])
        handle.create_dataset(
            "images", data=images.images, chunks=chunk if len(images) else None, compression="gzip"
        )
        handle.create_dataset("labels", data=images.labels)
        handle.attrs["class_names"] = json.dumps(list(images.class_names))
        handle.attrs["format"] = H5_FORMAT
        handle.attrs["source"] = images.source
        for key, value in (attributes or {}).items():
            handle.attrs[key] = json.dumps(value)
    return path


def load_h5(path: Path) -> ImageSet:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if handle.attrs.get("format", 0) > H5_FORMAT:
                raise UsageError(
                    f"{path} was written by a newer gan-aug (format {handle.attrs['format']}); upgrade"
                )
            names = tuple(json.loads(handle.attrs["class_names"]))
            return ImageSet(handle["images"][...], handle["labels"][...], names, source=str(path))
    except (OSError, KeyError) as err:
        raise UsageError(
            f"{path} is not a gan-aug images.h5 ({err}); give the output of `medkit run gan-aug generate`"
        ) from err


def save_png_folders(images: ImageSet, folder: Path) -> Path:
    """``folder/<class>/<class>-000001.png``, written under a temporary name and renamed at the end: a killed run
    leaves no half-written folder that could pass for a complete one."""
    from PIL import Image

    folder = Path(folder)
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for name in images.class_names:
        (partial / name).mkdir(parents=True)
    counters = dict.fromkeys(images.class_names, 0)
    for image, label in zip(images.images, images.labels, strict=True):
        name = images.class_names[label]
        counters[name] += 1
        Image.fromarray(image).save(partial / name / f"{name}-{counters[name]:06d}.png")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return folder


def load_generated(path: Path) -> ImageSet:
    """A `generate` output: an images.h5, or class folders of PNGs."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"synthetic={path}: no such file or folder; run `medkit run gan-aug generate` first")
    return load_h5(path) if path.is_file() else load_class_folders(path, None)
