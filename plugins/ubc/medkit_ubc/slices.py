"""Images held in memory with their masks, classes and patients; patient-wise draws, splits and per-class subsets.

Label -1 marks an image without a class (it trains encoder and decoder only); ``has_mask`` false one without a
mask (it trains encoder and classifier only). A patient is never on both sides of a split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medkit import Dataset, UsageError

NO_LABEL = -1


@dataclass
class Slices:
    images: np.ndarray  # (N, H, W) float32 in [0, 1]
    masks: np.ndarray  # (N, H, W) uint8 {0, 1}; zeros where has_mask is false
    has_mask: np.ndarray  # (N,) bool
    labels: np.ndarray  # (N,) int64, NO_LABEL for none
    patients: np.ndarray  # (N,) patient ids
    splits: np.ndarray  # (N,) "train", "test" or "" (no explicit split)
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


class SliceSet(Dataset):
    """The samples ``indices`` of ``slices``: image (1, H, W), mask (H, W), has_mask, label."""

    task = "classification"

    def __init__(self, slices: Slices, indices: Sequence[int]) -> None:
        self.slices, self.indices = slices, np.asarray(indices, dtype=np.int64)
        self.class_names = slices.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        i = int(self.indices[index])
        s = self.slices
        return {
            "image": torch.from_numpy(s.images[i][None]),
            "mask": torch.from_numpy(s.masks[i].astype(np.float32)),
            "has_mask": bool(s.has_mask[i]),
            "label": int(s.labels[i]),
        }

    def groups(self) -> list[str]:
        return [str(self.slices.patients[i]) for i in self.indices]


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) float -> (N, size, size) float32, bilinear with antialiasing."""
    import torch
    import torch.nn.functional as F

    if images.shape[-2:] == (size, size):
        return images.astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized[:, 0].numpy()


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) {0, 1} -> (N, size, size) uint8, through the images' own interpolation (bilinear with
    antialiasing) and a 0.5 threshold, so a mask samples the points its image does (torch's "nearest" takes the
    top-left source pixel: a 240 -> 128 resize shifted masks by a third of a pixel) and a downsampled mask
    takes the majority of the pixels it covers."""
    if masks.shape[-2:] == (size, size):
        return masks.astype(np.uint8)
    return (resize_images(masks.astype(np.float32), size) > 0.5).astype(np.uint8)


def check_no_leakage(slices: Slices, train: Sequence[int], test: Sequence[int]) -> None:
    shared = sorted(set(slices.patients[list(train)]) & set(slices.patients[list(test)]))
    if shared:
        raise UsageError(
            f"patient(s) {', '.join(map(str, shared[:5]))} would be in both the training and the test split "
            "(their slices are nearly the same image, so test accuracy would be inflated); give each patient "
            "one split"
        )


def check_classes(slices: Slices, indices: Sequence[int], split: str) -> None:
    labels = slices.labels[list(indices)]
    for c, name in enumerate(slices.class_names):
        if not (labels == c).any():
            raise UsageError(
                f"class {name!r} has no images in the {split} split; every class needs images on both sides "
                "(add patients of that class, or change val_fraction / the explicit split)"
            )


def draw_patients(
    grades: dict[str, int], class_names: Sequence[str], per_class: int | None, seed: int
) -> set[str]:
    """The paper's balanced sample (section 2): ``per_class`` patients of each class drawn at random without
    replacement, seeded (None: as many as the smallest class has - BraTS 2019's 76 LGG, so all of them, and 76
    of its 259 HGG). Patients are sorted before the draw, so it does not depend on the file system's order."""
    rng = np.random.default_rng(seed)
    by_class = [sorted(p for p, g in grades.items() if g == c) for c in range(len(class_names))]
    smallest = min(map(len, by_class))
    wanted = smallest if per_class is None else per_class
    for name, patients in zip(class_names, by_class, strict=True):
        if not patients:
            raise UsageError(
                f"class {name!r} has no patients to draw from; both grades are needed (check the HGG/ and LGG/ "
                "folders or data_options.grades_csv)"
            )
        if wanted > len(patients):
            raise UsageError(
                f"data_options.patients_per_class={wanted}: class {name!r} has only {len(patients)} patient(s); "
                f"choose at most {smallest}, or add patients of that class"
            )
    return {str(p) for patients in by_class for p in rng.permutation(patients)[:wanted]}


def split_by_patient(slices: Slices, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Explicit splits when the data names them, else each class's patients shuffled and cut at
    ``val_fraction`` (the paper halves each class). Unlabelled images always train."""
    if slices.splits.astype(bool).any():
        train = [i for i in range(len(slices)) if slices.splits[i] != "test"]
        test = [i for i in range(len(slices)) if slices.splits[i] == "test"]
    else:
        rng = np.random.default_rng(seed)
        test_patients: set[str] = set()
        for c, name in enumerate(slices.class_names):
            patients = sorted(set(slices.patients[slices.labels == c]))
            if len(patients) < 2:
                raise UsageError(
                    f"class {name!r} has {len(patients)} patient(s); a patient-wise split needs at least 2 per class"
                )
            rng.shuffle(patients)
            n_test = min(len(patients) - 1, max(1, round(len(patients) * val_fraction)))
            test_patients.update(patients[:n_test])
        test = [i for i in range(len(slices)) if slices.patients[i] in test_patients]
        train = [i for i in range(len(slices)) if slices.patients[i] not in test_patients]
    test = [i for i in test if slices.labels[i] != NO_LABEL]
    check_no_leakage(slices, train, test)
    check_classes(slices, train, "training")
    check_classes(slices, test, "test")
    return train, test


def per_class_subset(slices: Slices, train: Sequence[int], per_class: int, seed: int) -> list[int]:
    """``per_class`` training images of each class, spread over patients: one random slice of each of as many
    patients as needed first, then a second slice of each, ... (the paper: 1..38 images = one slice per
    patient, 76 and 190 = 2 and 5 per patient). Unlabelled training images are all kept."""
    rng = np.random.default_rng(seed)
    chosen = [i for i in train if slices.labels[i] == NO_LABEL]
    for c, name in enumerate(slices.class_names):
        by_patient: dict[str, list[int]] = {}
        for i in train:
            if slices.labels[i] == c:
                by_patient.setdefault(str(slices.patients[i]), []).append(i)
        available = sum(map(len, by_patient.values()))
        if per_class > available:
            raise UsageError(
                f"per_class={per_class}: class {name!r} has only {available} training images "
                f"({len(by_patient)} patients); choose at most {available}"
            )
        patients = sorted(by_patient)
        rng.shuffle(patients)
        for patient in patients:
            rng.shuffle(by_patient[patient])
        deepest = max(map(len, by_patient.values()))
        rounds = [by_patient[p][k] for k in range(deepest) for p in patients if k < len(by_patient[p])]
        chosen += rounds[:per_class]
    return sorted(chosen)
