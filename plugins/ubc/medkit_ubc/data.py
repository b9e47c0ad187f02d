"""Where ubc's images come from: the embedded synthetic brains and BraTS 2019, both through the core slice cache.

A source is converted once into an H5 slice cache (kept in the user cache folder); per patient the N axial slices
with the largest lesion area are read from it (``largest_mask_slices``, paper 003 section 3: N = 5) and held in
memory as :class:`~medkit_ubc.slices.Slices` - the paper's data sets are a few hundred images.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medkit import UsageError
from medkit.cache.build import build_cache
from medkit.cache.pairing import Pair
from medkit.cache.selection import largest_mask_slices
from medkit.cache.store import Preprocessing, SliceCache
from medkit.user_cache import build_once, cache_folder

from .slices import NO_LABEL, Slices, SliceSet, draw_patients, resize_images, resize_masks
from .synthetic import CLASS_NAMES as SYNTHETIC_CLASSES
from .synthetic import VERSION as SYNTHETIC_VERSION
from .synthetic import brain_patient

BRATS_CLASSES = ("LGG", "HGG")
BRATS_LABELS = {
    1,
    2,
    3,
    4,
}  # necrotic core, oedema, (3 in BraTS 2017), enhancing tumour: their union is the mask
UNLABELLED = "unlabelled"


def cache_root() -> Path:
    return cache_folder("ubc")


def synthetic_cache(patients: int, slices: int, size: int, unlabelled: int = 0, seed: int = 0) -> Path:
    """The embedded brains as a slice cache, generated once: ``patients`` per class (ids ``<class>-NNN``) and
    ``unlabelled`` more of either class (ids ``unlabelled-NNN``)."""
    target = (
        cache_root()
        / f"synthetic-v{SYNTHETIC_VERSION}-{patients}p{unlabelled}u-{slices}x{size}-seed{seed}.h5"
    )

    def build(path: Path) -> None:
        with tempfile.TemporaryDirectory() as folder:
            pairs = []
            plan = [(name, label, i) for label, name in enumerate(SYNTHETIC_CLASSES) for i in range(patients)]
            plan += [(UNLABELLED, i % 2, i) for i in range(unlabelled)]
            for number, (name, label, i) in enumerate(plan):
                image, mask = brain_patient(label, slices, size, seed=seed * 1_000_003 + number)
                file = Path(folder) / f"{name}-{i:03d}.npz"
                np.savez(file, image=image, mask=mask, spacing=np.array([5.0, 1.0, 1.0]))
                pairs.append(Pair(file.stem, file, file))
            build_cache(pairs, path, workers=1)

    return build_once(target, build)


def load_synthetic(config: Any) -> Slices:
    options = config.data_options
    unlabelled = options.synthetic.unlabelled if options.semi_supervised else 0
    path = synthetic_cache(
        options.synthetic.patients, options.synthetic.slices, config.image_size, unlabelled
    )
    cache = SliceCache(path)
    labels = {}
    for info in cache.volumes:
        name = info.id.rsplit("-", 1)[0]
        labels[info.id] = NO_LABEL if name == UNLABELLED else SYNTHETIC_CLASSES.index(name)
    return slices_from_cache(cache, labels, {}, SYNTHETIC_CLASSES, config.image_size, options, {1})


# -- BraTS 2019 ------------------------------------------------------------------------------------------


def is_brats(folder: Path) -> bool:
    return Path(folder).is_dir() and next(Path(folder).rglob("*_flair.nii*"), None) is not None


def brats_pairs(folder: Path) -> list[Pair]:
    """One pair per patient folder: its ``*_flair.nii.gz`` and ``*_seg.nii.gz``."""
    pairs, seen = [], {}
    for flair in sorted(Path(folder).rglob("*_flair.nii*")):
        patient = flair.parent
        seg = next(iter(sorted(patient.glob("*_seg.nii*"))), None)
        if seg is None:
            raise UsageError(
                f"{patient}: no *_seg.nii.gz beside {flair.name}; ubc needs the tumour mask of every patient "
                "(BraTS training data has them) - add it or remove the folder"
            )
        if patient.name in seen:
            raise UsageError(
                f"patient {patient.name} appears twice, in {seen[patient.name]} and {patient.parent}: one patient "
                "in two places would leak between classes or splits; keep one copy"
            )
        seen[patient.name] = patient.parent
        pairs.append(Pair(patient.name, flair, seg))
    return pairs


def brats_cache(folder: Path) -> Path:
    """A BraTS folder as a slice cache, converted once (keyed by the folder's path)."""
    folder = Path(folder).resolve()
    key = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    target = cache_root() / f"brats-{folder.name}-{key}.h5"
    pairs = brats_pairs(folder)
    if not pairs:
        raise UsageError(f"--data {folder}: no *_flair.nii.gz found under it")
    workers = min(4, os.cpu_count() or 1) if len(pairs) > 8 else 1
    return build_once(target, lambda path: build_cache(pairs, path, workers=workers))


def brats_grades(folder: Path, csv_path: Path | None) -> tuple[dict[str, int], dict[str, str]]:
    """Patient -> class index (LGG 0, HGG 1) and patient -> explicit split, from the CSV or the folder names."""
    grades: dict[str, int] = {}
    splits: dict[str, str] = {}
    if csv_path is None:
        for pair in brats_pairs(folder):
            grade = pair.image.parent.parent.name.upper()
            if grade in BRATS_CLASSES:
                grades[pair.id] = BRATS_CLASSES.index(grade)
        return grades, splits
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"patient", "grade"} <= set(reader.fieldnames):
            raise UsageError(
                f"data_options.grades_csv {csv_path}: needs a header with columns patient,grade[,split]; "
                f"found {reader.fieldnames}"
            )
        for line, row in enumerate(reader, start=2):
            patient, grade = row["patient"].strip(), row["grade"].strip().upper()
            if grade not in BRATS_CLASSES:
                raise UsageError(f"{csv_path} line {line}: grade {row['grade']!r} is not HGG or LGG")
            split = (row.get("split") or "").strip().lower()
            if split not in ("", "train", "test"):
                raise UsageError(f"{csv_path} line {line}: split {split!r} is not train or test")
            if patient in grades and (grades[patient], splits.get(patient, "")) != (
                BRATS_CLASSES.index(grade),
                split,
            ):
                raise UsageError(
                    f"{csv_path} line {line}: patient {patient} is listed again with another grade or split; "
                    "a patient must be in one class and one split (no leakage) - keep one row per patient"
                )
            grades[patient] = BRATS_CLASSES.index(grade)
            if split:
                splits[patient] = split
    return grades, splits


