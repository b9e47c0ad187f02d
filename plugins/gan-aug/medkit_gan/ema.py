"""Exponential moving average of the generator's weights, the network StyleGAN2 samples from.

StyleGAN2 (Karras et al. 2020, after Karras et al. 2018) evaluates and generates with a running average of G's
weights: smoother than G itself, so FID is lower. The decay is given as a half-life in images shown to D, so it
does not depend on the batch size, and an optional ramp-up shortens the half-life at the start of training, when
the early weights are not worth averaging in (StyleGAN2-ADA: ``ema_rampup`` 0.05).
"""

from __future__ import annotations

import copy

import torch


def ema_beta(batch_size: int, images_seen: int, half_life_images: float, rampup: float | None) -> float:
    """The weight kept from the average at this step: ``0.5 ** (batch / half_life)``, the half-life capped at
    ``images_seen * rampup`` while ramping up."""
    half_life = float(half_life_images)
    if rampup is not None:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


def make_ema(generator: torch.nn.Module) -> torch.nn.Module:
    """A frozen deep copy of ``generator`` in eval mode, to be updated with :func:`update_ema`."""
    ema = copy.deepcopy(generator).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: torch.nn.Module, generator: torch.nn.Module, beta: float) -> None:
    """Move every parameter of ``ema`` towards ``generator``'s (``ema = g + beta * (ema - g)``) and copy the
    buffers (the tracked average w, noise constants) as they are: buffers are statistics, not weights."""
    for p_ema, p in zip(ema.parameters(), generator.parameters(), strict=True):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), generator.buffers(), strict=True):
        b_ema.copy_(b)
