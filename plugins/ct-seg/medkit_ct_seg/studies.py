"""The paper's studies (appendix) as grids of `train` trials: the study recipe's options and the trials they mean.

Torch-free, so `medkit run ct-seg study --help` stays instant. A trial is the train recipe's config with a few
options overridden; its layers, lowest first: the train defaults, the scale's shared options, the user's
``base``, the trial's own options, and the study's run keys (out, data, seed, device, the ranking figure).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medkit import RecipeConfig, UsageError, option
from medkit.config import Layer, resolve_config, to_plain
from medkit.suggest import did_you_mean

from .config import LION_LR, LION_WEIGHT_DECAY, TrainSegConfig
from .plugin import ARCHITECTURES

STUDIES = ("architectures", "batch_sizes", "losses", "optimizers", "augmentations")
StudyName = Literal["architectures", "batch_sizes", "losses", "optimizers", "augmentations"]

# models/deeplab.py's networks have no width (they refuse b): a width sweep trains each of them once
WIDTHLESS = frozenset(name for name, (module, _) in ARCHITECTURES.items() if module == "deeplab")

_TO_128, _TO_64 = (8, 16, 32, 64, 128), (8, 16, 32, 64)
# The report's architecture study (section 5), the number in brackets being the width b: 48 networks
REPORT_ARCHITECTURES: dict[str, tuple[int | None, ...]] = {
    "mini_unet": _TO_128,
    "unet": _TO_128,
    "max_unet": _TO_128,
    "unetpp": _TO_64,  # "UNet++ and Attention U-Net++ V1 ... 8, 16, 32, 64"
    "attn_unetpp_v1": _TO_64,
    "attn_unetpp_v2": _TO_64,  # "V2, V3, V4 ... likewise 8, 16, 32, 64"
    "attn_unetpp_v3": _TO_64,
    "attn_unetpp_v4": _TO_64,
    "medt": _TO_128,
    "transunet": _TO_128,
    "deeplabv3plus_mobilenetv2": (None,),
    "deeplabv3plus_mobilenetv2_cbam": (None,),
    "deeplabv3plus_efficientnetb0_cbam": (None,),
}

_NO_AUGMENTATION = {
    "rotate_degrees": 0.0,
    "crop_scale": 1.0,
    "noise_std": 0.0,
    "brightness_contrast": 0.0,
    "blur": False,
    "flips": False,
}
AUGMENTATIONS: dict[str, dict[str, Any]] = {  # each alone over the resize, as the report compared them
    "none": _NO_AUGMENTATION,
    "crop": {**_NO_AUGMENTATION, "crop_scale": 0.95},  # random resized crop, 95-100 % of the area
    "rotation": {**_NO_AUGMENTATION, "rotate_degrees": 5.0},  # within 5 degrees (p 0.7): the report's choice
    # the authors' Gauss noise var 5-20 on a 0-255 scale: std up to sqrt(20) / 255 = 0.018 on [0, 1]
    "noise": {**_NO_AUGMENTATION, "noise_std": 0.018},
    # not in the report's study; it advises against blur (erases the trachea) and flips (swap the lungs)
    "brightness_contrast": {**_NO_AUGMENTATION, "brightness_contrast": 0.2},
    "blur": {**_NO_AUGMENTATION, "blur": True},
    "flips": {**_NO_AUGMENTATION, "flips": True},
}
REPORT_AUGMENTATIONS = ("none", "crop", "rotation", "noise")  # section 5 and appendix G (Г)

RANKING = {"monitor": "val/mean_dice", "monitor_mode": "max"}  # the report ranks by validation mean Dice


@dataclass(frozen=True)
class Scale:
    """The options every trial shares at one scale, and the default grid of each study."""

    base: dict[str, Any]
    architectures: dict[str, tuple[int | None, ...]]  # name -> its widths (None: a network without one)
    widths: tuple[int, ...]  # the widths of a name the scale does not list
    batch_sizes: tuple[int, ...]
    losses: tuple[str, ...]
    augmentations: tuple[str, ...]


SCALES = {
    # the train recipe's CPU defaults, shrunk: 14 trials in a few CPU minutes; trends, not the paper's figures
    "small": Scale(
        base={
            "arch": "unet",
            "model": {"b": 8},
            "epochs": 3,
            "image_size": 64,
            "phantoms": {"volumes": 8, "slices": 16},
            "sampler": {"samples_per_epoch": 96, "resident": 4, "uses": 8},
        },
        architectures={"mini_unet": (8,), "unet": (8,), "attn_unetpp_v2": (8,)},
        widths=(8,),
        batch_sizes=(4, 8, 16),
        losses=("ce", "focal", "hybrid"),
        augmentations=("none", "rotation", "noise"),
    ),
    # configs/paper.yaml (the report's chosen recipe) with its best architecture, over the report's grids:
    # 48 + 7 + 5 + 2 + 4 = 66 trials, a GPU's work
    "paper": Scale(
        base={
            "arch": "attn_unetpp_v2",
            "model": {"b": 16},
            "epochs": 100,
            "loss": "focal",
            "batch_size": 8,
            "image_size": 128,
            "intensity": "minmax",
            "optim": {"name": "adam", "lr": 0.001, "scheduler": "none"},
            "sampler": {
                "method": "resident",
                "resident": 20,
                "uses": 10,
                "samples_per_epoch": 960,
                "slices": "all",
            },
            "val_sampler": {"method": "resident", "resident": 3, "uses": 10, "samples": 384},
            "augment": AUGMENTATIONS["rotation"],
        },
        architectures=REPORT_ARCHITECTURES,
        widths=_TO_128,
        batch_sizes=(2, 4, 8, 16, 32, 64, 128),
        losses=("ce", "dice", "focal", "iou", "hybrid"),
        augmentations=REPORT_AUGMENTATIONS,
    ),
}


@dataclass(kw_only=True)
class StudySegConfig(RecipeConfig):
    scale: Literal["small", "paper"] = option(
        "small",
        help="small: 14 short trials on tiny phantoms (64 px, b=8, 3 epochs), a few CPU minutes; "
        "paper: the report's grids over configs/paper.yaml for 100 epochs, 66 trials (days on a GPU)",
    )
    studies: list[StudyName] = option(default_factory=lambda: list(STUDIES), help="which studies to run")
    base: dict[str, Any] = option(
        default_factory=dict,
        help="train options every trial shares, over the scale's (any key of `medkit run ct-seg train "
        "--help`), e.g. --set base.epochs=20 --set base.phantoms.volumes=12",
    )
    archs: list[str] | None = option(
        None,
        help="architectures study: names (null: the scale's; small: mini_unet unet attn_unetpp_v2; "
        "paper: the report's 13 networks)",
    )
    widths: list[int] | None = option(
        None,
        help="architectures study: widths b of every name (null: small 8; paper: the report's, 8-128 for the "
        "U-Nets, MedT and TransUNet, 8-64 for U-Net++ and AU-Net++); DeepLab has none and runs once",
    )
    batch_sizes: list[int] | None = option(None, help="batch sizes (null: small 4 8 16; paper 2 4 ... 128)")
    losses: list[str] | None = option(
        None, help="losses (null: small ce focal hybrid; paper ce dice focal iou hybrid)"
    )
    optimizers: list[Literal["adam", "lion"]] = option(
        default_factory=lambda: ["adam", "lion"], help="Adam (the base's lr) against Lion"
    )
    lion_lr: float = option(LION_LR, help="Lion's learning rate (the authors': 1e-4)")
    lion_weight_decay: float = option(LION_WEIGHT_DECAY, help="Lion's weight decay (the authors': 1e-2)")
    augmentations: list[str] | None = option(
        None,
        help=f"augmentation presets, each alone: {', '.join(AUGMENTATIONS)} (null: small none rotation "
        "noise; paper: the report's none crop rotation noise)",
    )

    def validate(self) -> None:
        # Every trial's train config is checked while the options are read: a typo in base or a grid stops
        # the study before its run directory exists (exit 2), not hours into it.
        for trial in trials(self):
            check_trial_config(self, trial)


@dataclass(frozen=True)
class Trial:
    """One point of a study's grid: a name and the train options it sets over the shared ones."""

    study: str
    name: str
    options: dict[str, Any]