def load_brats(folder: Path, config: Any) -> Slices:
    options = config.data_options
    cache = SliceCache(brats_cache(folder))
    grades, splits = brats_grades(folder, options.grades_csv)
    labels = {}
    for info in cache.volumes:
        if info.id in grades:
            labels[info.id] = grades[info.id]
        elif options.semi_supervised:
            labels[info.id] = NO_LABEL
        else:
            where = f"in {options.grades_csv}" if options.grades_csv else "under an HGG/ or LGG/ folder"
            raise UsageError(
                f"BraTS patient {info.id} ({info.source}) has no grade: it is not {where}. Add it, or pass "
                "--set data_options.semi_supervised=true to let it train the decoder only"
            )
    if not splits and not options.all_patients:
        graded = {p: g for p, g in labels.items() if g != NO_LABEL}
        drawn = draw_patients(graded, BRATS_CLASSES, options.patients_per_class, options.sample_seed)
        labels = {p: g for p, g in labels.items() if g == NO_LABEL or p in drawn}
    return slices_from_cache(cache, labels, splits, BRATS_CLASSES, config.image_size, options, BRATS_LABELS)


# -- common: chosen slices out of a cache ------------------------------------------------------------------


def check_mask_values(cache: SliceCache, allowed: set[int], binarize: bool) -> None:
    """Mask values must be lesion labels the source defines, or be joined on request (binarize)."""
    for v, info in enumerate(cache.volumes):
        if not info.has_mask:
            raise UsageError(f"{info.source}: no mask; ubc needs the lesion mask of every patient")
        area = cache.mask_area(v).sum(axis=0)
        present = {int(value) for value in np.flatnonzero(area) if value > 0}
        unexpected = sorted(present - allowed)
        if unexpected and not binarize:
            raise UsageError(
                f"{info.source}: mask holds values {unexpected}, but a lesion mask holds 0 and "
                f"{', '.join(map(str, sorted(allowed)))}; pass --set data_options.binarize=true to count every "
                "non-zero value as lesion, or fix the mask"
            )


def slices_from_cache(
    cache: SliceCache,
    labels: dict[str, int],
    splits: dict[str, str],
    class_names: tuple[str, ...],
    size: int,
    options: Any,
    allowed: set[int],
) -> Slices:
    """The N slices with most lesion per patient of ``labels`` (others are left out), min-max scaled per slice,
    resized to ``size``."""
    check_mask_values(cache, allowed, options.binarize)
    chosen = largest_mask_slices(cache, options.slices_per_patient)
    minmax = Preprocessing("minmax")
    images, masks, patients = [], [], []
    for v, info in enumerate(cache.volumes):
        if info.id not in labels or not chosen[v]:
            continue  # not drawn, or no lesion anywhere in this patient: nothing to select
        raw, mask = cache.read_slices(v, sorted(chosen[v]))
        assert mask is not None
        images.append(resize_images(minmax.apply(raw), size))
        masks.append(resize_masks(mask > 0, size))
        patients += [info.id] * len(raw)
    return Slices(
        images=np.concatenate(images),
        masks=np.concatenate(masks),
        has_mask=np.ones(len(patients), dtype=bool),
        labels=np.array([labels[p] for p in patients], dtype=np.int64),
        patients=np.array(patients, dtype=object),
        splits=np.array([splits.get(p, "") for p in patients], dtype=object),
        class_names=class_names,
    )


def load_slices(config: Any) -> Slices:
    """The images a recipe uses: --data as BraTS or an image folder, or the embedded synthetic brains."""
    if config.data is None:
        return load_synthetic(config)
    data = Path(config.data)
    if data.is_file():
        raise UsageError(
            f"--data {data} is a file; give a BraTS folder (patient folders with *_flair/*_seg.nii.gz) or a "
            "folder of class folders holding images and *_mask files"
        )
    if is_brats(data):
        return load_brats(data, config)
    from .folders import load_folder

    return load_folder(data, config.image_size, config.data_options)


def dataset(data: Path | None = None, image_size: int = 64, **data_options: Any) -> SliceSet:
    """Every image of a source as a :class:`medkit.Dataset` (what the registered dataset entries build):
    ``dataset()`` the embedded brains, ``dataset("BraTS")`` a BraTS or image folder; ``data_options`` as
    ``--set data_options.*``."""
    from medkit.config import resolve_config

    from .config import TrainUbcConfig

    layer = {
        "data": None if data is None else str(data),
        "image_size": image_size,
        "data_options": data_options,
    }
    config, _ = resolve_config(TrainUbcConfig, [("dataset options", layer)])
    slices = load_slices(config)
    return SliceSet(slices, range(len(slices)))
