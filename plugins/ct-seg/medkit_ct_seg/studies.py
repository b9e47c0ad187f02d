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

from .config import TrainSegConfig
from .plugin import ARCHITECTURES

STUDIES = ("architectures", "batch_sizes", "losses", "optimizers", "augmentations")
StudyName = Literal["architectures", "batch_sizes", "losses", "optimizers", "augmentations"]

PAPER_FAMILIES = (  # the spec's parameter table: 8 families x widths 8..128
    "mini_unet",
    "unet",
    "max_unet",
    "unetpp",
    "attn_unetpp_v1",
    "attn_unetpp_v2",
    "attn_unetpp_v3",
    "attn_unetpp_v4",
)

_NO_AUGMENTATION = {
    "rotate_degrees": 0.0,
    "crop_scale": 1.0,
    "noise_std": 0.0,
    "brightness_contrast": 0.0,
    "blur": False,
    "flips": False,
}
_PAPER_AUGMENTATION = {**_NO_AUGMENTATION, "rotate_degrees": 5.0, "crop_scale": 0.95}
AUGMENTATIONS: dict[str, dict[str, Any]] = {
    "none": _NO_AUGMENTATION,
    "paper": _PAPER_AUGMENTATION,  # rotation 5 degrees (p 0.7), crop 95-100 % (spec, Training facts)
    # the authors' Gauss noise var 5-20 on a 0-255 scale: std up to sqrt(20) / 255 = 0.018 on [0, 1]
    "paper+noise": {**_PAPER_AUGMENTATION, "noise_std": 0.018},
    "paper+brightness_contrast": {**_PAPER_AUGMENTATION, "brightness_contrast": 0.2},
    "paper+blur": {**_PAPER_AUGMENTATION, "blur": True},  # the report advises against blur and flips
    "paper+flips": {**_PAPER_AUGMENTATION, "flips": True},
}

RANKING = {"monitor": "val/mean_dice", "monitor_mode": "max"}  # the report ranks by validation mean Dice


@dataclass(frozen=True)
class Scale:
    """The options every trial shares at one scale, and the default grid of each study."""

    base: dict[str, Any]
    archs: tuple[str, ...]
    widths: tuple[int, ...]
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
        archs=("mini_unet", "unet", "attn_unetpp_v2"),
        widths=(8,),
        batch_sizes=(4, 8, 16),
        losses=("ce", "focal", "hybrid"),
        augmentations=("none", "paper", "paper+noise"),
    ),
    # configs/paper.yaml (the authors' set-up) with the report's best architecture: 60 trials, a GPU's work
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
            "augment": _PAPER_AUGMENTATION,
        },
        archs=PAPER_FAMILIES,
        widths=(8, 16, 32, 64, 128),
        batch_sizes=(2, 4, 8, 16, 32, 64, 128),
        losses=("ce", "dice", "focal", "iou", "hybrid"),
        augmentations=tuple(AUGMENTATIONS),
    ),
}


@dataclass(kw_only=True)
class StudySegConfig(RecipeConfig):
    scale: Literal["small", "paper"] = option(
        "small",
        help="small: 14 short trials on tiny phantoms (64 px, b=8, 3 epochs), a few CPU minutes; "
        "paper: the report's grid, configs/paper.yaml for 100 epochs, 60 trials (hours to days on a GPU)",
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
        "paper: the spec table's 8 families)",
    )
    widths: list[int] | None = option(
        None, help="architectures study: widths b (null: small 8; paper 8 16 32 64 128)"
    )
    batch_sizes: list[int] | None = option(None, help="batch sizes (null: small 4 8 16; paper 2 4 ... 128)")
    losses: list[str] | None = option(
        None, help="losses (null: small ce focal hybrid; paper ce dice focal iou hybrid)"
    )
    optimizers: list[Literal["adam", "lion"]] = option(
        default_factory=lambda: ["adam", "lion"], help="Adam (the base's lr) against Lion"
    )
    lion_lr: float = option(1e-4, help="Lion's learning rate (the authors': 1e-4)")
    lion_weight_decay: float = option(1e-2, help="Lion's weight decay (the authors': 1e-2)")
    augmentations: list[str] | None = option(
        None,
        help=f"augmentation presets: {', '.join(AUGMENTATIONS)} (null: small none paper paper+noise; "
        "paper: all)",
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


def _optimizer(config: StudySegConfig, name: str) -> dict[str, Any]:
    if name == "lion":
        return {"lion": True, "optim": {"lr": config.lion_lr, "weight_decay": config.lion_weight_decay}}
    return {"lion": False, "optim": {"name": "adam"}}


def _augmentation(name: str) -> dict[str, Any]:
    if name not in AUGMENTATIONS:
        raise UsageError(f"augmentations: no preset {name!r}; presets: {', '.join(AUGMENTATIONS)}")
    return {"augment": AUGMENTATIONS[name]}


def trials(config: StudySegConfig) -> list[Trial]:
    """Every trial of the chosen studies, study by study in the order of ``STUDIES``."""
    planned: dict[str, list[Trial]] = {
        "architectures": [
            Trial("architectures", f"{arch}-b{width}", {"arch": arch, "model": {"b": width}})
            for arch in _grid(config, "archs")
            for width in _grid(config, "widths")
        ],
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
        "optimizer": "lion" if train_config.lion else train_config.optim.name,
        "augmentation": preset,
    }
