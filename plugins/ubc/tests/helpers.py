"""Tiny BraTS-like and image-folder data sets written in a test's tmp_path."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def brats_patient(
    folder: Path,
    name: str,
    seed: int,
    size: int = 32,
    depth: int = 12,
    labels=(1, 2, 4),
    modalities: tuple[str, ...] = (),
) -> Path:
    """A patient folder with ``<name>_flair.nii.gz`` and ``<name>_seg.nii.gz`` (and ``<name>_<m>.nii.gz`` for each
    of ``modalities``, as BraTS ships t1, t1ce and t2 beside them): a bright blob whose area peaks at slice
    depth // 2, labelled with BraTS' tumour labels in shells."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(np.arange(depth), np.arange(size), np.arange(size), indexing="ij")
    r = np.sqrt(((y - size / 2) / 6) ** 2 + ((x - size / 2) / 6) ** 2 + ((z - depth // 2) / 3) ** 2)
    seg = np.zeros(r.shape, np.uint8)
    seg[r <= 1.0], seg[r <= 0.7], seg[r <= 0.35] = labels[1], labels[2], labels[0]
    flair = (100 + 400 * (r <= 1.0) + rng.normal(0, 10, r.shape)).astype(np.int16)
    patient = folder / name
    patient.mkdir(parents=True)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    # NIfTI arrays are (x, y, z)
    nib.save(nib.Nifti1Image(flair.transpose(2, 1, 0), affine), patient / f"{name}_flair.nii.gz")
    nib.save(nib.Nifti1Image(seg.transpose(2, 1, 0), affine), patient / f"{name}_seg.nii.gz")
    for modality in modalities:  # other sequences: never read (the paper uses FLAIR only)
        nib.save(nib.Nifti1Image(-flair.transpose(2, 1, 0), affine), patient / f"{name}_{modality}.nii.gz")
    return patient


def brats_training_tree(root: Path, hgg: int = 6, lgg: int = 2) -> Path:
    """BraTS 2019's layout, ``MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/BraTS19_<site>_<id>_1/`` with the four
    sequences and the segmentation per patient, and more HGG than LGG patients (BraTS 2019: 259 and 76)."""
    tree = root / "MICCAI_BraTS_2019_Data_Training"
    for grade, count, site in (("HGG", hgg, "CBICA"), ("LGG", lgg, "TCIA10")):
        for i in range(count):
            name = f"BraTS19_{site}_{100 + i:03d}_1"
            brats_patient(tree / grade, name, seed=7 * i + len(grade), modalities=("t1", "t1ce", "t2"))
    return tree


def brats_folder(root: Path, per_grade: int = 3) -> Path:
    for grade in ("HGG", "LGG"):
        for i in range(per_grade):
            brats_patient(root / grade, f"BraTS19_{grade}_{i:03d}", seed=i + (100 if grade == "HGG" else 0))
    return root


def image_folder(root: Path, per_class: int = 3, size: int = 24, mask_value: int = 1) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(("benign", "malignant")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = (rng.random((size, size)) * 100 + 50 * c).astype(np.uint8)
            mask = np.zeros((size, size), np.uint8)
            mask[4:12, 4:12] = mask_value
            Image.fromarray(image).save(root / name / f"img{i}.png")
            Image.fromarray(mask).save(root / name / f"img{i}_mask.png")
    return root