def _grid(config: StudySegConfig, key: str) -> list[Any]:
    chosen = getattr(config, key)
    return list(getattr(SCALES[config.scale], key) if chosen is None else chosen)


def _widths(config: StudySegConfig, arch: str) -> list[int | None]:
    if arch in WIDTHLESS:
        return [None]
    if config.widths is not None:
        return list(config.widths)
    scale = SCALES[config.scale]
    return list(scale.architectures.get(arch, scale.widths))


def architecture_grid(config: StudySegConfig) -> list[tuple[str, int | None]]:
    """(name, width) of every network of the architectures study; width None for one without a width."""
    archs = list(SCALES[config.scale].architectures) if config.archs is None else config.archs
    return [(arch, width) for arch in archs for width in _widths(config, arch)]


def _architecture(arch: str, width: int | None) -> Trial:
    # b=None clears the width the trial would otherwise share with the base (DeepLab refuses one)
    name = arch if width is None else f"{arch}-b{width}"
    return Trial("architectures", name, {"arch": arch, "model": {"b": width}})


def _optimizer(config: StudySegConfig, name: str) -> dict[str, Any]:
    # lion=False: the deprecated alias in a base would turn the Adam trial into Lion
    if name == "lion":
        lion = {"name": "lion", "lr": config.lion_lr, "weight_decay": config.lion_weight_decay}
        return {"lion": False, "optim": lion}
    return {"lion": False, "optim": {"name": "adam"}}


