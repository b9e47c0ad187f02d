"""The backbone study (paper 004) as a grid of `fit` trials: methods x backbones x weight sources.

Torch-free, so `medkit run anomaly-backbones study --help` stays instant. A trial is the fit recipe's config with
a few options overridden; its layers, lowest first: the fit defaults, the scale's shared options and its options
of the method, the user's ``base``, the trial's own options (method, backbone, weights, ``method_options`` of the
method), and the study's run keys (out, data, seed, device, categories).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medkit import RecipeConfig, UsageError, option
from medkit.config import Layer, resolve_config
from medkit.suggest import did_you_mean

from .backbone_table import list_backbones
from .config import STUDY_SEED, FitAnomalyConfig
from .methods import METHODS


@dataclass(frozen=True)
class Scale:
    """The fit options every trial shares at one scale, each method's own options, and the default grid."""

    base: dict[str, Any]
    methods: tuple[str, ...]
    backbones: tuple[str, ...]
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)


SCALES = {
    # small textures, few images, CPU-friendly backbones: trends in a few CPU minutes, not the thesis' figures
    "small": Scale(
        base={
            "textures": {"size": 96, "train": 30, "test_good": 8, "test_defect": 12},
            "resize": 96,
            "crop": 96,
            "overlays": 2,
        },
        methods=("spade", "padim", "patchcore"),
        backbones=("efficientnet_lite0", "resnet18", "mobilenet_v2"),
        # SPADE's pixel search runs over every position of the K retrieved images: K=10 keeps it near 0.2 s
        # per 96 px image on one CPU thread; K=50, the paper's, retrieves all 27 fitted images here (0.75 s)
        method_options={"spade": {"k": 10}},
    ),
    # the thesis' set-up: the fit recipe's defaults (resize 256, crop 224), SPADE and PaDiM, every backbone of
    # the table; meant for --data MVTEC_FOLDER and ImageNet weights in the local caches (hours on a CPU)
    "thesis": Scale(base={}, methods=("spade", "padim"), backbones=tuple(list_backbones())),
}


@dataclass(kw_only=True)
class StudyAnomalyConfig(RecipeConfig):
    seed: int = option(STUDY_SEED, help="seed of every trial (thesis: 1024)")
    device: Literal["auto", "cpu", "cuda"] = option(
        "cpu", help="the thesis measures ms per image on the CPU; auto or cuda fits and scores on a GPU"
    )
    scale: Literal["small", "thesis"] = option(
        "small",
        help="small: 96 px textures, 30 training images, spade (K=10) padim patchcore over efficientnet_lite0 "
        "resnet18 mobilenet_v2 (a few CPU minutes); thesis: resize 256 + crop 224, spade and padim over every "
        "backbone of the table (give --data an MVTec AD folder)",
    )
    methods: list[str] | None = option(None, help="methods (null: the scale's; small: spade padim patchcore)")
    backbones: list[str] | None = option(
        None,
        help="backbones (null: the scale's; small: efficientnet_lite0 resnet18 mobilenet_v2; thesis: the "
        "table's 74, medkit_anomaly.backbone_table.list_backbones())",
    )
    weight_sources: list[str] = option(
        default_factory=lambda: ["imagenet", "random"],
        help="weights of every backbone: imagenet (a local file, of base.weights_variant if given; a backbone "
        "without one is a skipped trial), random (the study's control) or state-dict paths",
    )
    categories: list[str] = option(default_factory=list, help="categories of every trial; empty: all")
    base: dict[str, Any] = option(
        default_factory=dict,
        help="fit options every trial shares, over the scale's (any key of `medkit run anomaly-backbones fit "
        "--help`), e.g. --set base.textures.train=60 --set base.holdout=0",
    )
    method_options: dict[str, dict[str, Any]] = option(
        default_factory=dict,
        help="model.* options of one method in every trial, over the scale's (small: spade k=10), e.g. "
        "--set method_options.spade.k=50 --set method_options.padim.d=50",
    )

    def validate(self) -> None:
        # Every trial's fit config is checked while the options are read: a typo stops the study before its
        # run directory exists (exit 2), not hours into it.
        for method in self.method_options:
            if method not in METHODS:
                raise UsageError(
                    f"method_options.{method}: not a method.{did_you_mean(method, METHODS)} "
                    f"Known: {', '.join(METHODS)}"
                )
        planned = trials(self)
        if not planned:
            raise UsageError("the study has no trials: give at least one method, backbone and weight source")
        names = [trial.name for trial in planned]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise UsageError(f"trials {', '.join(twice)} appear twice; give weight files with distinct names")
        for trial in planned:
            try:
                resolve_config(FitAnomalyConfig, trial_layers(self, trial))
            except UsageError as err:
                raise UsageError(f"study trial {trial.name}: {err}") from err


@dataclass(frozen=True)
class Trial:
    """One point of the grid: a method over a backbone with one source of weights."""

    method: str
    backbone: str
    weights: str

    @property
    def weights_label(self) -> str:
        """imagenet, random, or a weights file's name without its suffix."""
        return self.weights if self.weights in ("imagenet", "random") else Path(self.weights).stem

    @property
    def name(self) -> str:
        return f"{self.method}-{self.backbone}-{self.weights_label}"


def trials(config: StudyAnomalyConfig) -> list[Trial]:
    """Every trial, method by method, then backbone by backbone, then weight source."""
    scale = SCALES[config.scale]
    methods = scale.methods if config.methods is None else config.methods
    backbones = scale.backbones if config.backbones is None else config.backbones
    return [Trial(m, b, w) for m in methods for b in backbones for w in config.weight_sources]


def trial_dir(study_dir: Path, trial: Trial) -> Path:
    return Path(study_dir) / "trials" / trial.name


def trial_layers(config: StudyAnomalyConfig, trial: Trial, out: Path | None = None) -> list[Layer]:
    """The fit config layers of ``trial``, run into ``out``."""
    options = {
        "arch": trial.method,
        "backbone": trial.backbone,
        "weights": trial.weights,
        "model": config.method_options.get(trial.method, {}),
    }
    run_keys: dict[str, Any] = {
        "out": None if out is None else str(out),
        "data": None if config.data is None else str(config.data),
        "seed": config.seed,
        "device": config.device,
    }
    if config.categories:
        run_keys["categories"] = list(config.categories)
    scale = SCALES[config.scale]
    return [
        (f"study scale {config.scale}", scale.base),
        (
            f"study scale {config.scale}, {trial.method}",
            {"model": scale.method_options.get(trial.method, {})},
        ),
        ("study base (--set base.*)", config.base),
        (f"trial {trial.name}", options),
        ("study", run_keys),
    ]
