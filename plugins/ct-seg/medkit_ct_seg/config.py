"""Options of ct-seg's recipes (torch-free, so `medkit run ct-seg --help` stays instant).

The train recipe's defaults are sized for the CPU demo (`make demo`: about 8 minutes on 2 cores); the paper's
own set-up is `configs/paper.yaml` (focal loss, width 16, every slice, 960 slices per epoch, no schedule).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from medkit import UsageError, option
from medkit.config import OptimizerConfig, RecipeConfig, TrainingConfig

LION_LR, LION_WEIGHT_DECAY = 1e-4, 1e-2  # the authors' Lion runs (spec, Training facts)
CPU_WIDTH = 8  # the train recipe's default width b: a CPU demo (the paper's set-up: 16)


@dataclass(kw_only=True)
class SamplerConfig:
    """Paper 002's limited-RAM slice sampler (section 3, method 3); authors' values K=20, M=10, 960 samples."""

    method: Literal["resident", "per_sample", "one_volume"] = option(
        "resident", help="1: per_sample, 2: one_volume, 3: resident"
    )
    resident: int = option(20, help="K: volumes resident in RAM", minimum=1)
    uses: int = option(
        10, help="M: slices drawn from each resident volume before the set is replaced", minimum=1
    )
    samples_per_epoch: int = option(320, help="training slices per (virtual) epoch (paper: 960)", minimum=1)
    budget_mb: int = option(
        1024,
        help="RAM budget of the resident slices in MiB, the total of every DataLoader worker of every rank "
        "(never exceeded)",
        minimum=1,
    )
    slices: Literal["all", "labelled"] = option(
        "labelled", help="draw only from slices with lung or airway (default) or from every slice (the paper)"
    )


@dataclass(kw_only=True)
class ValSamplerConfig:
    """Which validation slices each evaluation scores; the authors drew them through the training sampler with
    K=3, M=10 and 384 samples (spec, sampler section)."""

    method: Literal["labelled", "resident"] = option(
        "labelled",
        help="labelled: every slice with lung or airway of the validation volumes; resident: the paper's "
        "limited-RAM sampler (same slices every epoch, drawn from the slices sampler.slices allows)",
    )
    resident: int = option(3, help="resident: K, validation volumes resident in RAM (paper: 3)", minimum=1)
    uses: int = option(10, help="resident: M, slices drawn from each resident volume (paper: 10)", minimum=1)
    samples: int = option(384, help="resident: slices scored per evaluation (paper: 384)", minimum=1)


@dataclass(kw_only=True)
class AugmentConfig:
    """Augmentations of image and mask together; values from the authors' code (spec, Training facts)."""

    rotate_degrees: float = option(5.0, help="random rotation limit in degrees (p 0.7); 0 turns it off")
    crop_scale: float = option(
        0.95, help="random resized crop keeps at least this share of the area; 1 turns it off"
    )
    noise_std: float = option(0.0, help="std of Gaussian noise on [0, 1] images (p 0.1); 0 turns it off")
    brightness_contrast: float = option(
        0.0, help="max relative change of brightness and contrast; 0 turns it off"
    )
    blur: bool = option(False, help="Gaussian blur; off: the report found it blurs the thin trachea away")
    flips: bool = option(False, help="horizontal flips; off: a flip swaps the left and right lung labels")


@dataclass(kw_only=True)
class PhantomConfig:
    """The embedded default data: procedural chest CT phantoms, built once into an H5 slice cache."""

    volumes: int = option(24, help="number of phantoms (split by volume into train and validation)")
    slices: int = option(48, help="axial slices per phantom")


