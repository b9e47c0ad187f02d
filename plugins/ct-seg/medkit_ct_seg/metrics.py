"""The report's quality figures (paper 002, section 5; spec "Training facts") and its ranking of epochs.

Per split and epoch the report tracks pixel accuracy and, for each foreground class, precision, recall, Dice
and IoU, plus their means over the foreground classes: 1 + 4 * 3 + 4 = 17 figures, which with the loss make
18 per split and the report's 36 on train and test.

How figures are averaged, following the authors' code: every figure is computed per slice (the sums run over
one image's pixels), then averaged over slices. Their code averages over a batch and then over the epoch's
batches, which is the same mean over slices when the batches are equal; the mean over slices is kept here
because it does not depend on the batch size and merges exactly across processes. This is why the figures
differ from the core ``SegmentationScorer``, which pools counts over the whole evaluation.

Absent classes: the authors add a tiny eps to numerator and denominator, so every 0/0 counts as 1.0. For Dice
and IoU that happens exactly when a class is neither in the slice's mask nor predicted (the report's "absent
class counts as 1.0"); for precision when the class is not predicted in the slice, for recall when it is not
in the mask. ``absent="one"`` (default) is that convention; ``absent="nan"`` leaves every 0/0 undefined and
out of the averages, the core's convention. The same rule serves the per-class figures and the means, so a
mean is always the average of its per-class figures, as in the report's logs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from medkit import Scorer
from medkit.scorers import OVERLAP_FIGURES, confusion_matrix, overlap_figure_names, predicted_labels, to_numpy

FIGURES: tuple[str, ...] = OVERLAP_FIGURES


def per_image_figures(matrices: np.ndarray, absent: Literal["one", "nan"] = "one") -> dict[str, np.ndarray]:
    """Precision, recall, Dice and IoU of every image and class, each (N, C), from confusion matrices
    (N, C, C) whose rows are true classes; a 0/0 becomes 1.0 (``absent="one"``) or NaN (``"nan"``)."""
    tp = np.diagonal(matrices, axis1=1, axis2=2).astype(np.float64)
    predicted, actual = matrices.sum(axis=1), matrices.sum(axis=2)
    ratios = {
        "precision": (tp, predicted),
        "recall": (tp, actual),
        "dice": (2 * tp, predicted + actual),
        "iou": (tp, predicted + actual - tp),
    }
    fill = 1.0 if absent == "one" else math.nan
    return {
        figure: np.divide(top, bottom, out=np.full(tp.shape, fill), where=bottom > 0)
        for figure, (top, bottom) in ratios.items()
    }


class PaperSegmentationScorer(Scorer):
    """Paper 002's per-slice segmentation figures; see the module docstring for averaging and absent classes.

    State: ``images``, ``pixel_accuracy`` (sum over images), and per figure the sum over images of its
    defined per-class values (``<figure>_sum``) with how many there were (``<figure>_count``), all summed by
    :meth:`merge`.
    """

    name = "paper_segmentation"

    def __init__(
        self, class_names: Sequence[str], absent: Literal["one", "nan"] = "one", background: int | None = 0
    ) -> None:
        super().__init__()
        if absent not in ("one", "nan"):
            raise ValueError(f"absent must be 'one' (the paper) or 'nan' (excluded), got {absent!r}")
        self.class_names = list(class_names)
        self.absent = absent
        self.foreground = [i for i in range(len(self.class_names)) if i != background]

    def figure_names(self) -> list[str]:
        return overlap_figure_names([self.class_names[i] for i in self.foreground])

    def update(self, prediction: Any, target: Any) -> None:
        labels, truth = predicted_labels(prediction), to_numpy(target)
        if labels.shape != truth.shape or truth.ndim != 3:
            raise ValueError(
                f"prediction must be logits (N, C, H, W) or labels (N, H, W) matching the target (N, H, W); "
                f"got labels {labels.shape} for target {truth.shape}"
            )
        classes = len(self.class_names)
        matrices = np.stack([confusion_matrix(p, t, classes) for p, t in zip(labels, truth, strict=True)])
        self.accumulate("images", len(matrices))
        self.accumulate("pixel_accuracy", float((labels == truth).mean(axis=(1, 2)).sum()))
        for figure, values in per_image_figures(matrices, self.absent).items():
            defined = ~np.isnan(values[:, self.foreground])
            self.accumulate(f"{figure}_sum", np.where(defined, values[:, self.foreground], 0.0).sum(axis=0))
            self.accumulate(f"{figure}_count", defined.sum(axis=0))

    def compute(self) -> dict[str, float]:
        if not self.state.get("images"):
            return {}
        scores = {"pixel_accuracy": self.state["pixel_accuracy"] / self.state["images"]}
        for figure in FIGURES:
            total, count = self.state[f"{figure}_sum"], self.state[f"{figure}_count"]
            per_class = np.divide(total, count, out=np.full(len(total), math.nan), where=count > 0)
            for i, value in zip(self.foreground, per_class, strict=True):
                scores[f"{figure}/{self.class_names[i]}"] = float(value)
            kept = per_class[~np.isnan(per_class)]
            scores[f"mean_{figure}"] = float(kept.mean()) if kept.size else math.nan
        return scores


def ranking_figures(
    values: Sequence[float], top: int = 10, higher_is_better: bool = True
) -> dict[str, float]:
    """The report's ranking of one figure's per-epoch curve (section 5): its best value, the (1-based) epoch
    of that value, and the mean of the ``top`` best epochs (all epochs when there are fewer). NaN epochs are
    skipped."""
    curve = np.asarray(values, dtype=np.float64)
    epochs = np.flatnonzero(~np.isnan(curve))
    if epochs.size == 0:
        raise ValueError("ranking_figures needs at least one epoch with a defined value")
    order = epochs[np.argsort(-curve[epochs] if higher_is_better else curve[epochs], kind="stable")]
    return {
        "best": float(curve[order[0]]),
        "best_epoch": int(order[0]) + 1,
        f"mean_top{top}": float(curve[order[:top]].mean()),
    }
