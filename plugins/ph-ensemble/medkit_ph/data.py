"""Where the CT slices come from: the public data set's flat layout, class-per-folder layouts, or the embedded
procedural slices (generated once into the user cache, in the public layout).

- flat (the public copy of the paper's data, spec "Data"): one folder of ``"<c> (<n>).png"``, label ``c - 1``
- folders: one sub-folder per class (``no_ph/``, ``mild/``...), labels in sorted folder order

Images of any size and of the modes grayscale, RGB (kept as RGB unless its channels are equal), 16-bit and
float (min-max scaled per image to 8 bits) are accepted; the run says when sizes or modes are mixed, since
every pipeline resizes anyway.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from medkit import UsageError
from medkit.user_cache import build_once, cache_folder

from .phantoms import class_counts, ct_slice

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PUBLIC_NAME = re.compile(r"^(\d+) \((\d+)\)$")
GRADE_NAMES = ("no PH", "mPAP 20-25", "mPAP 25-30", "mPAP > 30")
Layout = Literal["auto", "flat", "folders"]


@dataclass
class ImageSet:
    """Decoded images (uint8, (H, W) or (H, W, 3)), their labels, and what was noticed while reading them."""

    images: list[np.ndarray]
    labels: np.ndarray
    names: list[str]
    class_names: list[str]
    source: str
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hashes = [image_hash(image) for image in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.class_names)).tolist()


def image_hash(image: np.ndarray) -> str:
    """sha256 of the decoded pixels and their shape: the feature cache's key for an image."""
    return hashlib.sha256(str(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """One image as uint8 (H, W) or (H, W, 3), and its PIL mode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                array = np.asarray(img, dtype=np.float64)
                low, span = array.min(), np.ptp(array)
                scaled = (array - low) / span if span > 0 else np.zeros_like(array)
                return (scaled * 255).round().astype(np.uint8), mode
            if mode in ("L", "1", "LA"):
                return np.asarray(img.convert("L")), mode
            rgb = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise UsageError(f"--data: {path} cannot be read as an image ({err})") from err
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return np.ascontiguousarray(rgb[..., 0]), mode
    return rgb, mode


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _flat(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    files = _image_files(folder)
    if not files:
        raise UsageError(f"--data {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or in sub-folders")
    wrong = [p.name for p in files if not PUBLIC_NAME.match(p.stem)]
    if wrong:
        shown = ", ".join(repr(n) for n in wrong[:5]) + (
            f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
        )
        raise UsageError(
            f"--data {folder}: {len(wrong)} file name(s) do not match the public layout '<c> (<n>).png' "
            f"(label c - 1): {shown}. Rename them, or put each class in its own sub-folder."
        )
    classes = [int(PUBLIC_NAME.match(p.stem).group(1)) for p in files]  # type: ignore[union-attr]
    if min(classes) < 1:
        raise UsageError(f"--data {folder}: class numbers start at 1 ('<c> (<n>).png', label c - 1)")
    absent = sorted(set(range(1, max(classes) + 1)) - set(classes))
    if absent:
        raise UsageError(
            f"--data {folder}: no images of class(es) {', '.join(map(str, absent))} (files '<c> (<n>).png' "
            f"with c = 1..{max(classes)}); every class needs images"
        )
    names = list(GRADE_NAMES) if max(classes) == 4 else [f"class {c}" for c in range(1, max(classes) + 1)]
    return files, [c - 1 for c in classes], names


def _folders(folder: Path) -> tuple[list[Path], list[int], list[str]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and _image_files(p))
    if len(classes) < 2:
        raise UsageError(
            f"--data {folder}: a class-per-folder layout needs at least two sub-folders of images"
        )
    files, labels = [], []
    for label, sub in enumerate(classes):
        for path in _image_files(sub):
            files.append(path)
            labels.append(label)
    return files, labels, [p.name for p in classes]


def load_folder(folder: Path, layout: Layout = "auto") -> ImageSet:
    """Every image under ``folder`` in the flat public layout or one sub-folder per class."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--data {folder} is not a folder of images")
    if layout == "auto":
        layout = "folders" if any(p.is_dir() and _image_files(p) for p in folder.iterdir()) else "flat"
    files, labels, class_names = _folders(folder) if layout == "folders" else _flat(folder)
    images, modes = [], []
    for path in files:
        image, mode = read_image(path)
        images.append(image)
        modes.append(mode)
    data = ImageSet(
        images, np.array(labels, dtype=np.int64), [p.name for p in files], class_names, str(folder)
    )
    data.notes += mixed_input_notes(images, modes)
    return data


def mixed_input_notes(images: list[np.ndarray], modes: list[str]) -> list[str]:
    notes = []
    sizes = Counter(f"{im.shape[1]}x{im.shape[0]}" for im in images)
    if len(sizes) > 1:
        notes.append(
            f"images come in {len(sizes)} sizes ({', '.join(f'{s}: {n}' for s, n in sizes.most_common(5))}); "
            "each pipeline resizes them to its network's input"
        )
    mode_counts = Counter(modes)
    if len(mode_counts) > 1:
        notes.append(
            f"images come in {len(mode_counts)} modes ({', '.join(f'{m}: {n}' for m, n in mode_counts.items())}); "
            "16-bit and float images are min-max scaled to 8 bits per image, RGB with equal channels is read as "
            "grayscale"
        )
    return notes


def check_folds(data: ImageSet, folds: int, what: str = "folds") -> None:
    """Stratified k-fold needs every class to have at least k members."""
    small = [(data.class_names[c], n) for c, n in enumerate(data.counts()) if n < folds]
    if small:
        listed = ", ".join(f"{name!r} has {n}" for name, n in small)
        raise UsageError(
            f"{what}={folds}: stratified {folds}-fold cross-validation needs at least {folds} images per class, "
            f"but {listed}; add images or lower --set {what}"
        )


def phantom_folder(count: int, size: int, seed: int) -> Path:
    """The embedded default data in the public layout, generated once into the user cache."""
    target = cache_folder("ph-ensemble", f"phantoms-v1-{count}x{size}-seed{seed}")

    def build(folder: Path) -> None:
        from PIL import Image

        folder.mkdir(parents=True)
        rng = np.random.default_rng(seed)
        meta = {}
        for grade, n in enumerate(class_counts(count)):
            for i in range(1, n + 1):
                image, ratio = ct_slice(grade, size, rng)
                name = f"{grade + 1} ({i}).png"
                Image.fromarray(image).save(folder / name)
                meta[name] = {"grade": grade, "pa_aa_ratio": round(ratio, 4)}
        (folder / "phantoms.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

    return build_once(target, build)


def load_data(data: Path | None, count: int, size: int, seed: int, layout: Layout = "auto") -> ImageSet:
    """``--data`` when given, else the embedded procedural slices."""
    if data is not None:
        return load_folder(Path(data), layout)
    loaded = load_folder(phantom_folder(count, size, seed), "flat")
    loaded.source = f"embedded procedural slices ({count} at {size} px, seed {seed})"
    return loaded
