"""The report's losses and quality figures (paper 002, section 3 and 5), checked against MONAI, torch and
scikit-learn wherever the definitions coincide."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, FocalLoss, TverskyLoss
from monai.metrics import DiceMetric, MeanIoU
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from medkit.scorers import SegmentationScorer
from medkit_ct_seg.losses import (
    LOSSES,
    CrossEntropy,
    Focal,
    Hybrid,
    SoftDice,
    SoftIoU,
    Tversky,
    WeightedCrossEntropy,
    class_weights_from_counts,
)
from medkit_ct_seg.metrics import PaperSegmentationScorer, ranking_figures

CLASSES = ["background", "left_lung", "right_lung", "trachea"]
LUNA16_BALANCE = [87.1, 5.965, 6.836, 0.102]  # spec "Task": bg : lung : lung : trachea


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits and a target in which the trachea (class 3) is missing from the second slice."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 16, 16, generator=generator) * 3
    target = torch.randint(0, 4, (3, 16, 16), generator=generator)
    target[1][target[1] == 3] = 0
    return logits, target


def _one_hot(labels: torch.Tensor, classes: int = 4) -> torch.Tensor:
    return F.one_hot(labels, classes).permute(0, 3, 1, 2).float()


# --- losses -----------------------------------------------------------------------------------------------


def test_the_loss_table_names_the_reports_seven_losses(batch) -> None:
    assert set(LOSSES) == {"ce", "weighted_ce", "focal", "dice", "iou", "tversky", "hybrid"}
    logits, target = batch
    logits = logits.clone().requires_grad_()
    for name, loss_class in LOSSES.items():
        loss = loss_class([1.0] * 4) if name == "weighted_ce" else loss_class()
        value = loss(logits, target)
        assert value.ndim == 0 and torch.isfinite(value), name
        value.backward()


def test_cross_entropy_is_torchs(batch) -> None:
    logits, target = batch
    torch.testing.assert_close(CrossEntropy()(logits, target), torch.nn.CrossEntropyLoss()(logits, target))


def test_weighted_cross_entropy_is_torchs_and_uniform_weights_give_plain_ce(batch) -> None:
    logits, target = batch
    weights = torch.tensor([0.1, 1.0, 2.0, 5.0])
    expected = torch.nn.CrossEntropyLoss(weight=weights)(logits, target)
    torch.testing.assert_close(WeightedCrossEntropy(weights)(logits, target), expected)
    torch.testing.assert_close(
        WeightedCrossEntropy([3.0] * 4)(logits, target), CrossEntropy()(logits, target)
    )


def test_inverse_frequency_weights_on_the_luna16_balance_weight_the_trachea_highest() -> None:
    weights = class_weights_from_counts(LUNA16_BALANCE)
    assert int(weights.argmax()) == 3
    assert weights.mean().item() == pytest.approx(1.0)
    inverse = 1 / torch.tensor(LUNA16_BALANCE, dtype=torch.float64)
    torch.testing.assert_close(weights, (inverse / inverse.mean()).float())
    assert weights[0] < weights[1] < weights[3] and weights[2] < weights[1]  # rarer class, larger weight


def test_tempered_weights_are_the_inverse_square_root_of_the_class_frequency() -> None:
    weights = class_weights_from_counts(LUNA16_BALANCE, power=0.5)
    inverse_sqrt = torch.tensor(LUNA16_BALANCE, dtype=torch.float64) ** -0.5
    torch.testing.assert_close(weights, (inverse_sqrt / inverse_sqrt.mean()).float())
    full = class_weights_from_counts(LUNA16_BALANCE)
    # trachea : background is about 29 : 1 instead of about 854 : 1
    assert weights[3] / weights[0] == pytest.approx((full[3] / full[0]).sqrt().item(), rel=1e-4)


def test_a_class_without_pixels_gets_a_message_not_an_infinite_weight() -> None:
    with pytest.raises(ValueError, match=r"\[3\] have no pixels"):
        class_weights_from_counts([90, 5, 5, 0])


def test_focal_loss_matches_monais_softmax_focal_loss(batch) -> None:
    # MONAI's softmax focal loss averages -g (1 - p)^gamma log p over all N*C*H*W entries, like the authors';
    # it has no eps (the authors' eps only keeps log away from 0), so they coincide at eps = 0.
    logits, target = batch
    oracle = FocalLoss(use_softmax=True, to_onehot_y=True, gamma=2.0, reduction="mean")
    torch.testing.assert_close(Focal(eps=0.0)(logits, target), oracle(logits, target[:, None]))
    assert Focal()(logits, target).item() == pytest.approx(oracle(logits, target[:, None]).item(), rel=1e-2)


def test_focal_mean_over_n_c_h_w_is_the_per_pixel_focal_loss_divided_by_c(batch) -> None:
    logits, target = batch
    log_pt = -F.cross_entropy(logits, target, reduction="none")  # direct formula, per pixel
    per_pixel = -((1 - log_pt.exp()) ** 2) * log_pt
    torch.testing.assert_close(Focal(eps=0.0)(logits, target), per_pixel.mean() / 4)
    torch.testing.assert_close(Focal(gamma=0.0, eps=0.0)(logits, target), CrossEntropy()(logits, target) / 4)


def test_soft_dice_matches_monais_per_sample_per_class_dice_loss(batch) -> None:
    logits, target = batch
    eps = 1e-6
    oracle = DiceLoss(
        softmax=True,
        to_onehot_y=True,
        include_background=True,
        smooth_nr=eps,
        smooth_dr=eps,
        batch=False,  # one score per sample and class, then the mean: the authors' averaging
        reduction="mean",
    )
    torch.testing.assert_close(SoftDice(eps)(logits, target), oracle(logits, target[:, None]))


def test_soft_iou_matches_monais_jaccard_loss(batch) -> None:
    # MONAI's Jaccard is (2 I + nr) / (2 U + dr), so its smoothing terms are twice ours.
    logits, target = batch
    eps = 1e-6
    oracle = DiceLoss(softmax=True, to_onehot_y=True, jaccard=True, smooth_nr=2 * eps, smooth_dr=2 * eps)
    torch.testing.assert_close(SoftIoU(eps)(logits, target), oracle(logits, target[:, None]))


@pytest.mark.parametrize(("alpha", "beta"), [(0.5, 0.5), (0.3, 0.7), (0.7, 0.3), (1.0, 1.0)])
def test_tversky_matches_monais_tversky_loss(batch, alpha: float, beta: float) -> None:
    logits, target = batch
    oracle = TverskyLoss(
        softmax=True, to_onehot_y=True, alpha=alpha, beta=beta, smooth_nr=1e-6, smooth_dr=1e-6, batch=False
    )
    torch.testing.assert_close(Tversky(alpha, beta)(logits, target), oracle(logits, target[:, None]))


def test_tversky_generalises_dice_and_iou(batch) -> None:
    logits, target = batch
    eps = 1e-6
    torch.testing.assert_close(Tversky(1.0, 1.0, eps)(logits, target), SoftIoU(eps)(logits, target))
    torch.testing.assert_close(Tversky(0.5, 0.5, eps)(logits, target), SoftDice(2 * eps)(logits, target))
    torch.testing.assert_close(
        Tversky(eps=eps)(logits, target), SoftDice(eps)(logits, target), atol=1e-6, rtol=0
    )


def test_hybrid_is_the_mean_of_focal_dice_and_iou(batch) -> None:
    logits, target = batch
    parts = Focal()(logits, target) + SoftDice()(logits, target) + SoftIoU()(logits, target)
    torch.testing.assert_close(Hybrid()(logits, target), parts / 3)


def test_a_perfect_prediction_has_near_zero_region_losses(batch) -> None:
    _, target = batch  # the trachea is absent from slice 1: eps / eps makes that pair count as perfect
    logits = 50 * _one_hot(target)
    for loss in (SoftDice(), SoftIoU(), Tversky(), Tversky(0.3, 0.7)):
        assert loss(logits, target).item() == pytest.approx(0.0, abs=1e-5), type(loss).__name__
    assert Focal()(logits, target).item() == pytest.approx(0.0, abs=1e-5)


def test_a_loss_given_the_wrong_shapes_says_which() -> None:
    with pytest.raises(ValueError, match=r"logits \(N, C, H, W\) and a target \(N, H, W\)"):
        SoftDice()(torch.zeros(2, 4, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.long))


# --- figures ----------------------------------------------------------------------------------------------


def _slices() -> tuple[np.ndarray, np.ndarray]:
    """Six noisy predictions of 12x12 masks; the trachea is absent from some slices and missed in one."""
    rng = np.random.default_rng(1)
    target = rng.integers(0, 4, size=(6, 12, 12))
    target[[1, 4]] = np.where(target[[1, 4]] == 3, 0, target[[1, 4]])  # no trachea in slices 1 and 4
    prediction = np.where(rng.random(target.shape) < 0.8, target, rng.integers(0, 4, size=target.shape))
    prediction[4] = np.where(prediction[4] == 3, 1, prediction[4])  # nor predicted in slice 4: absent there
    prediction[2] = np.where(prediction[2] == 3, 2, prediction[2])  # present in slice 2 but never predicted
    return prediction, target


def _score(prediction: np.ndarray, target: np.ndarray, absent: str = "one", step: int = 6) -> dict:
    scorer = PaperSegmentationScorer(CLASSES, absent=absent)
    for start in range(0, len(target), step):
        scorer.update(prediction[start : start + step], target[start : start + step])
    return scorer.compute()


def test_a_split_has_17_figures_so_train_and_test_with_their_losses_make_the_reports_36() -> None:
    figures = _score(*_slices())
    assert len(figures) == 17
    assert 2 * (len(figures) + 1) == 36


@pytest.mark.parametrize(("metric", "figure"), [(DiceMetric, "dice"), (MeanIoU, "iou")])
def test_per_slice_dice_and_iou_match_monai_with_empty_masks_counted_as_one(metric, figure) -> None:
    # MONAI with ignore_empty=False scores an empty mask 1 if nothing is predicted and 0 otherwise,
    # per slice, and reduction "mean_batch" averages slices per class: the paper's convention.
    prediction, target = _slices()
    oracle = metric(include_background=False, reduction="mean_batch", ignore_empty=False)
    oracle(_one_hot(torch.from_numpy(prediction)), _one_hot(torch.from_numpy(target)))
    expected = oracle.aggregate().numpy()
    figures = _score(prediction, target)
    got = [figures[f"{figure}/{name}"] for name in CLASSES[1:]]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert figures[f"mean_{figure}"] == pytest.approx(expected.mean())


def _zero_division(figure: str, prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(slice, class) pairs where ``figure`` is 0/0: nothing predicted, nothing true, or neither."""
    predicted = np.stack([(prediction == c).any(axis=(1, 2)) for c in (1, 2, 3)], axis=1)
    true = np.stack([(target == c).any(axis=(1, 2)) for c in (1, 2, 3)], axis=1)
    return {"precision": ~predicted, "recall": ~true}.get(figure, ~predicted & ~true)


