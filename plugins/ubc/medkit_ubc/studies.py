"""The small-sample study of paper 003 (section 3, figure 6): both models trained on 1..190 images per class,
each evaluated on one fixed test set, repeated over seeds - a grid of `train` runs.

Every trial is a normal train run in ``trials/<arch>/n<size>-seed<seed>/``; one with a summary.json is kept on
``--resume``, one without is resumed from its last epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medkit import UsageError, option
from medkit.config import Layer, RecipeConfig, resolve_config

from .config import TrainUbcConfig

PAPER_SIZES = (1, 2, 5, 10, 20, 38, 76, 190)


@dataclass(frozen=True)
class Scale:
    base: dict[str, Any]
    sizes: tuple[int, ...]
    seeds: int


SCALES = {
    # about a CPU minute per trial: 64 px, 20 synthetic patients per class (50 training images per class, a
    # fixed test set of 100), 15 epochs of configs/cpu.yaml's optimiser (lr 5e-4, batch 16) - a 2-image subset
    # takes one Adam step per epoch, and 15 steps at the paper's 2e-5 would leave a random network
    "small": Scale(
        base={
            "epochs": 15,
            "image_size": 64,
            "batch_size": 16,
            "plateau": 3,
            "optim": {"lr": 5e-4},
            "data_options": {"synthetic": {"patients": 20}},
        },
        sizes=(2, 5, 20),
        seeds=2,
    ),
    # the paper's protocol: 224 px, 200 epochs, Adam 2e-5, 76 patients per class halved, 5 repetitions
    "paper": Scale(
        base={"epochs": 200, "image_size": 224, "data_options": {"synthetic": {"patients": 76}}},
        sizes=PAPER_SIZES,
        seeds=5,
    ),
}


@dataclass(kw_only=True)
class StudyUbcConfig(RecipeConfig):
    scale: Literal["small", "paper"] = option(
        "small",
        help="small: a CPU study (64 px, 15 epochs, lr 5e-4, batch 16, sizes 2 5 20, 2 seeds); paper: 224 px, 200 "
        "epochs, the paper's optimiser, "
        "sizes 1-190, 5 seeds (a GPU's work)",
    )
    archs: list[str] = option(default_factory=lambda: ["resnet34", "ubc_resnet34"], help="models compared")
    sizes: list[int] | None = option(
        None, help="training images per class (null: the scale's; paper 1 2 5 10 20 38 76 190)"
    )
    seeds: int | None = option(None, help="repetitions per size, seeds 0..N-1 (null: the scale's)")
    split_seed: int = option(0, help="seed of the one patient-wise train/test split every trial shares")
    base: dict[str, Any] = option(
        default_factory=dict,
        help="train options every trial shares, over the scale's (any key of `medkit run ubc train --help`)",
    )

    def validate(self) -> None:
        for trial in trials(self):
            resolve_config(TrainUbcConfig, trial_layers(self, trial))


@dataclass(frozen=True)
class Trial:
    arch: str
    size: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.arch}/n{self.size}-seed{self.seed}"


def trials(config: StudyUbcConfig) -> list[Trial]:
    scale = SCALES[config.scale]
    sizes = list(scale.sizes if config.sizes is None else config.sizes)
    seeds = scale.seeds if config.seeds is None else config.seeds
    if not sizes or min(sizes) < 1:
        raise UsageError(f"sizes {sizes}: give training images per class, each at least 1")
    if seeds < 1:
        raise UsageError(f"seeds={seeds}: run each size at least once")
    return [Trial(arch, size, seed) for arch in config.archs for size in sizes for seed in range(seeds)]


def trial_dir(study_dir: Path, trial: Trial) -> Path:
    return Path(study_dir) / "trials" / trial.arch / f"n{trial.size}-seed{trial.seed}"


def trial_layers(config: StudyUbcConfig, trial: Trial, out: Path | None = None) -> list[Layer]:
    run_keys = {
        "out": None if out is None else str(out),
        "data": None if config.data is None else str(config.data),
        "device": config.device,
        "arch": trial.arch,
        "per_class": trial.size,
        "seed": trial.seed,
        "split_seed": config.split_seed,
    }
    return [
        (f"study scale {config.scale}", SCALES[config.scale].base),
        ("study base (--set base.*)", config.base),
        (f"trial {trial.name}", run_keys),
    ]
