"""The two preprocessing pipelines of report section 8, applied to uint8 images of any size and mode.

- ``standard``: each weight set's own evaluation transforms (``weights.transforms()``; timm's data config):
  resize the shorter side, centre crop, normalise with the weights' mean and std. A grayscale image is repeated
  over three channels (what PIL's ``convert("RGB")`` does).
- ``custom``: resize to the crop size without cropping, ``Grayscale(3)``, ImageNet normalisation.

Transforms run on tensors (torchvision's functional API, antialiased resize), so they describe themselves as
JSON: the description is part of the feature cache's key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

PipelineName = Literal["standard", "custom"]
PIPELINES: tuple[str, ...] = ("standard", "custom")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Pipeline:
    """resize (shorter side, or both sides when ``square``), centre crop, grayscale or not, normalisation."""

    name: str
    resize: int
    crop: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    grayscale: bool = False
    square: bool = False

    def describe(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) or (H, W, 3) uint8 -> (3, crop, crop) float32, normalised."""
        x = torch.from_numpy(np.array(image, copy=True))
        x = x[None].expand(3, -1, -1) if x.ndim == 2 else x.permute(2, 0, 1)
        if self.grayscale and image.ndim == 3:
            x = F.rgb_to_grayscale(x, num_output_channels=3)
        mode = InterpolationMode(self.interpolation)
        size = [self.resize, self.resize] if self.square else [self.resize]
        x = F.resize(x, size, interpolation=mode, antialias=True)
        if not self.square:
            x = F.center_crop(x, [self.crop, self.crop])
        x = F.to_dtype(x, torch.float32, scale=True)
        return F.normalize(x, list(self.mean), list(self.std))


def custom_pipeline(crop: int) -> Pipeline:
    return Pipeline(
        "custom", crop, crop, "bilinear", IMAGENET_MEAN, IMAGENET_STD, grayscale=True, square=True
    )


def torchvision_standard(weights_name: str, network: str) -> Pipeline:
    """The transforms torchvision ships with a weight set (metadata only: nothing is downloaded)."""
    import torchvision

    weights = (
        torchvision.models.get_model_weights(network).DEFAULT
        if weights_name == "DEFAULT"
        else torchvision.models.get_weight(weights_name)
    )
    t = weights.transforms()
    return Pipeline(
        "standard",
        int(t.resize_size[0]),
        int(t.crop_size[0]),
        t.interpolation.value,
        tuple(float(v) for v in t.mean),  # type: ignore[arg-type]
        tuple(float(v) for v in t.std),  # type: ignore[arg-type]
    )


def timm_standard(network: str) -> Pipeline:
    """timm's evaluation transform of ``network``'s default pretrained config."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(network)
    if cfg is None:
        raise ValueError(f"timm has no pretrained config for {network}")
    crop = int(cfg.input_size[-1])
    return Pipeline(
        "standard",
        int(crop / cfg.crop_pct),
        crop,
        cfg.interpolation or "bilinear",
        tuple(cfg.mean),  # type: ignore[arg-type]
        tuple(cfg.std),  # type: ignore[arg-type]
    )


def pipeline_for(library: str, network: str, weights_name: str, name: str) -> Pipeline:
    standard = (
        torchvision_standard(weights_name, network) if library == "torchvision" else timm_standard(network)
    )
    return standard if name == "standard" else custom_pipeline(standard.crop)
