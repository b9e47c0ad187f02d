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

from .config import PAPER, TrainUbcConfig

PAPER_SIZES = (1, 2, 5, 10, 20, 38, 76, 190)


@dataclass(frozen=True)
class Scale:
    base: dict[str, Any]
    sizes: tuple[int, ...]
    seeds: int


SCALES = {
    # a CPU study, 2-4 minutes per trial on one thread: 64 px, 20 synthetic patients per class (50 training
    # images per class, one fixed test set of 100), the CPU demo's Adam lr 5e-4 and batch 16 with the paper's
    # schedule shape (x0.9 every 5 epochs), and 12 epochs of at least 128 images (whole passes of the subset):
    # 96-156 optimiser steps per trial, so the 2-image subsets train about as long as the 50-image ones; the
    # figures are the mean of the last 5 evaluations, as the paper reads them (section 3). Batch 8 and 120 images
    # of 10 epochs (the previous scale) left both models short of their plateau at 50 images per class
    "small": Scale(
        base={
            "epochs": 12,
            "image_size": 64,
            "batch_size": 16,
            "min_epoch_images": 128,
            "plateau": 5,
            "data_options": {"synthetic": {"patients": 20}},
        },
        sizes=(2, 5, 10, 20, 50),
        seeds=3,
    ),
    # the paper's protocol (config.PAPER = configs/paper.yaml): 224 px, 200 epochs, Adam 2e-5, batch 50, 76
    # patients per class halved, plateau of 5 evaluations, 5 repetitions
    "paper": Scale(base=PAPER, sizes=PAPER_SIZES, seeds=5),
}


@dataclass(kw_only=True)
class StudyUbcConfig(RecipeConfig):
    scale: Literal["small", "paper"] = option(
        "small",
        help="small: a CPU study (64 px, 12 epochs of at least 128 images, lr 5e-4, batch 16, sizes 2 5 10 20 50, "
        "3 seeds); paper: configs/paper.yaml's set-up (224 px, 200 epochs, Adam 2e-5, batch 50), sizes 1-190, 5 "
        "seeds (a GPU's work)",
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
    # smallest sizes first, every model at a size and seed before the next: a study cut short (a CPU's budget)
    # has still compared the models where the paper's claim lies, the small-sample end
    return [Trial(arch, size, seed) for size in sizes for seed in range(seeds) for arch in config.archs]


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