def _augmentation(name: str) -> dict[str, Any]:
    if name not in AUGMENTATIONS:
        raise UsageError(f"augmentations: no preset {name!r}; presets: {', '.join(AUGMENTATIONS)}")
    return {"augment": AUGMENTATIONS[name]}


def trials(config: StudySegConfig) -> list[Trial]:
    """Every trial of the chosen studies, study by study in the order of ``STUDIES``."""
    planned: dict[str, list[Trial]] = {
        "architectures": [_architecture(arch, width) for arch, width in architecture_grid(config)],
        "batch_sizes": [
            Trial("batch_sizes", f"batch{size}", {"batch_size": size})
            for size in _grid(config, "batch_sizes")
        ],
        "losses": [Trial("losses", loss, {"loss": loss}) for loss in _grid(config, "losses")],
        "optimizers": [Trial("optimizers", name, _optimizer(config, name)) for name in config.optimizers],
        "augmentations": [
            Trial("augmentations", name, _augmentation(name)) for name in _grid(config, "augmentations")
        ],
    }
    return [trial for study in STUDIES if study in config.studies for trial in planned[study]]


def trial_dir(study_dir: Path, trial: Trial) -> Path:
    return Path(study_dir) / "trials" / trial.study / trial.name


def trial_layers(config: StudySegConfig, trial: Trial, out: Path | None = None) -> list[Layer]:
    """The train config layers of ``trial``, run into ``out``."""
    run_keys = {
        "out": None if out is None else str(out),
        "data": None if config.data is None else str(config.data),
        "seed": config.seed,
        "device": config.device,
        **RANKING,
    }
    return [
        (f"study scale {config.scale}", SCALES[config.scale].base),
        ("study base (--set base.*)", config.base),
        (f"trial {trial.study}/{trial.name}", trial.options),
        ("study", run_keys),
    ]


def check_trial_config(config: StudySegConfig, trial: Trial) -> None:
    """Raise a UsageError naming the layer when ``trial``'s train options are wrong."""
    train_config, _ = resolve_config(TrainSegConfig, trial_layers(config, trial))
    if train_config.arch not in ARCHITECTURES:
        raise UsageError(
            f"study {trial.study}, trial {trial.name}: no architecture {train_config.arch!r}."
            f"{did_you_mean(train_config.arch, ARCHITECTURES)} Known: {', '.join(sorted(ARCHITECTURES))}."
        )


def settings(train_config: Any) -> dict[str, Any]:
    """What a trial trained with, in the table's terms (the augmentation as its preset name, or 'custom')."""
    augment = to_plain(train_config.augment)
    preset = next(
        (
            name
            for name, values in AUGMENTATIONS.items()
            if all(augment.get(k) == v for k, v in values.items())
        ),
        "custom",
    )
    return {
        "arch": train_config.arch,
        "width": train_config.model.get("b"),
        "batch_size": train_config.batch_size,
        "loss": train_config.loss,
        "optimizer": train_config.optim.name,
        "augmentation": preset,
    }
