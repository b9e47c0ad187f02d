"""Per-case 3D figures of a predicted label volume against its mask: Dice, HD95 and surface Dice, by MONAI.

The report scores slices (``metrics.py``); a user of `predict` also wants the whole-volume figures that
segmentation challenges report. Distances are in millimetres (the volume's spacing). A class absent from both
the prediction and the mask scores Dice 1.0 (the report's convention), HD95 and surface Dice NaN (undefined, as
in MONAI); a class present in only one of them scores Dice 0, HD95 infinity and surface Dice 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from medkit.cache.formats import Spacing

VOLUME_FIGURES = ("dice", "hd95", "surface_dice")


def case_figures(
    labels: np.ndarray,
    truth: np.ndarray,
    spacing: Spacing,
    class_names: Sequence[str],
    tolerance_mm: float,
) -> dict[str, dict[str, float]]:
    """``{"dice" | "hd95" | "surface_dice": {class name: value}}`` for every class but the background (0).

    ``labels`` and ``truth`` are (Z, Y, X) class indices on one grid with ``spacing`` (z, y, x) in mm; surface
    Dice counts boundary voxels within ``tolerance_mm`` of the other boundary (Nikolov et al. 2021)."""
    if labels.shape != truth.shape:
        raise ValueError(
            f"prediction {labels.shape} and mask {truth.shape} must have the same (Z, Y, X) shape"
        )
    figures: dict[str, dict[str, float]] = {name: {} for name in VOLUME_FIGURES}
    for c, name in enumerate(class_names):
        if c == 0:
            continue
        for figure, value in class_figures(labels == c, truth == c, spacing, tolerance_mm).items():
            figures[figure][name] = value
    return figures


def class_figures(
    predicted: np.ndarray, actual: np.ndarray, spacing: Spacing, tolerance_mm: float
) -> dict[str, float]:
    """Dice, HD95 and surface Dice of one class, from boolean (Z, Y, X) masks."""
    box = union_box(predicted, actual)
    if box is None:  # absent from both: nothing to measure a distance between
        return {"dice": 1.0, "hd95": math.nan, "surface_dice": math.nan}
    if not (predicted.any() and actual.any()):
        # missed or invented entirely; MONAI's 95th percentile of infinite distances is NaN, which the means
        # over cases would skip, hiding the worst case
        return {"dice": 0.0, "hd95": math.inf, "surface_dice": 0.0}
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    y_pred, y = (
        torch.from_numpy(np.ascontiguousarray(m[box])).float()[None, None] for m in (predicted, actual)
    )
    distances = {"spacing": list(spacing), "include_background": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI 1.5+ passes its own deprecated argument
        dice = compute_dice(y_pred, y, include_background=True, ignore_empty=False)
        hd95 = compute_hausdorff_distance(y_pred, y, percentile=95, **distances)
        surface = compute_surface_dice(y_pred, y, class_thresholds=[tolerance_mm], **distances)
    return {"dice": float(dice), "hd95": float(hd95), "surface_dice": float(surface)}


def union_box(predicted: np.ndarray, actual: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of both masks grown by one voxel, or None when both are empty.

    MONAI converts its inputs to float: on a whole CT (512 x 512 x 300) that is 315 MB per class and side,
    against a few MB for the airway's box. The one-voxel margin keeps every boundary voxel a boundary voxel,
    so the figures are those of the whole volume."""
    union = predicted | actual
    if not union.any():
        return None
    box = []
    for axis in range(union.ndim):
        present = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(max(int(present[0]) - 1, 0), int(present[-1]) + 2))
    return tuple(box)


def mean_over_cases(cases: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each figure and class averaged over the cases where it is defined (NaN left out; infinity kept: a case
    that missed a class entirely should not vanish from the mean)."""
    means: dict[str, dict[str, float]] = {}
    for figure in VOLUME_FIGURES:
        names = cases[0][figure] if cases else {}
        means[figure] = {}
        for name in names:
            values = np.array([case[figure][name] for case in cases], dtype=np.float64)
            defined = values[~np.isnan(values)]
            means[figure][name] = float(defined.mean()) if defined.size else math.nan
    return means
