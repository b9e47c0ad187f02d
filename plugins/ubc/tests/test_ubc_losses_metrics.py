"""The CE + Dice loss, its semi-supervised use (which parts learn from which samples), and the paper's metrics
checked against scikit-learn and a hand-computed Wilson interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from medkit_ubc.losses import UbcLoss, soft_dice_loss
from medkit_ubc.metrics import UbcScorer, dice_per_image, roc_auc
from medkit_ubc.models import ubc
from medkit_ubc.slices import NO_LABEL


def test_soft_dice_is_smps_form_by_default_and_equation_3_as_printed_on_request():
    logits = torch.tensor([[[[0.0, 10.0], [-10.0, 0.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    p = torch.sigmoid(logits)
    intersection, total = (p * target).sum(), p.sum() + target.sum()
    smp_form = 1 - (2 * intersection + 1) / (total + 1)
    printed = 1 - 2 * (intersection + 1) / (total + 1)  # paper equation 3, eps = 1
    assert soft_dice_loss(logits, target).item() == pytest.approx(smp_form.item())
    assert soft_dice_loss(logits, target, formula="paper").item() == pytest.approx(printed.item())
    # a perfect prediction: 0 in smp's form; an empty mask predicted empty: 0 vs -1 as printed
    full, empty = torch.full((1, 1, 4, 4), 20.0), torch.full((1, 1, 4, 4), -20.0)
    assert soft_dice_loss(full, torch.ones(1, 1, 4, 4)).item() == pytest.approx(0, abs=1e-6)
    assert soft_dice_loss(empty, torch.zeros(1, 1, 4, 4)).item() == pytest.approx(0, abs=1e-6)
    assert soft_dice_loss(empty, torch.zeros(1, 1, 4, 4), formula="paper").item() == pytest.approx(
        -1, abs=1e-6
    )


def test_the_loss_uses_the_chosen_dice_formula():
    output = {"logits": torch.zeros(1, 2), "mask": torch.zeros(1, 1, 4, 4)}
    batch = {
        "label": torch.tensor([0]),
        "mask": torch.ones(1, 4, 4),
        "has_mask": torch.ones(1, dtype=torch.bool),
    }
    ce = torch.log(torch.tensor(2.0))
    for formula in ("smp", "paper"):
        dice = soft_dice_loss(output["mask"], batch["mask"][:, None], formula=formula)
        loss = UbcLoss(0.5, dice_formula=formula)(output, batch)
        assert loss.item() == pytest.approx((0.5 * ce + 0.5 * dice).item(), rel=1e-6)
    assert UbcLoss(dice_formula="smp")(output, batch) != UbcLoss(dice_formula="paper")(output, batch)


def test_the_loss_is_alpha_ce_plus_one_minus_alpha_dice():
    torch.manual_seed(0)
    output = {"logits": torch.randn(3, 2), "mask": torch.randn(3, 1, 8, 8)}
    batch = {
        "label": torch.tensor([0, 1, 1]),
        "mask": (torch.rand(3, 8, 8) > 0.5).float(),
        "has_mask": torch.ones(3, dtype=torch.bool),
    }
    ce = torch.nn.functional.cross_entropy(output["logits"], batch["label"])
    dice = soft_dice_loss(output["mask"], batch["mask"][:, None])
    assert UbcLoss(0.3)(output, batch).item() == pytest.approx((0.3 * ce + 0.7 * dice).item(), rel=1e-6)


def gradients(kind: str) -> dict[str, bool]:
    """Which parts of a UBC get gradient from one batch of one kind of sample."""
    torch.manual_seed(0)
    model = ubc(encoder="resnet18")
    x = torch.randn(2, 1, 32, 32)
    mask = (torch.rand(2, 32, 32) > 0.7).float()
    batch = {
        "labelled_no_mask": {
            "label": torch.tensor([0, 1]),
            "mask": mask * 0,
            "has_mask": torch.tensor([False, False]),
        },
        "mask_no_label": {
            "label": torch.tensor([NO_LABEL, NO_LABEL]),
            "mask": mask,
            "has_mask": torch.tensor([True, True]),
        },
        "both": {"label": torch.tensor([0, 1]), "mask": mask, "has_mask": torch.tensor([True, True])},
    }[kind]
    UbcLoss()(model(x), batch).backward()

    def learns(module: torch.nn.Module) -> bool:
        assert all(p.grad is not None for p in module.parameters())  # every part joins the graph (DDP)
        return any(p.grad.abs().sum() > 0 for p in module.parameters())

    return {
        "encoder": learns(model.encoder),
        "decoder": learns(model.decoder),
        "head": learns(model.segmentation_head),
        "classifier": learns(model.classifier),
    }


def test_a_sample_without_a_mask_trains_only_encoder_and_classifier():
    assert gradients("labelled_no_mask") == {
        "encoder": True,
        "decoder": False,
        "head": False,
        "classifier": True,
    }


def test_a_sample_with_a_mask_but_no_label_trains_only_encoder_and_decoder():
    assert gradients("mask_no_label") == {"encoder": True, "decoder": True, "head": True, "classifier": False}


def test_a_fully_annotated_sample_trains_every_part():
    assert all(gradients("both").values())


def test_roc_auc_and_balanced_accuracy_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) * 0.6 + labels * 0.3, 1)  # rounded: many ties
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert math.isnan(roc_auc([0.1, 0.9], [1, 1]))
    logits = torch.from_numpy(np.stack([1 - scores, scores], axis=1)).float()
    scorer = UbcScorer(("a", "b"))
    for part in range(4):  # batch by batch, with an unlabelled sample that must not count
        sl = slice(50 * part, 50 * (part + 1))
        target = {"label": torch.from_numpy(np.append(labels[sl], NO_LABEL))}
        scorer.update({"logits": torch.cat([logits[sl], torch.zeros(1, 2)])}, target)
    figures = scorer.compute()
    predicted = (scores > 1 - scores).astype(int)
    assert figures["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert figures["accuracy"] == pytest.approx((predicted == labels).mean())
    assert figures["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))


def test_accuracy_carries_the_95_percent_wilson_interval():
    scorer = UbcScorer(("a", "b"))
    logits = torch.tensor([[0.0, 1.0]] * 8 + [[1.0, 0.0]] * 2)
    scorer.update({"logits": logits}, {"label": torch.ones(10, dtype=torch.long)})
    figures = scorer.compute()
    # 8 of 10: the Wilson interval by hand, (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    assert (figures["accuracy_ci_low"], figures["accuracy_ci_high"]) == pytest.approx(
        (0.4902, 0.9433), abs=1e-4
    )


def test_dice_is_per_image_and_only_over_images_with_masks():
    truth = np.zeros((2, 4, 4))
    truth[0, :2] = 1
    probability = np.zeros((2, 4, 4))
    probability[0, :1] = 0.9
    assert dice_per_image(probability, truth).tolist() == pytest.approx([2 * 4 / (4 + 8), 1.0])
    scorer = UbcScorer(("a", "b"))
    scorer.update(
        {
            "logits": torch.zeros(2, 2),
            "mask": torch.logit(torch.from_numpy(probability).clamp(1e-4, 1 - 1e-4))[:, None],
        },
        {
            "label": torch.tensor([0, 1]),
            "mask": torch.from_numpy(truth),
            "has_mask": torch.tensor([True, False]),
        },
    )
    assert scorer.compute()["dice"] == pytest.approx(2 / 3)
