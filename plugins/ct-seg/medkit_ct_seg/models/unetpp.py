"""U-Net++ and the report's Attention U-Net++ V1-V4 (spec "Architectures", architecture study).

Notation of U-Net++: X(i, 0) is the encoder node at level i (width f_i = 2^i b, resolution H / 2^i);
X(i, j), j >= 1, is the nested node over concat[X(i, 0..j-1), Up(X(i+1, j-1))]. The head reads X(0, 4).
The attention variants gate same-level maps with additive attention gates AG1..AG4, one per level.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegmentationNet, check_width, conv_bn

LEVELS = 5


class AttentionGate(nn.Module):
    """Additive attention gate: x * sigmoid(BN(conv1x1(ReLU(BN(W_g g) + BN(W_x x))))), F_int -> 1 channel.

    ``g`` must already be at ``x``'s resolution (the callers upsample it).
    """

    def __init__(self, gate_channels: int, skip_channels: int, inner_channels: int) -> None:
        super().__init__()
        self.w_g = nn.Sequential(nn.Conv2d(gate_channels, inner_channels, 1), nn.BatchNorm2d(inner_channels))
        self.w_x = nn.Sequential(nn.Conv2d(skip_channels, inner_channels, 1), nn.BatchNorm2d(inner_channels))
        self.psi = nn.Sequential(nn.Conv2d(inner_channels, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * self.psi(F.relu(self.w_g(g) + self.w_x(x)))


class ResidualBlock(nn.Module):
    """`convs` x conv3x3-BN with ReLU between, plus a shortcut, then ReLU (V3: 2 convs, V4: 3).

    The shortcut is a 1x1 conv with bias, or the identity when ``project`` is false.
    """

    def __init__(self, in_channels: int, out_channels: int, convs: int, project: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(in_channels, out_channels),
            *(conv_bn(out_channels, out_channels) for _ in range(convs - 2)),
            conv_bn(out_channels, out_channels, relu=False),
        )
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class UNetPlusPlus(SegmentationNet):
    """U-Net++: filters [b, 2b, 4b, 8b, 16b], MaxPool2d(2) between levels, nested nodes, no deep supervision.

    Encoder node: two conv3x3-BN-ReLU. Nested node: one conv3x3-BN-ReLU. Up: bilinear x2 with
    align_corners=True, no weights. Subclasses change the nodes and hook attention gates into the two
    places below (:meth:`skip`, :meth:`nested_output`).
    """

    name = "unetpp"
    stride = 2 ** (LEVELS - 1)
    attention: ClassVar[bool] = False

    def __init__(self, in_channels: int = 1, num_classes: int = 4, b: int = 16) -> None:
        super().__init__(in_channels, num_classes)
        # the gates' F_int is f_i / 2, so attention variants need an even b
        check_width(self.name, b, 2 if self.attention else 1)
        f = [b * 2**i for i in range(LEVELS)]
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.encoders = nn.ModuleList(
            self.encoder_node(cin, cout) for cin, cout in zip([in_channels, *f[:-1]], f, strict=True)
        )
        # nested[i][j - 1] computes X(i, j) from j maps of width f_i and one upsampled map of width f_{i+1}
        self.nested = nn.ModuleList(
            nn.ModuleList(self.nested_node(j * f[i] + f[i + 1], f[i]) for j in range(1, LEVELS - i))
            for i in range(LEVELS - 1)
        )
        if self.attention:
            # AG_{i+1} gates level i by level i+1: AG1(2b, b, b/2) ... AG4(16b, 8b, 4b)
            self.gates = nn.ModuleList(AttentionGate(f[i + 1], f[i], f[i] // 2) for i in range(LEVELS - 1))
        self.head = nn.Conv2d(b, num_classes, kernel_size=1)

    def encoder_node(self, in_channels: int, out_channels: int) -> nn.Module:
        return nn.Sequential(conv_bn(in_channels, out_channels), conv_bn(out_channels, out_channels))

    def nested_node(self, in_channels: int, out_channels: int) -> nn.Module:
        return conv_bn(in_channels, out_channels)

    def skip(self, level: int, up: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """What the nested nodes of ``level`` concatenate for the same-level map ``x``; ``up`` = Up(the map below)."""
        return x

    def nested_output(self, level: int, j: int, up: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        """What later nodes read as X(level, j), given the node's output and the Up(X(level+1, j-1)) it saw."""
        return node

    def grid(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """All nodes, ``grid[i][j]`` = X(i, j), computed diagonal by diagonal as the encoder goes down."""
        grid: list[list[torch.Tensor]] = [[] for _ in range(LEVELS)]
        skips: list[list[torch.Tensor]] = [[] for _ in range(LEVELS - 1)]
        for depth in range(LEVELS):
            grid[depth].append(self.encoders[depth](x if depth == 0 else self.pool(grid[depth - 1][0])))
            for j in range(1, depth + 1):
                i = depth - j
                up = self.up(grid[i + 1][j - 1])
                # each same-level skip is prepared once, when its first consumer X(i, j) is built
                skips[i].append(self.skip(i, up, grid[i][j - 1]))
                node = self.nested[i][j - 1](torch.cat([*skips[i], up], dim=1))
                grid[i].append(self.nested_output(i, j, up, node))
        return grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head(self.grid(x)[0][LEVELS - 1])


class AttnUNetPlusPlusV1(UNetPlusPlus):
    """Attention U-Net++ V1 as the authors coded it: U-Net++ plus four gates that do not reach the output.

    After X(0, 4) is computed, their forward gates X(i, 1) with AG_{i+1}(g=Up(X(i+1, 0))) and discards the
    result. We reproduce that faithfully: the gates run (costing time and, in training mode, updating their
    BN statistics), add 8,592 parameters at b=8, receive no gradient and never change the logits, so V1
    computes exactly what U-Net++ computes. :class:`AttnUNetPlusPlusV1Wired` is the version that uses them.
    """

    name = "attn_unetpp_v1"
    attention = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        grid = self.grid(x)
        for i, gate in enumerate(self.gates):
            gate(self.up(grid[i + 1][0]), grid[i][1])  # output unused, as in the authors' code
        return self.head(grid[0][LEVELS - 1])


class AttnUNetPlusPlusV1Wired(UNetPlusPlus):
    """Attention U-Net++ V1 with its gates wired into the decoder, where the report's attention is meant to act.

    The report says attention improves U-Net++ "by focusing on relevant features"; the authors' V1 computes its
    gates only after X(0, 4) and drops them, so this is the corrected reading, not the model they trained.

    Same four gates and the same parameter count as :class:`AttnUNetPlusPlusV1`, but each first nested node
    is gated as soon as it is built: X(i, 1) := AG_{i+1}(g=Up(X(i+1, 0)), x=X(i, 1)), and every later node
    (X(i, j>1) through the skip, X(i-1, 2) through Up) reads the gated map. This is the authors' four gate
    lines moved to where their results are used. Unlike V2, encoder outputs X(i, 0) and deeper nested
    nodes stay ungated.
    """

    name = "attn_unetpp_v1_wired"
    attention = True

    def nested_output(self, level: int, j: int, up: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        return self.gates[level](up, node) if j == 1 else node


class AttnUNetPlusPlusV2(UNetPlusPlus):
    """Attention U-Net++ V2: every same-level skip is gated.

    The gated X(i, k) is AG_{i+1}(g=Up(X(i+1, k)), x=X(i, k)), computed once and reused by every later node
    of row i. The authors' V2-V4 default to 8 output classes; the report's task (and ours) has 4.
    """

    name = "attn_unetpp_v2"
    attention = True

    def skip(self, level: int, up: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.gates[level](up, x)


class AttnUNetPlusPlusV3(AttnUNetPlusPlusV2):
    """Attention U-Net++ V3: V2 with residual nodes.

    Encoder nodes project their shortcut only when the width changes; nested nodes always do (their input is
    a concatenation), and have two convs instead of U-Net++'s one.
    """

    name = "attn_unetpp_v3"
    convs: ClassVar[int] = 2

    def encoder_node(self, in_channels: int, out_channels: int) -> nn.Module:
        return ResidualBlock(in_channels, out_channels, self.convs, project=in_channels != out_channels)

    def nested_node(self, in_channels: int, out_channels: int) -> nn.Module:
        return ResidualBlock(in_channels, out_channels, self.convs, project=True)


class AttnUNetPlusPlusV4(AttnUNetPlusPlusV3):
    """Attention U-Net++ V4: V3 with three convs in every block."""

    name = "attn_unetpp_v4"
    convs = 3


def unetpp(in_channels: int = 1, num_classes: int = 4, b: int = 16) -> SegmentationNet:
    """U-Net++(b): 7929 b^2 + 277 b + 4 parameters at in=1, out=4."""
    return UNetPlusPlus(in_channels, num_classes, b)


def attn_unetpp_v1(in_channels: int = 1, num_classes: int = 4, b: int = 16) -> SegmentationNet:
    """Attention U-Net++ V1 as published: its gates never influence the output (see the class)."""
    return AttnUNetPlusPlusV1(in_channels, num_classes, b)


def attn_unetpp_v1_wired(in_channels: int = 1, num_classes: int = 4, b: int = 16) -> SegmentationNet:
    """Attention U-Net++ V1 with the gates feeding the nested nodes (see the class)."""
    return AttnUNetPlusPlusV1Wired(in_channels, num_classes, b)


def attn_unetpp_v2(in_channels: int = 1, num_classes: int = 4, b: int = 16) -> SegmentationNet:
    """Attention U-Net++ V2: every same-level skip gated; b must be even."""
    return AttnUNetPlusPlusV2(in_channels, num_classes, b)


def attn_unetpp_v3(in_channels: int = 1, num_classes: int = 4, b: int = 16) -> SegmentationNet:
    """Attention U-Net++ V3: V2 with residual blocks; b must be even."""
    return AttnUNetPlusPlusV3(in_channels, num_classes, b)


def attn_unetpp_v4(in_channels: int = 1, num_classes: int = 4, b: int = 16) -> SegmentationNet:
    """Attention U-Net++ V4: V3 with three convs per block; b must be even."""
    return AttnUNetPlusPlusV4(in_channels, num_classes, b)
