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


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Dice = 1 - 2(sum(m_hat * m) + eps) / (sum(m_hat + m) + eps) over the whole batch (spec, Training),
    with m_hat = sigmoid(logits); ``target`` is a {0, 1} mask of the same shape (resized when coarser)."""
    if target.shape[-2:] != logits.shape[-2:]:
        # a deep-supervision scale: the mask's share of each coarse pixel is its soft target
        target = F.adaptive_avg_pool2d(target.float(), logits.shape[-2:])
    probability = torch.sigmoid(logits.float())
    target = target.float()
    intersection = (probability * target).sum()
    return 1 - (2 * intersection + eps) / (probability.sum() + target.sum() + eps)


class UbcLoss:
    """alpha * CE + (1 - alpha) * soft Dice, with deep supervision averaged over the decoder's scales."""

    def __init__(self, alpha: float = 0.5, deep_weight: float = 0.5) -> None:
        self.alpha, self.deep_weight = alpha, deep_weight

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
                dice = soft_dice_loss(output["mask"][has_mask], mask)
                deep: Sequence[torch.Tensor] = output.get("deep", [])
                if deep:
                    coarse = torch.stack([soft_dice_loss(d[has_mask], mask) for d in deep]).mean()
                    dice = (1 - self.deep_weight) * dice + self.deep_weight * coarse
                terms.append((1 - self.alpha) * dice)
        return torch.stack([t.float() for t in terms]).sum()
