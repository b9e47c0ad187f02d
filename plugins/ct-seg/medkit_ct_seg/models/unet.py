"""The U-Net family of paper 002: Mini U-Net, U-Net, Max U-Net (spec "Architectures", architecture study).

All three share one shape: encoder blocks that downsample with a stride-2 conv (no max-pool), a bottleneck that
doubles the width, decoder blocks with a transposed conv, a 1x1 head. They differ in depth only.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import SegmentationNet, check_width, conv_bn


class DownBlock(nn.Module):
    """Encoder block: conv3x3 -> BN (the skip) -> ReLU -> conv3x3 stride 2 -> BN -> ReLU.

    The skip is taken before the ReLU, as the spec says and the authors' comment intends. Their code then applies
    an in-place ReLU to the very tensor it kept, so the models they trained actually saw the skip after ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv_bn(in_channels, out_channels, relu=False)
        self.down = conv_bn(out_channels, out_channels, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv(x)
        return self.down(F.relu(skip)), skip


class UpBlock(nn.Module):
    """Decoder block (in, mid=in/2, out): ConvTranspose2d(in->mid, k2, s2) -> concat skip -> 2 x conv-BN-ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        # mid (in/2) + skip (out = in/2) channels: the first conv sees `in` channels again
        self.convs = nn.Sequential(conv_bn(in_channels, out_channels), conv_bn(out_channels, out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.up(x), skip], dim=1))


class StridedUNet(SegmentationNet):
    """Encoders b, 2b, ..., 2^(L-1) b; a bottleneck of `bottleneck_convs` convs to twice the last width at H/2^L;
    L decoders back to width b; 1x1 head."""

    levels: ClassVar[int]
    bottleneck_convs: ClassVar[int]

    def __init__(self, in_channels: int = 1, num_classes: int = 4, b: int = 16) -> None:
        super().__init__(in_channels, num_classes)
        check_width(self.name, b)
        widths = [b * 2**level for level in range(self.levels)]
        self.encoders = nn.ModuleList(
            DownBlock(cin, cout) for cin, cout in zip([in_channels, *widths[:-1]], widths, strict=True)
        )
        top = 2 * widths[-1]
        self.bottleneck = nn.Sequential(
            conv_bn(widths[-1], top), *(conv_bn(top, top) for _ in range(self.bottleneck_convs - 1))
        )
        self.decoders = nn.ModuleList(UpBlock(2 * width, width) for width in reversed(widths))
        self.head = nn.Conv2d(b, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        for encoder in self.encoders:
            x, skip = encoder(x)
            skips.append(skip)
        x = self.bottleneck(x)
        for decoder, skip in zip(self.decoders, reversed(skips), strict=True):
            x = decoder(x, skip)
        return self.head(x)


class MiniUNet(StridedUNet):
    """Mini U-Net: encoders b, 2b; one bottleneck conv 2b -> 4b at H/4; two decoders."""

    name = "mini_unet"
    levels, bottleneck_convs = 2, 1
    stride = 2**levels


class UNet(StridedUNet):
    """U-Net: encoders b..8b; bottleneck 8b -> 16b -> 16b at H/16; four decoders."""

    name = "unet"
    levels, bottleneck_convs = 4, 2
    stride = 2**levels


class MaxUNet(StridedUNet):
    """Max U-Net: encoders b..16b; bottleneck 16b -> 32b -> 32b -> 32b at H/32; five decoders."""

    name = "max_unet"
    levels, bottleneck_convs = 5, 3
    stride = 2**levels


def mini_unet(in_channels: int = 1, num_classes: int = 4, b: int = 16) -> SegmentationNet:
    """Mini U-Net(b): 310 b^2 + 64 b + 4 parameters at in=1, out=4 (20,356 at b=8, as the report states)."""
    return MiniUNet(in_channels, num_classes, b)


def unet(in_channels: int = 1, num_classes: int = 4, b: int = 16) -> SegmentationNet:
    """U-Net(b): 7574 b^2 + 304 b + 4 parameters at in=1, out=4."""
    return UNet(in_channels, num_classes, b)


def max_unet(in_channels: int = 1, num_classes: int = 4, b: int = 16) -> SegmentationNet:
    """Max U-Net(b): 39574 b^2 + 704 b + 4 parameters at in=1, out=4 (648,470,532 at b=128, as the report states)."""
    return MaxUNet(in_channels, num_classes, b)
