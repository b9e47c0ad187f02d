"""The generic loader: class folders of 2-D images (PNG, NumPy) with their lesion masks beside them.

Layout (``--data DATA``)::

    DATA/<class>/<image>.png            an image; its own patient
    DATA/<class>/<image>_mask.png       its mask (optional: without one the image trains the classifier only)
    DATA/<class>/<patient>/<image>.png  images of one patient (kept on one side of every split)
    DATA/unlabelled/...                 masks without a class (with data_options.semi_supervised)
    DATA/train/<class>/..., DATA/test/<class>/...   an explicit split instead of a random one

Classes are the folder names in sorted order. Masks hold 0 and 1 (0 and 255 with ``binarize``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medkit import UsageError

from .slices import NO_LABEL, Slices, resize_images, resize_masks

SUFFIXES = (".png", ".npy", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_SUFFIX = "_mask"
UNLABELLED = "unlabelled"
SPLITS = ("train", "test")


def read_image(path: Path) -> np.ndarray:
    """A 2-D float array; RGB images are converted to grey."""
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as image:
                array = np.asarray(image.convert("L") if image.mode not in ("L", "I", "I;16", "F") else image)
    except (OSError, ValueError) as err:
        raise UsageError(f"{path} cannot be read as an image ({err}); re-save it as PNG or .npy") from err
    array = np.squeeze(array)
    if array.ndim != 2:
        raise UsageError(f"{path}: expected a 2-D image, got shape {array.shape}")
    return array.astype(np.float32)


def _images(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and not p.stem.endswith(MASK_SUFFIX)
    )


def _mask_of(image: Path) -> Path | None:
    return next(
        (p for p in image.parent.glob(f"{image.stem}{MASK_SUFFIX}.*") if p.suffix.lower() in SUFFIXES), None
    )


def read_mask(path: Path, image_shape: tuple[int, ...], image_path: Path, binarize: bool) -> np.ndarray:
    mask = read_image(path)
    if mask.shape != image_shape:
        raise UsageError(
            f"{path}: mask size {mask.shape[::-1]} differs from image size {image_shape[::-1]} of {image_path.name}; "
            "a mask must be drawn on its own image, pixel for pixel - re-export it at the image's size"
        )
    values = np.unique(mask)
    if not binarize and not set(values.tolist()) <= {0.0, 1.0}:
        shown = ", ".join(f"{v:g}" for v in values[:6])
        raise UsageError(
            f"{path}: mask values {shown}{'...' if len(values) > 6 else ''} are not 0/1; pass "
            "--set data_options.binarize=true to count every non-zero pixel as lesion (e.g. 0/255 PNG masks)"
        )
    return (mask > 0).astype(np.uint8)


def _patient(image: Path, class_folder: Path, explicit_split: bool) -> str:
    """The patient folder's name (or the image's own name). Without explicit splits it is prefixed by the class,
    so that ``001.png`` in two class folders are two patients; with them it is not, so that one patient under
    train/ and test/ is caught whatever class each copy claims."""
    relative = image.relative_to(class_folder)
    owner = relative.parts[0] if len(relative.parts) > 1 else image.stem
    return owner if explicit_split else f"{class_folder.name}/{owner}"


def load_folder(data: Path, size: int, options: Any) -> Slices:
    data = Path(data)
    roots = [(data / s, s) for s in SPLITS] if all((data / s).is_dir() for s in SPLITS) else [(data, "")]
    class_names = sorted(
        {p.name for root, _ in roots for p in root.iterdir() if p.is_dir() and p.name != UNLABELLED}
    )
    if len(class_names) < 2:
        raise UsageError(
            f"--data {data}: found class folders {class_names}; give one folder per class (at least 2) holding "
            "images with *_mask files beside them, or a BraTS folder"
        )
    images, masks, has_mask, labels, patients, splits = [], [], [], [], [], []
    for root, split in roots:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if folder.name == UNLABELLED and not options.semi_supervised:
                raise UsageError(
                    f"{folder}: images without a class; pass --set data_options.semi_supervised=true to train "
                    "the decoder on them, or move them into a class folder"
                )
            if folder.name != UNLABELLED and folder.name not in class_names:
                raise UsageError(f"{folder}: class {folder.name!r} is not in every split ({class_names})")
            label = NO_LABEL if folder.name == UNLABELLED else class_names.index(folder.name)
            for path in _images(folder):
                image = read_image(path)
                mask_path = _mask_of(path)
                if mask_path is None and label == NO_LABEL:
                    raise UsageError(
                        f"{path}: an unlabelled image needs a mask ({path.stem}{MASK_SUFFIX}.png)"
                    )
                mask = (
                    read_mask(mask_path, image.shape, path, options.binarize)
                    if mask_path
                    else np.zeros(image.shape, np.uint8)
                )
                low, high = float(image.min()), float(image.max())
                images.append(
                    resize_images(((image - low) / (high - low if high > low else 1.0))[None], size)
                )
                masks.append(resize_masks(mask[None], size))
                has_mask.append(mask_path is not None)
                labels.append(label)
                patients.append(_patient(path, folder, bool(split)))
                splits.append(split)
    if not images:
        raise UsageError(f"--data {data}: no images ({', '.join(SUFFIXES)}) in the class folders")
    return Slices(
        images=np.concatenate(images),
        masks=np.concatenate(masks),
        has_mask=np.array(has_mask),
        labels=np.array(labels, dtype=np.int64),
        patients=np.array(patients, dtype=object),
        splits=np.array(splits, dtype=object),
        class_names=tuple(class_names),
    )
