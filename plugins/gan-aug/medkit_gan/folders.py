"""Histology image folders -> ImageSet: any class-per-folder set, NCT-CRC-HE-100K, BACH and PATH-DT-MSU-like
layouts, whole images or patches, and a medkit Dataset view of an ImageSet.

Layouts (``--data ROOT``)::

    class_folders  ROOT/<class>/*.{png,jpg,jpeg,tif,tiff,bmp}     classes in sorted order
                   ROOT/<class>/<slide>/*.png                     images of one slide or patient (one group)
    nct_crc        ROOT/{ADI,BACK,DEB,LYM,MUC,MUS,NORM,STR,TUM}/*.tif   NCT-CRC-HE-100K: 224 px tiles
    bach           ROOT[/Photos]/{Normal,Benign,InSitu,Invasive}/*.tif  BACH: 2048 x 1536 photographs, cut into
                                                                  512 px patches with overlap 256 by default
    path_dt_msu    ROOT/{train,val}/<class>/*.png                 PATH-DT-MSU-like: one PNG per annotated region
                                                                  (or ROOT/<split>/<class>/<slide>/*.png), cut
                                                                  into 224 px patches with overlap 112

``auto`` picks, in this order: ``path_dt_msu`` when ROOT holds a ``train`` folder; ``bach`` when ROOT (or
ROOT/Photos) holds BACH's four class folders; ``nct_crc`` when ROOT's folders are exactly NCT's nine classes;
otherwise ``class_folders``.

Every image becomes RGB uint8: grey images are repeated over three channels, transparency is composited on
white (the colour of an empty slide), 16-bit and float images are scaled to 8 bits; each conversion is counted
in the set's notes. A sample's group is the slide folder it lies in, or else its own image, so that a split
never puts patches of one image on both sides.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medkit import UsageError
from medkit.interfaces import Dataset

from .imageset import ImageSet
from .patches import PATCH_PRESETS, extract_patches, resize_images

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
NCT_CLASSES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
BACH_CLASSES = ("Normal", "Benign", "InSitu", "Invasive")  # the clinical order, kept as the label order
SPLITS = ("train", "val")
LAYOUTS = ("auto", "class_folders", "nct_crc", "bach", "path_dt_msu")
CLASS_FOLDER_LAYOUT = "ROOT/<class>/*.png (one folder per class, at least one image each)"


def read_rgb(path: Path) -> tuple[np.ndarray, str]:
    """An image as uint8 (H, W, 3) and what was converted to get there ("" when it already was 8-bit RGB)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError) as err:
        raise UsageError(f"{path} cannot be read as an image ({err}); re-save it as PNG or TIFF") from err
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image), ""
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[..., 3:] / 255.0
        return np.rint(rgba[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8), "transparency on white"
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        # 16-bit images span 0..65535, float images 0..1; 32-bit integers holding 8-bit values stay as they are
        top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
        top = 1.0 if mode == "F" and values.max() <= 1.0 else top
        grey = np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
        kind = "16-bit" if mode.startswith("I;16") else {"I": "32-bit integer", "F": "float"}.get(mode, mode)
        return np.repeat(grey[..., None], 3, axis=-1), f"{kind} grey to 8-bit RGB"
    if mode in ("L", "1"):
        return np.asarray(image.convert("RGB")), "grey to RGB"
    return np.asarray(image.convert("RGB")), f"{mode} to RGB"


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _group(path: Path, class_folder: Path) -> str:
    """The slide folder an image lies in (shared across classes: one slide shows several tissues), or the
    image itself."""
    relative = path.relative_to(class_folder)
    return relative.parts[0] if len(relative.parts) > 1 else f"{class_folder.name}/{path.stem}"


def _square(image: np.ndarray) -> np.ndarray:
    """The centred square crop: resizing a rectangle to a square would stretch the tissue."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def _require_root(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"--data {root}: no such folder; give a folder laid out as {CLASS_FOLDER_LAYOUT}")
    return root


def load_class_folders(
    root: Path,
    resolution: int | None,
    patch_size: int | None = None,
    overlap: int = 0,
    max_per_class: int | None = None,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    skip_small: bool = False,
) -> ImageSet:
    """``root/<class>/*`` -> ImageSet, classes sorted by name (or ``classes``, in that order).

    With ``patch_size`` every image is cut into patches (:func:`extract_patches`) that keep the image's label,
    then resized to ``resolution`` when given; ``skip_small`` leaves out images smaller than a patch instead of
    refusing them. Without it each image is one sample, centre-cropped to a square and resized to
    ``resolution``; without a resolution all images must share one size. ``max_per_class`` keeps that many
    samples per class at most, drawn with ``seed``."""
    root = _require_root(root)
    class_names = list(classes) if classes is not None else [p.name for p in _visible_dirs(root)]
    if not class_names:
        raise UsageError(f"--data {root}: no class folders; lay the images out as {CLASS_FOLDER_LAYOUT}")
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    converted: Counter[str] = Counter()
    skipped: list[str] = []
    notes: list[str] = []
    cropped = 0
    for label, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            raise UsageError(f"{folder}: class folder {name!r} is missing; expected classes {class_names}")
        files = _image_files(folder)
        if not files:
            raise UsageError(
                f"{folder}: class folder with no images ({', '.join(SUFFIXES)}); add its images or remove the "
                "folder"
            )
        if max_per_class is not None and patch_size is None and len(files) > max_per_class:
            notes.append(f"{name}: kept {max_per_class} of {len(files)} images (max_per_class)")
            files = [files[i] for i in sorted(rng.choice(len(files), max_per_class, replace=False))]
        class_images: list[np.ndarray] = []
        class_groups: list[str] = []
        for path in files:
            image, conversion = read_rgb(path)
            converted[conversion] += 1
            if patch_size is not None:
                if skip_small and min(image.shape[:2]) < patch_size:
                    skipped.append(str(path))
                    continue
                samples = extract_patches(image, patch_size, overlap, source=str(path))
            else:
                if resolution is not None and image.shape[0] != image.shape[1]:
                    image, cropped = _square(image), cropped + 1
                samples = image[None]
            if resolution is not None:
                samples = resize_images(samples, resolution)
            class_images.extend(samples)
            class_groups.extend([_group(path, folder)] * len(samples))
        if not class_images:
            raise UsageError(
                f"{folder}: every image is smaller than the {patch_size} px patch; pass a smaller patch_size"
            )
        keep = np.arange(len(class_images))
        if max_per_class is not None and patch_size is not None and len(keep) > max_per_class:
            notes.append(f"{name}: kept {max_per_class} of {len(keep)} patches (max_per_class)")
            keep = np.sort(rng.choice(len(keep), max_per_class, replace=False))
        images.extend(class_images[i] for i in keep)
        groups.append(np.asarray(class_groups)[keep])
        labels.append(np.full(len(keep), label, dtype=np.int64))
    shapes = Counter(image.shape for image in images)
    if len(shapes) > 1:
        (common, _), (other, _) = shapes.most_common(2)
        raise UsageError(
            f"--data {root}: images have different sizes ({common[1]} x {common[0]} and {other[1]} x {other[0]} "
            "px, among others); pass a resolution to resize them all, or a patch_size to cut patches"
        )
    notes.extend(f"{n} image(s) converted: {kind}" for kind, n in sorted(converted.items()) if kind)
    if cropped:
        notes.append(f"{cropped} non-square image(s) centre-cropped to squares before resizing")
    if skipped:
        shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        notes.append(f"skipped {len(skipped)} image(s) smaller than the {patch_size} px patch: {shown}")
    return ImageSet(
        np.stack(images),
        np.concatenate(labels),
        tuple(class_names),
        np.concatenate(groups),
        source=str(root),
        notes=notes,
    )


def load_nct_crc(
    root: Path, resolution: int | None, max_per_class: int | None = None, seed: int = 0
) -> ImageSet:
    """NCT-CRC-HE-100K (or CRC-VAL-HE-7K): nine class folders of 224 px TIFF tiles, one sample per tile."""
    root = _require_root(root)
    found = [p.name for p in _visible_dirs(root)]
    images = load_class_folders(root, resolution, max_per_class=max_per_class, seed=seed)
    if set(found) != set(NCT_CLASSES):
        missing, extra = sorted(set(NCT_CLASSES) - set(found)), sorted(set(found) - set(NCT_CLASSES))
        images.notes.append(
            f"class folders differ from NCT-CRC-HE-100K's {', '.join(NCT_CLASSES)}: missing {missing}, extra {extra}"
        )
    return images


def _bach_root(root: Path) -> Path:
    photos = root / "Photos"  # the layout of the ICIAR 2018 BACH download
    return photos if photos.is_dir() else root


def load_bach(
    root: Path,
    resolution: int | None,
    patch_size: int = PATCH_PRESETS["bach"][0],
    overlap: int = PATCH_PRESETS["bach"][1],
    max_per_class: int | None = None,
    seed: int = 0,
    skip_small: bool = False,
) -> ImageSet:
    """BACH: Normal, Benign, InSitu, Invasive folders of 2048 x 1536 TIFFs, cut into patches; every patch
    takes its image's label (BACH labels whole images) and its image as group."""
    root = _bach_root(_require_root(root))
    found = {p.name for p in _visible_dirs(root)}
    missing = [name for name in BACH_CLASSES if name not in found]
    if missing:
        raise UsageError(
            f"--data {root}: BACH class folder(s) {', '.join(missing)} missing; BACH holds "
            f"{', '.join(BACH_CLASSES)} (under Photos/ in the original download)"
        )
    images = load_class_folders(
        root, resolution, patch_size, overlap, max_per_class, seed, BACH_CLASSES, skip_small
    )
    if found - set(BACH_CLASSES):
        images.notes.append(f"ignored folders that are not BACH classes: {sorted(found - set(BACH_CLASSES))}")
    return images


def load_path_dt_msu(
    root: Path,
    resolution: int | None,
    patch_size: int = PATCH_PRESETS["path_dt_msu"][0],
    overlap: int = PATCH_PRESETS["path_dt_msu"][1],
    split: str | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
    skip_small: bool = False,
) -> dict[str, ImageSet] | ImageSet:
    """A PATH-DT-MSU-like layout: ``root/<split>/<class>/*.png``, split ``train`` and ``val`` (the slides of
    each side kept apart, as in the paper's 5 + 5 whole-slide images per set), one PNG per annotated tissue
    region exported from a slide, optionally ``root/<split>/<class>/<slide>/*.png`` to keep the slide as group.
    Regions are cut into patches (224 px, overlap 112 by default). Both splits use the training split's class
    folders, in sorted order. Returns ``{"train": ..., "val": ...}``, or the one ``split`` asked for."""
    root = _require_root(root)
    if split is not None and split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not (root / "train").is_dir():
        raise UsageError(
            f"--data {root}: no train/ folder; a PATH-DT-MSU-like set is ROOT/{{train,val}}/<class>/*.png"
        )
    classes = [p.name for p in _visible_dirs(root / "train")]
    wanted = SPLITS if split is None else (split,)
    sets = {}
    for name in wanted:
        if not (root / name).is_dir():
            raise UsageError(
                f"--data {root}: no {name}/ folder; a PATH-DT-MSU-like set is ROOT/{{train,val}}/<class>/*.png"
            )
        extra = sorted({p.name for p in _visible_dirs(root / name)} - set(classes))
        if extra:
            raise UsageError(f"{root / name}: class folder(s) {extra} are not in train/ ({classes})")
        sets[name] = load_class_folders(
            root / name, resolution, patch_size, overlap, max_per_class, seed, classes, skip_small
        )
    return sets if split is None else sets[split]


def detect_layout(root: Path) -> str:
    """The layout of ``root``, by folder names (see the module docstring for the order of the checks)."""
    root = _require_root(root)
    names = {p.name for p in _visible_dirs(root)}
    if "train" in names:
        return "path_dt_msu"
    if set(BACH_CLASSES) <= {p.name for p in _visible_dirs(_bach_root(root))}:
        return "bach"
    if names == set(NCT_CLASSES):
        return "nct_crc"
    if names:
        return "class_folders"
    raise UsageError(
        f"--data {root}: no class folders; lay the images out as {CLASS_FOLDER_LAYOUT}, or as BACH, "
        "NCT-CRC-HE-100K or PATH-DT-MSU (ROOT/{train,val}/<class>/*.png)"
    )


def load_dataset(
    root: Path,
    layout: str = "auto",
    resolution: int = 64,
    patch_size: int | None = None,
    overlap: int | None = None,
    split: str = "train",
    max_per_class: int | None = None,
    seed: int = 0,
    skip_small: bool = False,
) -> ImageSet:
    """Any supported layout -> ImageSet at ``resolution``. ``patch_size``/``overlap`` default to the paper's
    for BACH (512/256) and PATH-DT-MSU (224/112) and to whole images otherwise; ``split`` chooses train or
    val of a PATH-DT-MSU-like set (the other layouts have no split: split them by group)."""
    if layout not in LAYOUTS:
        raise UsageError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    chosen = detect_layout(root) if layout == "auto" else layout
    if split != "train" and chosen != "path_dt_msu":
        raise UsageError(
            f"--data {root} ({chosen}) has no {split!r} split, only PATH-DT-MSU-like folders (ROOT/train, "
            "ROOT/val) do; load it whole and split it by group"
        )
    size, step = PATCH_PRESETS.get(chosen, (None, 0))
    size = size if patch_size is None else patch_size
    step = step if overlap is None else overlap
    common = {"max_per_class": max_per_class, "seed": seed}
    if chosen == "nct_crc" and patch_size is None:
        images = load_nct_crc(root, resolution, **common)
    elif chosen == "bach":
        images = load_bach(root, resolution, size, step, skip_small=skip_small, **common)
    elif chosen == "path_dt_msu":
        images = load_path_dt_msu(root, resolution, size, step, split, skip_small=skip_small, **common)
    else:
        images = load_class_folders(root, resolution, size, step, skip_small=skip_small, **common)
    images.notes.insert(0, f"layout {chosen}" + (" (detected)" if layout == "auto" else ""))
    images.source = f"{root} ({chosen}{f', {split}' if chosen == 'path_dt_msu' else ''})"
    return images


class ImageSetDataset(Dataset):
    """An ImageSet as a medkit classification Dataset: image float32 (3, H, W) in [0, 1], label int."""

    task = "classification"
    in_channels = 3

    def __init__(self, images: ImageSet) -> None:
        self.images = images
        self.class_names = images.class_names

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        pixels = torch.from_numpy(np.ascontiguousarray(self.images.images[index].transpose(2, 0, 1)))
        return {"image": pixels.float() / 255.0, "label": int(self.images.labels[index])}

    def groups(self) -> list[str] | None:
        return None if self.images.groups is None else [str(g) for g in self.images.groups]
