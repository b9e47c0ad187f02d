"""What every ct-seg architecture shares: the medkit Model interface and input checks with clear messages."""

from __future__ import annotations

import torch
from torch import nn

from medkit import Model, UsageError


class SegmentationNet(nn.Module, Model):
    """A 2D segmenter: (N, in_channels, H, W) -> logits (N, num_classes, H, W).

    ``stride`` is the total downsampling; inputs whose sides it does not divide are refused with a message
    rather than failing deep inside a concatenation.
    """

    task = "segmentation"
    stride: int = 1

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2:
            raise UsageError(
                f"{self.name}: in_channels must be >= 1 and num_classes >= 2, got {in_channels}, {num_classes}"
            )
        self.in_channels, self.num_classes = in_channels, num_classes

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise UsageError(
                f"{self.name} expects (N, {self.in_channels}, H, W) images, got {tuple(x.shape)}; "
                f"set model.in_channels to the number of input channels"
            )
        if x.shape[-1] % self.stride or x.shape[-2] % self.stride:
            raise UsageError(
                f"{self.name} needs image sides divisible by {self.stride}, got {tuple(x.shape[-2:])}; "
                f"resize to e.g. 128 or 256 (--set image_size=128)"
            )


def check_width(name: str, b: int, divisor: int = 1) -> None:
    if b < 1 or b % divisor:
        raise UsageError(
            f"{name}: width b={b} must be a positive multiple of {divisor} (e.g. 8, 16, 32, 64, 128)"
        )


def conv_bn(in_channels: int, out_channels: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """conv3x3 (padding 1, with bias as in the authors' code) -> BN [-> ReLU]: the unit the ct-seg CNNs repeat."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)
