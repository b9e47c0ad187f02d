"""The `stylegan2` architecture: a conditional StyleGAN2 generator and discriminator built as one pair.

`--arch stylegan2` names the pair; `medkit describe gan-aug` counts its parameters at the CPU defaults of
`config.NetworkConfig` (the paper's 256 px networks: `configs/paper.yaml`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medkit import Model

from .discriminator import Discriminator
from .generator import Generator

CPU_DEFAULTS: dict[str, Any] = {
    "resolution": 32,
    "num_classes": 6,
    "z_dim": 64,
    "w_dim": 64,
    "mapping_layers": 4,
    "channel_base": 2048,
    "channel_max": 64,
    "embed_dim": 64,
    "projection": True,
}


class StyleGan2Pair(nn.Module, Model):
    """G and D of one conditional StyleGAN2, so that one name builds, counts and checkpoints both."""

    name = "stylegan2"
    task = "generation"

    def __init__(self, generator: Generator, discriminator: Discriminator) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.generator(z, c)


def build_networks(
    resolution: int,
    num_classes: int,
    z_dim: int,
    w_dim: int,
    mapping_layers: int,
    channel_base: int,
    channel_max: int,
    embed_dim: int,
    projection: bool,
) -> tuple[Generator, Discriminator]:
    generator = Generator(
        resolution,
        num_classes,
        z_dim=z_dim,
        w_dim=w_dim,
        mapping_layers=mapping_layers,
        channel_base=channel_base,
        channel_max=channel_max,
    )
    discriminator = Discriminator(
        resolution,
        num_classes,
        channel_base=channel_base,
        channel_max=channel_max,
        embed_dim=embed_dim,
        projection=projection,
    )
    return generator, discriminator


def stylegan2(**options: Any) -> StyleGan2Pair:
    """The pair at `options` over the CPU defaults (keys of NetworkConfig plus num_classes)."""
    unknown = set(options) - set(CPU_DEFAULTS)
    if unknown:
        raise TypeError(f"stylegan2 got unknown options {sorted(unknown)}; known: {sorted(CPU_DEFAULTS)}")
    return StyleGan2Pair(*build_networks(**{**CPU_DEFAULTS, **options}))
