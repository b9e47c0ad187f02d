"""Scorers every plugin can reuse: segmentation overlap figures and classification accuracy.

Figures are computed from counts accumulated over the whole evaluation (not averaged per batch), so they do
not depend on the batch size and merge exactly across processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .interfaces import Scorer


def predicted_labels(prediction: Any) -> np.ndarray:
    """Class indices from logits (N, C, ...) or from indices already."""
    array = prediction.detach().cpu().numpy() if hasattr(prediction, "detach") else np.asarray(prediction)
    return array.argmax(axis=1) if array.ndim >= 2 and array.dtype.kind == "f" else array


def to_numpy(target: Any) -> np.ndarray:
    return target.detach().cpu().numpy() if hasattr(target, "detach") else np.asarray(target)


def confusion_matrix(predicted: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    index = target.astype(np.int64).ravel() * num_classes + predicted.astype(np.int64).ravel()
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


class SegmentationScorer(Scorer):
    """Pixel accuracy and per-class precision, recall, Dice and IoU, with their means over foreground classes.

    Convention for an absent class: a class that is neither in the targets nor predicted over the whole
    evaluation has no defined Dice/IoU/precision/recall; it is reported as NaN and left out of the means.
    """

    name = "segmentation"

    def __init__(self, class_names: Sequence[str], background: int | None = 0) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.background = background

    def update(self, prediction: Any, target: Any) -> None:
        matrix = confusion_matrix(predicted_labels(prediction), to_numpy(target), len(self.class_names))
        self.accumulate("confusion", matrix)

    def figure_names(self) -> list[str]:
        foreground = [name for i, name in enumerate(self.class_names) if i != self.background]
        return overlap_figure_names(foreground)

    def compute(self) -> dict[str, float]:
        matrix = self.state.get("confusion")
        if matrix is None:
            return {}
        tp = np.diag(matrix).astype(np.float64)
        fp, fn = matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = {
                "precision": tp / (tp + fp),
                "recall": tp / (tp + fn),
                "dice": 2 * tp / (2 * tp + fp + fn),
                "iou": tp / (tp + fp + fn),
            }
        scores = {"pixel_accuracy": float(tp.sum() / max(matrix.sum(), 1))}
        foreground = [i for i in range(len(self.class_names)) if i != self.background]
        for figure, values in per_class.items():
            for i in foreground:
                scores[f"{figure}/{self.class_names[i]}"] = float(values[i])
            kept = values[foreground][~np.isnan(values[foreground])]
            scores[f"mean_{figure}"] = float(kept.mean()) if kept.size else math.nan
        return scores


OVERLAP_FIGURES: tuple[str, ...] = ("precision", "recall", "dice", "iou")


def overlap_figure_names(foreground: Sequence[str]) -> list[str]:
    """``pixel_accuracy``, then per figure each foreground class's value and the mean over them."""
    names = ["pixel_accuracy"]
    for figure in OVERLAP_FIGURES:
        names += [f"{figure}/{name}" for name in foreground] + [f"mean_{figure}"]
    return names


def wilson_interval(successes: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion (better than the normal interval for small samples)."""
    if total == 0:
        return math.nan, math.nan
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


class ClassificationScorer(Scorer):
    """Accuracy with its 95 % Wilson interval and balanced accuracy (the mean of per-class recalls)."""

    name = "classification"

    def __init__(self, class_names: Sequence[str]) -> None:
        super().__init__()
        self.class_names = list(class_names)

    def figure_names(self) -> list[str]:
        return ["accuracy", "accuracy_ci_low", "accuracy_ci_high", "balanced_accuracy"]

    def update(self, prediction: Any, target: Any) -> None:
        self.accumulate(
            "confusion",
            confusion_matrix(predicted_labels(prediction), to_numpy(target), len(self.class_names)),
        )

    def compute(self) -> dict[str, float]:
        matrix = self.state.get("confusion")
        if matrix is None:
            return {}
        correct, total = int(np.trace(matrix)), int(matrix.sum())
        low, high = wilson_interval(correct, total)
        support = matrix.sum(axis=1)
        recalls = np.diag(matrix)[support > 0] / support[support > 0]
        return {
            "accuracy": correct / total if total else math.nan,
            "accuracy_ci_low": low,
            "accuracy_ci_high": high,
            "balanced_accuracy": float(recalls.mean()) if recalls.size else math.nan,
        }