@pytest.mark.parametrize("absent", ["one", "nan"])
def test_all_four_figures_match_scikit_learn_slice_by_slice(absent: str) -> None:
    prediction, target = _slices()
    oracles = {"precision": precision_score, "recall": recall_score, "dice": f1_score, "iou": jaccard_score}
    figures = _score(prediction, target, absent)
    for figure, oracle in oracles.items():
        per_slice = np.array(
            [
                oracle(t.ravel(), p.ravel(), labels=[1, 2, 3], average=None, zero_division=1.0)
                for p, t in zip(prediction, target, strict=True)
            ]
        )
        if absent == "nan":  # scikit-learn's 0/0 cases, NaN instead of 1 (its jaccard has no NaN option)
            per_slice[_zero_division(figure, prediction, target)] = np.nan
        expected = np.nanmean(per_slice, axis=0)
        got = [figures[f"{figure}/{name}"] for name in CLASSES[1:]]
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=figure)
        assert figures[f"mean_{figure}"] == pytest.approx(np.mean(got))
    assert figures["pixel_accuracy"] == pytest.approx(float((prediction == target).mean()))


def test_an_absent_class_counts_as_one_in_the_paper_and_is_left_out_with_nan() -> None:
    target = np.zeros((2, 4, 4), dtype=np.int64)
    target[:, :2] = 1
    target[0, 3, :2] = 3  # trachea in slice 0 only
    prediction = target.copy()
    prediction[0, 3, 1] = 0  # one trachea pixel of two found: Dice 2/3, IoU 1/2 in slice 0
    paper, core = _score(prediction, target, "one"), _score(prediction, target, "nan")
    assert paper["dice/trachea"] == pytest.approx((2 / 3 + 1) / 2)
    assert core["dice/trachea"] == pytest.approx(2 / 3)
    assert paper["iou/trachea"] == pytest.approx((1 / 2 + 1) / 2)
    assert paper["dice/right_lung"] == 1.0  # absent from both slices
    assert math.isnan(core["dice/right_lung"])
    assert core["mean_dice"] == pytest.approx((1 + 2 / 3) / 2)  # the NaN class is left out of the mean


