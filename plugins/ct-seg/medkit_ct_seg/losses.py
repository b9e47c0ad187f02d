"""The losses of paper 002's loss study (report section 3; spec "Training facts"), selectable by name.

Every loss takes raw ``logits`` (N, C, H, W) and an int64 class-index ``target`` (N, H, W) and returns a
scalar. The region losses (Dice, IoU, Tversky) follow the authors' definitions: softmax over all classes,
background included, a score per sample and class with ``eps`` added to numerator and denominator, and the
loss is one minus the mean of those N*C scores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4 or target.ndim != 3 or logits.shape[:1] + logits.shape[2:] != target.shape:
        raise ValueError(
            f"a ct-seg loss needs logits (N, C, H, W) and a target (N, H, W) of class indices; "
            f"got logits {tuple(logits.shape)} and target {tuple(target.shape)}"
        )


def _probabilities_and_one_hot(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Softmax over all classes (background included) and the target as one-hot planes, both (N, C, H, W)."""
    _check(logits, target)
    one_hot = F.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    return logits.softmax(dim=1), one_hot


def _overlaps(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per sample and class, each (N, C): the soft intersection ``sum p g``, ``sum p`` and ``sum g``."""
    p, g = _probabilities_and_one_hot(logits, target)
    return (p * g).sum(dim=(2, 3)), p.sum(dim=(2, 3)), g.sum(dim=(2, 3))


class CrossEntropy(nn.Module):
    """Pixel-wise cross-entropy averaged over all N*H*W pixels (torch's ``cross_entropy``)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(logits, target)
        return F.cross_entropy(logits, target.long())


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy with one weight per class, against the class imbalance (report section 3).

    As in torch, the mean divides by the summed weights of the target pixels, so a uniform weight gives
    plain cross-entropy. :func:`class_weights_from_counts` derives weights from a data set.
    """

    def __init__(self, weights: Sequence[float] | torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(logits, target)
        if len(self.weights) != logits.shape[1]:
            raise ValueError(
                f"{len(self.weights)} class weights given for logits with {logits.shape[1]} classes"
            )
        return F.cross_entropy(logits, target.long(), weight=self.weights.to(logits.dtype))


def class_weights_from_counts(
    pixel_counts: Sequence[float] | torch.Tensor, power: float = 1.0
) -> torch.Tensor:
    """Inverse-frequency class weights normalised to mean 1: ``w_c = n_c^-power / mean_k(n_k^-power)``.

    ``pixel_counts[c]`` is the number (or share) of pixels of class ``c`` in the training data; only the
    ratios matter. On the LUNA16 balance 87.1 : 5.965 : 6.836 : 0.102 the trachea gets the largest weight.
    ``power`` 1 is plain inverse frequency; 0.5 (inverse square root) tempers it, so a rare class is found
    without being painted over its neighbours (a weight w moves the decision threshold by a factor w).
    """
    counts = torch.as_tensor(pixel_counts, dtype=torch.float64)
    if counts.ndim != 1 or len(counts) == 0:
        raise ValueError(f"pixel_counts must be a flat list with one count per class, got {pixel_counts!r}")
    if (counts <= 0).any():
        missing = [i for i, n in enumerate(counts.tolist()) if n <= 0]
        raise ValueError(
            f"class(es) {missing} have no pixels in the data, so they have no inverse-frequency weight; "
            "pass the weights explicitly or check the masks' label values"
        )
    inverse = counts**-power
    return (inverse / inverse.mean()).float()


class Focal(nn.Module):
    """Focal loss on softmax probabilities, as in the authors' code (spec "Training facts").

    With ``p = softmax(logits) + eps`` and one-hot target ``g``, the loss is the mean over all N*C*H*W
    entries of ``-g * (1 - p)**gamma * log(p)``. Only the true class of each pixel contributes, so the value
    is the usual per-pixel focal loss ``-(1 - p_t)**gamma * log(p_t)`` averaged over N*H*W and divided by C.
    """

    def __init__(self, gamma: float = 2.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma, self.eps = gamma, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, g = _probabilities_and_one_hot(logits, target)
        p = p + self.eps
        # p + eps can pass 1; clamping keeps a fractional gamma away from negative bases.
        return (-g * (1 - p).clamp_min(0) ** self.gamma * p.log()).mean()


class RegionLoss(nn.Module, ABC):
    """``1 - mean`` over samples and classes of a soft overlap score (report section 3); subclasses give the
    score from the soft intersection ``I = sum p g``, ``sum p`` and ``sum g`` (each (N, C))."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1 - self.score(*_overlaps(logits, target)).mean()

    @abstractmethod
    def score(self, intersection: torch.Tensor, sum_p: torch.Tensor, sum_g: torch.Tensor) -> torch.Tensor:
        """Given by each variant."""


class SoftDice(RegionLoss):
    """Score ``(2 I + eps) / (sum p + sum g + eps)``, the authors' soft Dice."""

    def score(self, intersection: torch.Tensor, sum_p: torch.Tensor, sum_g: torch.Tensor) -> torch.Tensor:
        return (2 * intersection + self.eps) / (sum_p + sum_g + self.eps)


class SoftIoU(RegionLoss):
    """Score ``(I + eps) / (sum(p + g - p g) + eps)``, the authors' soft IoU."""

    def score(self, intersection: torch.Tensor, sum_p: torch.Tensor, sum_g: torch.Tensor) -> torch.Tensor:
        return (intersection + self.eps) / (sum_p + sum_g - intersection + self.eps)


class Tversky(RegionLoss):
    """Score ``(I + eps) / (I + alpha FP + beta FN + eps)`` with ``FP = sum p (1 - g)``, ``FN = sum (1 - p) g``.

    The report calls it a generalisation of Dice and IoU: ``alpha = beta = 1`` is exactly ``SoftIoU(eps)``,
    and ``alpha = beta = 0.5`` is exactly ``SoftDice(2 * eps)`` (numerator and denominator doubled).
    """

    def __init__(self, alpha: float = 0.5, beta: float = 0.5, eps: float = 1e-6) -> None:
        super().__init__(eps)
        self.alpha, self.beta = alpha, beta

    def score(self, intersection: torch.Tensor, sum_p: torch.Tensor, sum_g: torch.Tensor) -> torch.Tensor:
        fp, fn = sum_p - intersection, sum_g - intersection
        return (intersection + self.eps) / (intersection + self.alpha * fp + self.beta * fn + self.eps)


class Hybrid(nn.Module):
    """The report's hybrid loss: the plain mean of focal, soft Dice and soft IoU (spec "Training facts")."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.parts = nn.ModuleList([Focal(eps=eps), SoftDice(eps=eps), SoftIoU(eps=eps)])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.stack([part(logits, target) for part in self.parts]).mean()


LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropy,
    "weighted_ce": WeightedCrossEntropy,
    "focal": Focal,
    "dice": SoftDice,
    "iou": SoftIoU,
    "tversky": Tversky,
    "hybrid": Hybrid,
}
