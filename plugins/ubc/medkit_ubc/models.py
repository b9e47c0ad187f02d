"""The Unet-boosted classifier (paper 003, section 2): a CNN classifier whose encoder also feeds a U-Net decoder.

It is segmentation_models_pytorch's shape (encoder -> decoder -> segmentation head, and a classification head on
the deepest feature), built from smp's own encoder, ``UnetDecoder`` and ``SegmentationHead`` as the authors did:
features = encoder(x); logits = classifier(features[-1]); mask = head(decoder(features)). Without the decoder
it is the paper's baseline (ResNet34, global average pooling, one linear layer). Weights start random: the
paper trains from scratch, and no download is ever attempted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medkit import Model, UsageError

DECODER_CHANNELS = (256, 128, 64, 32, 16)  # spec, Model: the authors' smp U-Net decoder


def _encoder(name: str, in_channels: int, weights_path: str | None) -> nn.Module:
    from segmentation_models_pytorch.encoders import get_encoder

    try:
        encoder = get_encoder(name, in_channels=in_channels, depth=5, weights=None)
    except (KeyError, ValueError, RuntimeError) as err:
        raise UsageError(
            f"model.encoder {name!r}: segmentation_models_pytorch cannot build it ({err}); use an smp encoder "
            "name (resnet18, resnet34, efficientnet-b0, mobilenet_v2, ...) or 'tu-<timm model>'"
        ) from err
    if weights_path:
        path = Path(weights_path)
        if not path.is_file():
            raise UsageError(f"model.weights_path {path} does not exist; give a local encoder state dict")
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, _ = encoder.load_state_dict(state, strict=False)
        if len(missing) == len(list(encoder.state_dict())):
            raise UsageError(f"model.weights_path {path}: no tensor matches encoder {name!r}")
    return encoder


class UnetBoostedClassifier(nn.Module, Model):
    """Classifier (GAP + linear on the encoder's deepest map) with an optional U-Net decoder and mask head.

    ``forward`` returns ``{"logits": (N, classes)}`` plus, with the decoder, ``"mask"`` (N, 1, H, W) logits
    and, with deep supervision, ``"deep"``: mask logits of the coarser decoder blocks, coarsest first.
    """

    name = "ubc"
    task = "classification"

    def __init__(
        self,
        encoder: str = "resnet34",
        in_channels: int = 1,
        num_classes: int = 2,
        decoder: bool = True,
        decoder_channels: Sequence[int] = DECODER_CHANNELS,
        deep_supervision: bool = False,
        weights_path: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder_name = encoder
        self.encoder = _encoder(encoder, in_channels, weights_path)
        deepest = self.encoder.out_channels[-1]
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(deepest, num_classes)
        )
        self.decoder: nn.Module | None = None
        self.deep_heads: nn.ModuleList | None = None
        if decoder:
            from segmentation_models_pytorch.base import SegmentationHead
            from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

            channels = tuple(decoder_channels)
            if len(channels) != 5:
                raise UsageError(
                    f"model.decoder_channels needs 5 values (one per level), got {list(channels)}"
                )
            self.decoder = UnetDecoder(self.encoder.out_channels, channels, n_blocks=5)
            self.segmentation_head = SegmentationHead(channels[-1], 1, kernel_size=3)
            if deep_supervision:  # the paper's proposal (conclusion): a mask from every decoder scale
                self.deep_heads = nn.ModuleList(nn.Conv2d(c, 1, 3, padding=1) for c in channels[:-1])

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        features = self.encoder(x)
        output: dict[str, Any] = {"logits": self.classifier(features[-1])}
        if self.decoder is not None:
            coarse: list[torch.Tensor] = []
            # deep supervision reads the coarser blocks' outputs through forward hooks, so the decoder runs
            # through its own public forward: no copy of smp's decoder loop, whose block signature has changed
            # between smp versions (pyproject.toml pins the tested range)
            blocks = list(self.decoder.blocks)[:-1] if self.deep_heads is not None else []
            hooks = [b.register_forward_hook(lambda _m, _i, out: coarse.append(out)) for b in blocks]
            try:
                output["mask"] = self.segmentation_head(self.decoder(features))
            finally:
                for hook in hooks:
                    hook.remove()
            if self.deep_heads is not None:
                output["deep"] = [head(f) for head, f in zip(self.deep_heads, coarse, strict=True)]
        return output

    def parts(self) -> dict[str, int]:
        """Parameters of encoder, decoder, segmentation head and classifier (the paper's tables 1 and 2)."""
        count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
        return {
            "encoder": count(self.encoder),
            "decoder": count(self.decoder),
            "segmentation_head": count(getattr(self, "segmentation_head", None)),
            "classifier": count(self.classifier),
        }


def resnet34(**options: Any) -> UnetBoostedClassifier:
    """The paper's baseline: 1-channel ResNet34, global average pooling, one linear layer (21.3 M)."""
    return UnetBoostedClassifier(**{"encoder": "resnet34", **options, "decoder": False})


def ubc(**options: Any) -> UnetBoostedClassifier:
    """UBC over any smp encoder: ``--arch ubc --set model.encoder=NAME`` (default resnet34)."""
    return UnetBoostedClassifier(**{**options, "decoder": True})


def ubc_resnet34(**options: Any) -> UnetBoostedClassifier:
    """UBC-ResNet34: ResNet34 + U-Net decoder 256/128/64/32/16 + 3x3 head (24.4 M)."""
    return ubc(**{**options, "encoder": "resnet34"})


def ubc_resnet18(**options: Any) -> UnetBoostedClassifier:
    return ubc(**{**options, "encoder": "resnet18"})


def ubc_efficientnet_b0(**options: Any) -> UnetBoostedClassifier:
    return ubc(**{**options, "encoder": "efficientnet-b0"})


def ubc_mobilenet_v2(**options: Any) -> UnetBoostedClassifier:
    return ubc(**{**options, "encoder": "mobilenet_v2"})