def test_on_one_slice_absent_nan_gives_the_core_scorers_figures() -> None:
    prediction, target = _slices()
    core = SegmentationScorer(CLASSES)
    core.update(prediction[2:3], target[2:3])
    expected = core.compute()
    got = _score(prediction[2:3], target[2:3], "nan")
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, nan_ok=True), key


def test_merging_two_scorers_equals_one_scorer_over_all_batches() -> None:
    prediction, target = _slices()
    first, second = PaperSegmentationScorer(CLASSES), PaperSegmentationScorer(CLASSES)
    first.update(prediction[:2], target[:2])
    second.update(prediction[2:], target[2:])
    first.merge(second.state)
    assert first.compute() == pytest.approx(_score(prediction, target))


def test_figures_do_not_depend_on_the_batch_size() -> None:
    prediction, target = _slices()
    assert _score(prediction, target, step=2) == pytest.approx(_score(prediction, target, step=6))


def test_logits_are_scored_by_their_argmax() -> None:
    prediction, target = _slices()
    logits = _one_hot(torch.from_numpy(prediction)) * 5
    scorer = PaperSegmentationScorer(CLASSES)
    scorer.update(logits, torch.from_numpy(target))
    assert scorer.compute() == pytest.approx(_score(prediction, target))


def test_a_perfect_prediction_scores_one_everywhere() -> None:
    _, target = _slices()
    assert all(value == 1.0 for value in _score(target, target).values())


