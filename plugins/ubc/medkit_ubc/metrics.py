"""The paper's figures (section 3): accuracy with its 95 % Wilson interval, balanced accuracy, ROC-AUC, Dice.

Counts and per-sample values are accumulated over the whole evaluation, so figures do not depend on the batch
size and merge exactly across processes. Accuracy, its interval and balanced accuracy are the core's
``ClassificationScorer``; this scorer adds ROC-AUC of the positive class and the mask Dice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medkit.scorers import ClassificationScorer, to_numpy

from .slices import NO_LABEL


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: the probability that a positive outranks a negative, ties counting half
    (Mann-Whitney U); NaN when one class is absent."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    positives, negatives = int((labels == 1).sum()), int((labels == 0).sum())
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    u = ranks[labels == 1].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def dice_per_image(probability: np.ndarray, target: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Dice of the thresholded mask of each image; an image with neither a true nor a predicted lesion is 1."""
    predicted = probability.reshape(len(probability), -1) >= threshold
    truth = target.reshape(len(target), -1) > 0
    overlap = 2.0 * (predicted & truth).sum(axis=1)
    total = predicted.sum(axis=1) + truth.sum(axis=1)
    return np.where(total > 0, overlap / np.maximum(total, 1), 1.0)


class UbcScorer(ClassificationScorer):
    """Scores ``{"logits", "mask"?}`` outputs against whole batches (label -1: unlabelled; has_mask)."""

    name = "ubc"

    def update(self, prediction: Any, target: Any) -> None:
        labels = to_numpy(target["label"])
        logits = prediction["logits"]
        labelled = labels != NO_LABEL
        if labelled.any():
            super().update(logits[torch.from_numpy(labelled)], labels[labelled])
            if len(self.class_names) == 2:
                probability = logits.softmax(dim=1)[:, 1].cpu().numpy()
                self.accumulate("scores", probability[labelled].tolist())
                self.accumulate("labels", labels[labelled].tolist())
        if "mask" in prediction:
            has_mask = to_numpy(target["has_mask"]).astype(bool)
            if has_mask.any():
                probability = prediction["mask"].sigmoid().cpu().numpy()[has_mask, 0]
                truth = to_numpy(target["mask"])[has_mask]
                self.accumulate("dice", dice_per_image(probability, truth).tolist())

    def figure_names(self) -> list[str]:
        # roc_auc for two classes; dice only when the model has a mask head (UBC, not the plain baseline)
        return [*super().figure_names(), *(["roc_auc"] if len(self.class_names) == 2 else []), "dice"]

    def compute(self) -> dict[str, float]:
        figures = super().compute()
        if "scores" in self.state:
            figures["roc_auc"] = roc_auc(self.state["scores"], self.state["labels"])
        if "dice" in self.state:
            figures["dice"] = float(np.mean(self.state["dice"]))
        return figures
