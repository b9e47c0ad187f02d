"""DeepLabv3+ of paper 002 on torchvision backbones: plain MobileNetV2, and MobileNetV2 / EfficientNet-B0 with CBAM.

Shape of every variant (spec "Architectures", DeepLabv3+): stem -> backbone with two taps (stride 4 and 32) ->
ASPP on the deep tap -> decoder joining the shallow tap -> head -> bilinear upsampling to the input size.
Backbones start from random weights (``weights=None``; nothing is downloaded); ``weights_path`` loads a local
torchvision state dict instead. There is no width: the backbones are fixed and ASPP/decoder keep the paper's 256
channels, so the factories refuse a width ``b`` (a width sweep would otherwise train the same network again and
again) and take ``b=None``, which a config uses to clear a width it shares with the U-Net family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medkit import UsageError

from .base import SegmentationNet

WIDTH = 256  # ASPP and decoder channels
LOW_LEVEL_WIDTH = 48  # the shallow tap after its 1x1 reduction


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1
) -> nn.Sequential:
    """Bias-free conv (padding keeps the size) -> BN -> ReLU, DeepLab's building block."""
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention (shared MLP over average- and max-pooled
    descriptors, reduction 16), then spatial attention (conv k7 over channel mean and max)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        x = x * torch.sigmoid(pooled)
        summary = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(summary))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3 and image pooling, projected to 256, dropout 0.5,
    then CBAM in the CBAM variants."""

    def __init__(self, in_channels: int, rates: Sequence[int], cbam: bool) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, WIDTH, 1), *(conv_bn_relu(in_channels, WIDTH, 3, r) for r in rates)]
        )
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(in_channels, WIDTH, 1))
        self.project = nn.Sequential(conv_bn_relu((len(rates) + 2) * WIDTH, WIDTH, 1), nn.Dropout(0.5))
        self.attention = CBAM(WIDTH) if cbam else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[-2:])
        x = self.project(torch.cat([*(branch(x) for branch in self.branches), pooled], dim=1))
        return self.attention(x)


class Decoder(nn.Module):
    """DeepLabv3+ decoder: shallow tap 1x1 -> 48, concat with the upsampled ASPP output, two conv3x3 256,
    dropout 0.5, then CBAM in the CBAM variants."""

    def __init__(self, low_level_channels: int, cbam: bool) -> None:
        super().__init__()
        self.reduce = conv_bn_relu(low_level_channels, LOW_LEVEL_WIDTH, 1)
        self.fuse = nn.Sequential(
            conv_bn_relu(WIDTH + LOW_LEVEL_WIDTH, WIDTH), conv_bn_relu(WIDTH, WIDTH), nn.Dropout(0.5)
        )
        self.attention = CBAM(WIDTH) if cbam else nn.Identity()

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        low_level = self.reduce(low_level)
        x = torch.cat([upsample(x, low_level.shape[-2:]), low_level], dim=1)
        return self.attention(self.fuse(x))


class TappedFeatures(nn.Module):
    """A torchvision ``features`` stack run up to its deep tap, returning (shallow tap, deep tap)."""

    def __init__(self, features: nn.Sequential, low: int, high: int) -> None:
        super().__init__()
        self.features = features[: high + 1]
        self.low = low

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low_level = x
        for i, block in enumerate(self.features):
            x = block(x)
            if i == self.low:
                low_level = x
        return low_level, x


def load_backbone(model: nn.Module, weights_path: str | None, arch: str) -> nn.Sequential:
    """``model.features`` after loading a local torchvision state dict (of the whole model or of ``features``)."""
    if weights_path is None:
        return model.features
    path = Path(weights_path)
    if not path.is_file():
        raise UsageError(f"{arch}: weights_path {path} does not exist; give a torchvision state dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UsageError(f"{arch}: weights_path {path} cannot be read as a torch state dict: {err}") from err
    whole_model = isinstance(state, dict) and any(str(key).startswith("features.") for key in state)
    try:
        (model if whole_model else model.features).load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        summary = str(err).splitlines()[0]
        raise UsageError(
            f"{arch}: {path} does not hold the backbone's torchvision weights: {summary}"
        ) from err
    return model.features


def input_conv(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """``conv`` remade for ``in_channels`` inputs: every new channel starts from the mean of the RGB kernels
    when weights were loaded (the authors' 1-channel adaptation), from torchvision's init otherwise."""
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )
    if pretrained:
        with torch.no_grad():
            new.weight.copy_(conv.weight.mean(dim=1, keepdim=True).expand_as(new.weight))
    else:
        nn.init.kaiming_normal_(new.weight, mode="fan_out")
    return new


def adapter(in_channels: int) -> nn.Sequential:
    """The CBAM variants' in_channels -> 3 adapter (conv3x3 with bias, BN, ReLU) before an RGB backbone."""
    return nn.Sequential(nn.Conv2d(in_channels, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(inplace=True))


class DeepLabV3Plus(SegmentationNet, ABC):
    """Encoder (stem + tapped backbone) -> ASPP -> decoder -> head, upsampled to the input size.

    Subclasses name the variant, its ASPP rates and CBAM use, and build the encoder.
    """

    stride = 32
    rates: ClassVar[tuple[int, ...]]
    cbam: ClassVar[bool]
    low_level_channels: ClassVar[int]
    high_level_channels: ClassVar[int]

    def __init__(self, in_channels: int = 1, num_classes: int = 4, weights_path: str | None = None) -> None:
        super().__init__(in_channels, num_classes)
        self.stem, self.backbone = self.build_encoder(weights_path)
        self.aspp = ASPP(self.high_level_channels, self.rates, self.cbam)
        self.decoder = Decoder(self.low_level_channels, self.cbam)
        self.head = nn.Sequential(conv_bn_relu(WIDTH, WIDTH), nn.Conv2d(WIDTH, num_classes, 1))

    @abstractmethod
    def build_encoder(self, weights_path: str | None) -> tuple[nn.Module, TappedFeatures]:
        """Given by each variant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        low_level, high_level = self.backbone(self.stem(x))
        logits = self.head(self.decoder(self.aspp(high_level), low_level))
        return upsample(logits, x.shape[-2:])


class DeepLabV3PlusMobileNetV2(DeepLabV3Plus):
    """MobileNetV2 with its first conv remade for ``in_channels``; taps features.3 and features.18."""

    name = "deeplabv3plus_mobilenetv2"
    rates = (6, 12, 18)
    cbam = False
    low_level_channels, high_level_channels = 24, 1280

    def build_encoder(self, weights_path: str | None) -> tuple[nn.Module, TappedFeatures]:
        from torchvision.models import mobilenet_v2

        features = load_backbone(mobilenet_v2(weights=None), weights_path, self.name)
        features[0][0] = input_conv(features[0][0], self.in_channels, pretrained=weights_path is not None)
        return nn.Identity(), TappedFeatures(features, low=3, high=18)


class DeepLabV3PlusMobileNetV2CBAM(DeepLabV3Plus):
    """Adapter -> unchanged RGB MobileNetV2 (taps features.3, features.18); CBAM; ASPP rates 2/4/6."""

    name = "deeplabv3plus_mobilenetv2_cbam"
    rates = (2, 4, 6)
    cbam = True
    low_level_channels, high_level_channels = 24, 1280

    def build_encoder(self, weights_path: str | None) -> tuple[nn.Module, TappedFeatures]:
        from torchvision.models import mobilenet_v2

        features = load_backbone(mobilenet_v2(weights=None), weights_path, self.name)
        return adapter(self.in_channels), TappedFeatures(features, low=3, high=18)


class DeepLabV3PlusEfficientNetB0CBAM(DeepLabV3Plus):
    """Adapter -> unchanged RGB EfficientNet-B0 (taps features.2, features.8); CBAM; ASPP rates 1/2/3."""

    name = "deeplabv3plus_efficientnetb0_cbam"
    rates = (1, 2, 3)
    cbam = True
    low_level_channels, high_level_channels = 24, 1280

    def build_encoder(self, weights_path: str | None) -> tuple[nn.Module, TappedFeatures]:
        from torchvision.models import efficientnet_b0

        features = load_backbone(efficientnet_b0(weights=None), weights_path, self.name)
        return adapter(self.in_channels), TappedFeatures(features, low=2, high=8)


def refuse_width(arch: str, b: int | None) -> None:
    """DeepLab has no width option (the report trained each variant once, section 5): a width is an error."""
    if b is not None:
        raise UsageError(
            f"{arch}: DeepLab has no width option (fixed torchvision backbone, 256-channel ASPP and decoder), "
            f"got b={b}; drop it with --set model.b=null, and leave DeepLab out of a width sweep"
        )


def deeplabv3plus_mobilenetv2(
    in_channels: int = 1, num_classes: int = 4, b: int | None = None, weights_path: str | None = None
) -> DeepLabV3PlusMobileNetV2:
    """DeepLabv3+ on MobileNetV2 (ASPP rates 6/12/18); a width ``b`` is refused (see the module docstring)."""
    refuse_width(DeepLabV3PlusMobileNetV2.name, b)
    return DeepLabV3PlusMobileNetV2(in_channels, num_classes, weights_path)


def deeplabv3plus_mobilenetv2_cbam(
    in_channels: int = 1, num_classes: int = 4, b: int | None = None, weights_path: str | None = None
) -> DeepLabV3PlusMobileNetV2CBAM:
    """DeepLabv3+ on MobileNetV2 with CBAM and a 1->3 channel adapter; a width ``b`` is refused."""
    refuse_width(DeepLabV3PlusMobileNetV2CBAM.name, b)
    return DeepLabV3PlusMobileNetV2CBAM(in_channels, num_classes, weights_path)


def deeplabv3plus_efficientnetb0_cbam(
    in_channels: int = 1, num_classes: int = 4, b: int | None = None, weights_path: str | None = None
) -> DeepLabV3PlusEfficientNetB0CBAM:
    """DeepLabv3+ on EfficientNet-B0 with CBAM and a 1->3 channel adapter; a width ``b`` is refused."""
    refuse_width(DeepLabV3PlusEfficientNetB0CBAM.name, b)
    return DeepLabV3PlusEfficientNetB0CBAM(in_channels, num_classes, weights_path)
