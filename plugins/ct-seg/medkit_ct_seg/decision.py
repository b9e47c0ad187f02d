"""Removing the class weights' bias from a weighted-loss model's decision (logit adjustment).

A network trained with class-weighted cross-entropy learns posteriors scaled by the weights,
``p_w(c | x) ~ w_c p(c | x)``, so at inference it over-calls every class whose weight is above the background's:
the lungs' boundaries are painted outward (precision below recall) while the weights were meant only to make
the thin airway learnable. Subtracting ``share * log(w_c)`` from class ``c``'s logit at inference removes that
share of the bias (Menon et al. 2021, "Long-tail learning via logit adjustment"): ``share=1`` gives the plain
cross-entropy's decision, ``share=0`` leaves the weighted one.

How much to remove is an empirical question (a fixed share helped one run and cost another the airway's recall),
so by default the train recipe chooses the share after training, on the training slices: the share of
:data:`SHARES` whose decisions score best there (0 included, so the choice never scores worse on them).

The offset lives on the model as a buffer, so it travels in every checkpoint, and is applied by a forward hook
only in eval mode: training's loss sees raw logits; `predict` and an export see adjusted ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

OFFSET_BUFFER = "decision_offset"
SHARES = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)  # the shares the train recipe chooses from


def weight_offset(weights: torch.Tensor, share: float) -> torch.Tensor:
    """``share * log(w)`` per class: the logit offset that removes ``share`` of the weights' bias."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share={share}: give the share of the weights' bias to remove, from 0 to 1")
    return share * torch.as_tensor(weights, dtype=torch.float32).log()


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
def figures_by_share(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    weights: torch.Tensor,
    make_scorer: Callable[[], Any],
    shares: Iterable[float] = SHARES,
    device: str | torch.device = "cpu",
) -> dict[float, dict[str, float]]:
    """Each share's figures on ``batches`` ({"image", "mask"}), running the network once per batch. ``model``
    must decide without an offset of its own (none attached, or zeros)."""
    offsets = {share: weight_offset(weights, share).view(1, -1, 1, 1) for share in shares}
    scorers = {share: make_scorer() for share in offsets}
    model.eval()
    for batch in batches:
        logits = model(batch["image"].to(device)).float().cpu()
        for share, scorer in scorers.items():
            scorer.update(logits - offsets[share], batch["mask"])
    return {share: scorer.compute() for share, scorer in scorers.items()}
