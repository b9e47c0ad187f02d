"""A tiny fully convolutional segmenter: enough to learn shapes on a CPU in seconds."""

from __future__ import annotations

import torch
from torch import nn

from medkit import Model


def conv_block(cin: int, cout: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyCNN(nn.Module, Model):
    """Three 3x3 conv blocks with dilations 1, 2, 4 (receptive field 15 px) and a 1x1 classifier."""

    name = "tiny_cnn"
    task = "segmentation"

    def __init__(self, in_channels: int = 1, num_classes: int = 3, width: int = 24) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_block(in_channels, width, 1), conv_block(width, width, 2), conv_block(width, width, 4)
        )
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