@dataclass(kw_only=True)
class TrainSegConfig(TrainingConfig):
    arch: str = option("attn_unetpp_v2", help="architecture name (--arch); see `medkit describe ct-seg`")
    model: dict[str, Any] = option(
        default_factory=lambda: {"b": CPU_WIDTH},
        help="architecture options; default width b=8 for a CPU demo (paper: 16; DeepLab has no width)",
    )
    epochs: int = option(14, help="number of epochs", minimum=1)
    batch_size: int = option(8, help="slices per batch (paper's choice: 8)", minimum=1)
    loss: Literal["ce", "weighted_ce", "focal", "dice", "iou", "tversky", "hybrid"] = option(
        "weighted_ce", help="loss; weighted_ce learns the thin airway fastest on CPU (paper's choice: focal)"
    )
    class_weight_power: float = option(
        0.5,
        help="weighted_ce: class weight = pixel frequency^-power; 0.5 (inverse square root, default) finds the "
        "airway without painting it over its neighbours, 1 is plain inverse frequency",
    )
    logit_adjustment: float | None = option(
        None,
        help="weighted_ce: share of the class weights' bias removed from best.pt's decision (a logit offset of "
        "share x log(weight), kept in the checkpoint): null (default) chooses it after training on the training "
        "slices from 0, 1/8, 1/4, 1/2, 3/4, 1; 0 keeps the weighted decision, which over-calls the weighted "
        "classes; 1 gives plain cross-entropy's, which loses airway recall",
        minimum=0.0,
    )
    optim: OptimizerConfig = option(
        default_factory=lambda: OptimizerConfig(lr=1e-3, scheduler="none"),
        help="optimiser: Adam 1e-3 without a schedule, as the paper (a cosine schedule lost 0.02 mean Dice in "
        "a 5-minute run: it lowers the rate before the airway is learned)",
    )
    lion: bool = option(
        False,
        help="deprecated alias of optim.name=lion with the authors' optim.lr=1e-4, optim.weight_decay=1e-2; "
        "set optim.* instead",
    )
    image_size: int = option(128, help="slices are resized to this side (paper: 128)")
    intensity: Literal["minmax", "window"] = option(
        "minmax", help="per-slice min-max (paper) or an HU window"
    )
    window: tuple[float, float] = option((-1000.0, 400.0), help="HU window low, high (intensity=window)")
    label_map: dict[int, int] = option(
        default_factory=dict, help="mask value -> class, e.g. LUNA16 {3: 1, 4: 2, 5: 3}; unlisted values -> 0"
    )
    val_fraction: float = option(
        0.25, help="share of --data volumes held out for validation (unused when val_data is given)"
    )
    val_data: Path | None = option(
        None,
        help="validation volumes, opened as --data is (the authors' split: LUNA16 subset0 trains, subset1 "
        "validates); every --data volume then trains",
    )
    val_sampler: ValSamplerConfig = option(
        default_factory=ValSamplerConfig, help="which validation slices are scored"
    )
    sampler: SamplerConfig = option(default_factory=SamplerConfig, help="limited-RAM sampler")
    augment: AugmentConfig = option(
        default_factory=lambda: AugmentConfig(rotate_degrees=0.0, crop_scale=1.0),
        help="augmentations; off by default: rotation and crop interpolate the image, which smooths the noise "
        "that validation images keep (paper: rotation within 5 degrees, --set augment.rotate_degrees=5)",
    )
    phantoms: PhantomConfig = option(default_factory=PhantomConfig, help="embedded default data")
    monitor: str = option("val/mean_dice", help="figure that picks the best checkpoint")
    monitor_mode: Literal["min", "max"] = option(
        "max", help="whether the monitored figure should fall or rise"
    )

    def __post_init__(self) -> None:
        # `lion: true` (older configs and runs) stays valid and means the authors' Lion run
        if self.lion:
            self.optim = replace(self.optim, name="lion", lr=LION_LR, weight_decay=LION_WEIGHT_DECAY)
        if self.arch.startswith("deeplab") and self.model.get("b") == CPU_WIDTH:
            # the default width does not apply to DeepLab, which has none; its builders refuse any width a
            # user gives, so that a width sweep cannot train one model several times
            self.model = {key: value for key, value in self.model.items() if key != "b"}

    def validate(self) -> None:
        if self.logit_adjustment is not None and self.logit_adjustment > 1:
            raise UsageError(
                f"logit_adjustment={self.logit_adjustment}: it is the share of the class weights' bias removed "
                "at inference, from 0 (none) to 1 (all); choose a value in that range"
            )

    def figure_names(self) -> list[str]:
        from .data import CLASS_NAMES
        from .metrics import PaperSegmentationScorer

        return PaperSegmentationScorer(CLASS_NAMES).figure_names()


@dataclass(kw_only=True)
class PredictSegConfig(RecipeConfig):
    checkpoint: Path | None = option(
        None, help="a best.pt or last.pt; default: the latest `medkit run ct-seg` run"
    )
    arch: str | None = option(None, help="architecture (default: the one the checkpoint was trained with)")
    model: dict[str, Any] = option(
        default_factory=dict, help="architecture options (default: the checkpoint's)"
    )
    image_size: int = option(
        128, help="slices are resized to this side for the network, masks back to the volume's"
    )
    intensity: Literal["minmax", "window"] = option(
        "minmax", help="as in training: per-slice min-max or HU window"
    )
    window: tuple[float, float] = option((-1000.0, 400.0), help="HU window low, high (intensity=window)")
    phantoms: int = option(2, help="without --data: how many unseen phantoms to segment and score")
    phantom_slices: int = option(48, help="without --data: slices per phantom")
    overlays: int = option(3, help="PNG overlays per volume (the slices with the most airway)")
    label_map: dict[int, int] = option(
        default_factory=dict,
        help="mask value -> class for scoring, as in training; default: the --data layout's (LUNA16: 3/4/5 -> 1/2/3)",
    )
    surface_tolerance_mm: float = option(
        1.0,
        help="surface Dice counts boundary voxels within this distance of the other boundary",
        minimum=0.0,
    )
    score_slices: Literal["labelled", "all"] = option(
        "labelled",
        help="slices the report's per-slice figures average over: those with lung or airway in the mask (as "
        "training's validation) or every slice",
    )
