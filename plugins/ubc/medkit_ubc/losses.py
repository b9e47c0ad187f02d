"""The multitask loss of paper 003 (section 2): L = alpha * CE(class) + (1 - alpha) * SoftDice(mask).

A batch may mix three kinds of sample (the semi-supervised use the paper proposes in its conclusion): labelled
with a mask (both terms), labelled without a mask (``has_mask`` false: CE only, so only encoder and classifier
learn from it) and masked without a label (``label`` -1: Dice only, so only encoder and decoder learn). Each term
is averaged over the samples that have its target; a term with no such sample in the batch is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .slices import NO_LABEL


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0, formula: str = "smp"
) -> torch.Tensor:
    """Soft Dice loss over the whole batch at once (paper equation 3 sums "over all axes"), m_hat = sigmoid(logits),
    ``target`` a {0, 1} mask of the same shape (resized when coarser).

    ``formula="smp"``: 1 - (2 sum(m_hat m) + eps) / (sum(m_hat + m) + eps), smp's DiceLoss (the authors built on
    smp), 0 for a perfect prediction, also of an empty mask. ``"paper"``: 1 - 2 (sum(m_hat m) + eps) /
    (sum(m_hat + m) + eps), equation 3 as printed: eps is doubled in the numerator, so an empty mask predicted
    empty scores -1. Both agree up to eps / sum(m_hat + m), a few thousandths on a lesion of a few hundred pixels."""
    if target.shape[-2:] != logits.shape[-2:]:
        # a deep-supervision scale: the mask's share of each coarse pixel is its soft target
        target = F.adaptive_avg_pool2d(target.float(), logits.shape[-2:])
    probability = torch.sigmoid(logits.float())
    target = target.float()
    intersection = (probability * target).sum()
    numerator = 2 * (intersection + eps) if formula == "paper" else 2 * intersection + eps
    return 1 - numerator / (probability.sum() + target.sum() + eps)


class UbcLoss:
    """alpha * CE + (1 - alpha) * soft Dice, with deep supervision averaged over the decoder's scales."""

    def __init__(self, alpha: float = 0.5, deep_weight: float = 0.5, dice_formula: str = "smp") -> None:
        self.alpha, self.deep_weight, self.dice_formula = alpha, deep_weight, dice_formula

    def __call__(self, output: dict[str, Any], batch: dict[str, Any]) -> torch.Tensor:
        logits = output["logits"]
        labels = batch["label"]
        labelled = labels != NO_LABEL
        # a head without targets in this batch still joins the graph with weight 0, so that every parameter
        # has a (zero) gradient and DDP's reduction does not wait for parameters that were not used
        terms: list[torch.Tensor] = [logits.sum() * 0.0]
        if labelled.any():
            weight = self.alpha if "mask" in output else 1.0  # the baseline learns from CE alone
            terms.append(weight * F.cross_entropy(logits[labelled].float(), labels[labelled]))
        if "mask" in output:
            terms += [output["mask"].sum() * 0.0, *(d.sum() * 0.0 for d in output.get("deep", []))]
            has_mask = batch["has_mask"].bool()
            if has_mask.any():
                mask = batch["mask"][has_mask][:, None]
                dice = soft_dice_loss(output["mask"][has_mask], mask, formula=self.dice_formula)
                deep: Sequence[torch.Tensor] = output.get("deep", [])
                if deep:
                    coarse = torch.stack(
                        [soft_dice_loss(d[has_mask], mask, formula=self.dice_formula) for d in deep]
                    ).mean()
                    dice = (1 - self.deep_weight) * dice + self.deep_weight * coarse
                terms.append((1 - self.alpha) * dice)
        return torch.stack([t.float() for t in terms]).sum()
