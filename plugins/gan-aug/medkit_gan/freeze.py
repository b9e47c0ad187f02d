"""Freezing the first blocks of G and D during transfer, with the paper's naming (``--freeze d1,g2``).

Blocks are counted as in FreezeD (Mo et al. 2020) and paper 001: g1 is the generator's 4x4 block (learned
constant, its conv, noise and toRGB) and counts upwards in resolution; d1 is the discriminator block that sees
the image first (fromRGB included) and counts downwards to the epilogue. "g2" freezes g1 and g2: a number names
how many of the first blocks keep the base model's weights. The mapping network and the discriminator's heads
are never frozen.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from medkit import UsageError

__all__ = ["FreezeSpec", "apply_freeze", "parse_freeze"]

_TOKEN = re.compile(r"([gd])(\d+)")


@dataclass(frozen=True)
class FreezeSpec:
    """How many of the first blocks of each network are frozen (0: none)."""

    generator: int = 0
    discriminator: int = 0

    def __str__(self) -> str:
        parts = [f"d{self.discriminator}"] * bool(self.discriminator) + [f"g{self.generator}"] * bool(
            self.generator
        )
        return ",".join(parts) or "none"


def _valid_names(generator_blocks: int, discriminator_blocks: int) -> str:
    return (
        f"valid names here: g1..g{generator_blocks} (generator, from 4x4 up) and d1..d{discriminator_blocks} "
        "(discriminator, from the image down), at most one of each, e.g. --freeze d1,g2, or --freeze none"
    )


def parse_freeze(
    spec: str | Sequence[str] | None, generator_blocks: int, discriminator_blocks: int
) -> FreezeSpec:
    """``"d1,g2"``, ``"g2"``, ``""``, ``"none"``, None or ``["d1", "g2"]`` -> FreezeSpec, or a UsageError
    that lists the valid names for networks with these block counts."""
    if spec is None:
        return FreezeSpec()
    tokens = (
        spec.split(",") if isinstance(spec, str) else [part for item in spec for part in str(item).split(",")]
    )
    tokens = [token.strip().lower() for token in tokens if token.strip()]
    if tokens in ([], ["none"]):
        return FreezeSpec()
    counts: dict[str, int] = {}
    limits = {"g": generator_blocks, "d": discriminator_blocks}
    for token in tokens:
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise UsageError(f"--freeze: {token!r} is not a block name; {_valid_names(*limits.values())}")
        letter, number = match[1], int(match[2])
        if letter in counts:
            raise UsageError(
                f"--freeze names the {'generator' if letter == 'g' else 'discriminator'} twice "
                f"({letter}{counts[letter]} and {token}); {letter}N already freezes blocks 1..N. "
                f"{_valid_names(*limits.values())}"
            )
        if not 1 <= number <= limits[letter]:
            raise UsageError(
                f"--freeze: {token!r} names no block at this resolution; {_valid_names(*limits.values())}"
            )
        counts[letter] = number
    return FreezeSpec(generator=counts.get("g", 0), discriminator=counts.get("d", 0))


def apply_freeze(generator: nn.Module, discriminator: nn.Module, spec: FreezeSpec) -> list[str]:
    """Set requires_grad=False on the parameters of the first ``spec.generator`` blocks of
    ``generator.synthesis.blocks`` and the first ``spec.discriminator`` of ``discriminator.blocks``; returns
    a readable line per frozen block. Gradients still flow through frozen blocks to their inputs."""
    g_blocks, d_blocks = generator.synthesis.blocks, discriminator.blocks
    if spec.generator > len(g_blocks) or spec.discriminator > len(d_blocks):
        raise UsageError(
            f"--freeze {spec} names blocks that do not exist; {_valid_names(len(g_blocks), len(d_blocks))}"
        )
    frozen = []
    for index, block in enumerate(g_blocks[: spec.generator]):
        block.requires_grad_(False)
        res = block.resolution
        frozen.append(f"g{index + 1}: generator {res}x{res} block ({_count(block)} parameters)")
    for index, block in enumerate(d_blocks[: spec.discriminator]):
        block.requires_grad_(False)
        res = block.resolution
        what = "epilogue" if index == len(d_blocks) - 1 else "block" + " with fromRGB" * (index == 0)
        frozen.append(f"d{index + 1}: discriminator {res}x{res} {what} ({_count(block)} parameters)")
    return frozen


def _count(module: nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()):,}"