def test_bad_scorer_input_gets_a_message() -> None:
    with pytest.raises(ValueError, match="absent must be"):
        PaperSegmentationScorer(CLASSES, absent="zero")
    with pytest.raises(ValueError, match="matching the target"):
        PaperSegmentationScorer(CLASSES).update(np.zeros((2, 8, 8), int), np.zeros((2, 8, 9), int))


# --- ranking ----------------------------------------------------------------------------------------------


def test_models_are_ranked_by_their_best_epoch_and_the_mean_of_their_ten_best() -> None:
    curve = [0.1 * i for i in range(1, 13)] + [0.05]  # 13 epochs, best at epoch 12
    figures = ranking_figures(curve)
    assert figures["best"] == pytest.approx(1.2)
    assert figures["best_epoch"] == 12
    assert figures["mean_top10"] == pytest.approx(np.mean([0.1 * i for i in range(3, 13)]))


def test_ranking_short_curves_lower_is_better_and_nan_epochs() -> None:
    assert ranking_figures([0.4, float("nan"), 0.6])["mean_top10"] == pytest.approx(0.5)
    loss = ranking_figures([0.9, 0.2, 0.3], top=2, higher_is_better=False)
    assert (loss["best"], loss["best_epoch"], loss["mean_top2"]) == (0.2, 2, pytest.approx(0.25))
    with pytest.raises(ValueError, match="at least one epoch"):
        ranking_figures([float("nan")])
