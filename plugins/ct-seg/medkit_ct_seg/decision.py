"""Removing the class weights' bias from a weighted-loss model's decision (logit adjustment).

A network trained with class-weighted cross-entropy learns posteriors scaled by the weights,
``p_w(c | x) ~ w_c p(c | x)``, so at inference it over-calls every class weighted above the background: the
lungs' boundaries are painted outward (precision below recall) while the weights were meant only to make the thin
airway learnable. Subtracting ``s_c * log(w_c / w_0)`` from class ``c``'s logit at inference removes the share
``s_c`` of that bias (Menon et al. 2021, "Long-tail learning via logit adjustment"); shares of 1 give the plain
cross-entropy's decision, 0 the weighted one.

How much to remove is an empirical question, and not the same for every class (removing the lungs' bias sharpens
their boundaries; removing the airway's loses its recall), so by default the train recipe chooses the shares after
training on the training slices (:func:`choose_shares`): the best common share of :data:`SHARES`, then one sweep
over the classes, each class's share chosen with the others kept. Zero is among the candidates, so the choice
never scores worse on those slices than the weighted decision.

The offset lives on the model as a buffer, so it travels in every checkpoint, and is applied by a forward hook
only in eval mode: training's loss sees raw logits; `predict` and an export see adjusted ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

OFFSET_BUFFER = "decision_offset"
SHARES = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)  # the shares the train recipe chooses from


def weight_offset(weights: torch.Tensor, shares: float | Sequence[float]) -> torch.Tensor:
    """``s_c * log(w_c / w_0)`` per class (0 for the background, class 0): the logit offset that removes the
    share ``s_c`` of the weights' bias; ``shares`` is one share for every class or one per class."""
    log_ratio = torch.as_tensor(weights, dtype=torch.float32).log()
    log_ratio = log_ratio - log_ratio[0]
    per_class = torch.as_tensor(shares, dtype=torch.float32).expand(len(log_ratio))
    if ((per_class < 0) | (per_class > 1)).any():
        raise ValueError(f"shares={shares}: give the share of the weights' bias to remove, from 0 to 1")
    return per_class * log_ratio


def _subtract_offset(module: nn.Module, inputs: Any, logits: torch.Tensor) -> torch.Tensor:
    if module.training:
        return logits
    offset = getattr(module, OFFSET_BUFFER)
    return logits - offset.to(logits.dtype).view(1, -1, *([1] * (logits.ndim - 2)))


def attach_offset(model: nn.Module, offset: torch.Tensor) -> nn.Module:
    """Give ``model`` a per-class logit offset subtracted from its outputs in eval mode; returns ``model``."""
    offset = torch.as_tensor(offset, dtype=torch.float32).flatten()
    if hasattr(model, OFFSET_BUFFER):
        getattr(model, OFFSET_BUFFER).copy_(offset)
        return model
    model.register_buffer(OFFSET_BUFFER, offset)
    model.register_forward_hook(_subtract_offset)
    return model


def attach_stored_offset(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Before loading ``state`` (a state_dict) into a freshly built model: attach the offset it carries, if any
    (checkpoints of runs without class weights, or from before the offset existed, carry none)."""
    if OFFSET_BUFFER in state:
        attach_offset(model, torch.zeros_like(state[OFFSET_BUFFER]))
    return model


@torch.inference_mode()
def collect_logits(
    model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits (float16, on the CPU: the calibration keeps them all) and masks of ``batches``. ``model``
    must decide without an offset of its own (none attached, or zeros)."""
    model.eval()
    logits, masks = [], []
    for batch in batches:
        logits.append(model(batch["image"].to(device)).to("cpu", torch.float16))
        masks.append(batch["mask"])
    return torch.cat(logits), torch.cat(masks)


def score_offset(
    logits: torch.Tensor, masks: torch.Tensor, offset: torch.Tensor, make_scorer: Callable[[], Any]
) -> dict[str, float]:
    """The figures of the decisions ``argmax(logits - offset)`` against ``masks``."""
    scorer = make_scorer()
    for start in range(0, len(logits), 64):
        chunk = logits[start : start + 64].float() - offset.view(1, -1, 1, 1)
        scorer.update(chunk, masks[start : start + 64])
    return scorer.compute()


def choose_shares(
    logits: torch.Tensor,
    masks: torch.Tensor,
    weights: torch.Tensor,
    make_scorer: Callable[[], Any],
    names: Sequence[str] | None = None,
    figure: str = "mean_dice",
    candidates: Sequence[float] = SHARES,
) -> tuple[list[float], dict[str, dict[str, float]]]:
    """Per-class shares that maximise ``figure`` on (``logits``, ``masks``): the best common share, then one
    sweep over the foreground classes (each share chosen with the others kept). Ties keep the smaller share.
    Returns the shares (the background's is 0: it is the reference) and each step's figure per candidate."""

    def value(shares: Sequence[float]) -> float:
        return score_offset(logits, masks, weight_offset(weights, shares), make_scorer)[figure]

    classes = len(weights)
    common = {share: value([share] * classes) for share in candidates}
    best = max(common, key=common.get)  # first maximum: candidates run from the smallest share
    shares, trace = (
        [0.0] + [best] * (classes - 1),
        {"common": {str(s): round(v, 5) for s, v in common.items()}},
    )
    for c in range(1, classes):
        tried = {share: value([*shares[:c], share, *shares[c + 1 :]]) for share in candidates}
        shares[c] = max(tried, key=tried.get)
        trace[names[c] if names else f"class {c}"] = {str(s): round(v, 5) for s, v in tried.items()}
    return shares, trace
