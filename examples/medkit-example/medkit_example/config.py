"""Options of the example's train recipe (torch-free, so `medkit run example --help` is instant)."""

from dataclasses import dataclass
from typing import Literal

from medkit import option
from medkit.config import OptimizerConfig, TrainingConfig


@dataclass(kw_only=True)
class TrainShapesConfig(TrainingConfig):
    arch: str = option("tiny_cnn", help="architecture name (--arch)")
    epochs: int = option(12, help="number of epochs", minimum=1)
    batch_size: int = option(16, help="samples per batch (per process under torchrun)", minimum=1)
    optim: OptimizerConfig = option(
        default_factory=lambda: OptimizerConfig(lr=1e-2, scheduler="cosine"), help="optimiser"
    )
    monitor: str = option("val/mean_dice", help="figure that picks the best checkpoint")
    monitor_mode: Literal["min", "max"] = option(
        "max", help="whether the monitored figure should fall or rise"
    )
    samples: int = option(384, help="size of the embedded data set (ignored with --data)")
    image_size: int = option(32, help="side of the embedded images in pixels")
    val_fraction: float = option(0.25, help="share of samples held out for validation")
