"""Core scorers agree with scikit-learn, follow the stated convention for absent classes, and merge exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, jaccard_score, precision_score, recall_score

from medkit.scorers import ClassificationScorer, SegmentationScorer, wilson_interval

CLASSES = ("background", "lung", "trachea")


def random_batch(rng: np.random.Generator, n: int = 4, size: int = 16):
    logits = torch.from_numpy(rng.normal(size=(n, 3, size, size)).astype(np.float32))
    target = torch.from_numpy(rng.integers(0, 3, size=(n, size, size)))
    return logits, target


def test_segmentation_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    scorer = SegmentationScorer(CLASSES)
    predictions, targets = [], []
    for _ in range(3):
        logits, target = random_batch(rng)
        scorer.update(logits, target)
        predictions.append(logits.argmax(1).numpy().ravel())
        targets.append(target.numpy().ravel())
    y_pred, y_true = np.concatenate(predictions), np.concatenate(targets)
    scores = scorer.compute()
    for i, name in enumerate(CLASSES[1:], start=1):
        kwargs = {"labels": [i], "average": None}
        assert scores[f"dice/{name}"] == pytest.approx(f1_score(y_true, y_pred, **kwargs)[0])
        assert scores[f"iou/{name}"] == pytest.approx(jaccard_score(y_true, y_pred, **kwargs)[0])
        assert scores[f"precision/{name}"] == pytest.approx(precision_score(y_true, y_pred, **kwargs)[0])
        assert scores[f"recall/{name}"] == pytest.approx(recall_score(y_true, y_pred, **kwargs)[0])
    assert scores["mean_dice"] == pytest.approx(f1_score(y_true, y_pred, labels=[1, 2], average="macro"))
    assert scores["pixel_accuracy"] == pytest.approx((y_true == y_pred).mean())


def test_a_class_absent_from_targets_and_predictions_is_nan_and_left_out_of_the_mean():
    scorer = SegmentationScorer(CLASSES)
    target = torch.tensor([[[0, 1], [1, 0]]])
    logits = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    scorer.update(logits, target)
    scores = scorer.compute()
    assert math.isnan(scores["dice/trachea"])
    assert scores["dice/lung"] == 1.0 and scores["mean_dice"] == 1.0


def test_states_merged_across_processes_equal_one_pass_over_all_data():
    rng = np.random.default_rng(1)
    batches = [random_batch(rng) for _ in range(4)]
    whole, left, right = (SegmentationScorer(CLASSES) for _ in range(3))
    for i, (logits, target) in enumerate(batches):
        whole.update(logits, target)
        (left if i % 2 else right).update(logits, target)
    left.merge(right.state)
    assert left.compute() == whole.compute()


def test_classification_accuracy_wilson_interval_and_balanced_accuracy():
    y_true = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    y_pred = np.array([0, 0, 0, 0, 0, 1, 1, 0, 0, 1])
    scorer = ClassificationScorer(["a", "b"])
    scorer.update(y_pred, y_true)
    scores = scorer.compute()
    assert scores["accuracy"] == pytest.approx(0.7)
    assert scores["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    low, high = wilson_interval(7, 10)
    assert (scores["accuracy_ci_low"], scores["accuracy_ci_high"]) == (low, high)
    # Published value of the 95 % Wilson interval for 7/10: 0.3968 .. 0.8922
    assert (round(low, 4), round(high, 4)) == (0.3968, 0.8922)
