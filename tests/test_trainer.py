"""GradientTrainer used directly, as a plugin's recipe does: it learns, shows progress only on a terminal,
and shards epochs deterministically."""

from __future__ import annotations

import io

import torch
from rich.console import Console
from torch import nn

from medkit import Dataset, Model, SegmentationScorer
from medkit.runs import Run
from medkit.trainer import EpochShardSampler, GradientTrainer


class Threshold(Dataset):
    """Pixels above zero are class 1: a 1x1 convolution can learn it exactly."""

    task = "segmentation"
    class_names = ("background", "foreground")

    def __init__(self, size: int = 32) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(size, 1, 8, 8, generator=generator)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        image = self.images[index]
        return {"image": image, "mask": (image[0] > 0).long()}


class PixelClassifier(nn.Conv2d, Model):
    name = "pixel"
    task = "segmentation"

    def __init__(self) -> None:
        super().__init__(1, 2, kernel_size=1)


def fit(tmp_path, console: Console, epochs: int = 3) -> dict:
    torch.manual_seed(0)
    trainer = GradientTrainer(
        loss=lambda logits, batch: nn.functional.cross_entropy(logits, batch["mask"]),
        make_optimizer=lambda params: torch.optim.Adam(params, lr=0.1),
        make_scorers=lambda: [SegmentationScorer(Threshold.class_names)],
        epochs=epochs,
        batch_size=8,
        monitor="val/mean_dice",
        mode="max",
        console=console,
    )
    run = Run(tmp_path, "test", "fit", config=None)
    return trainer.fit(PixelClassifier(), Threshold(), Threshold(16), run)


def test_the_trainer_learns_a_separable_task(tmp_path):
    summary = fit(tmp_path, Console(file=io.StringIO()), epochs=5)
    assert summary["final"]["val/mean_dice"] > 0.95
    assert summary["final"]["train/loss"] < 0.3


def test_progress_bars_only_on_a_terminal(tmp_path):
    terminal, pipe = io.StringIO(), io.StringIO()
    fit(tmp_path / "a", Console(file=terminal, force_terminal=True, width=100), epochs=1)
    fit(tmp_path / "b", Console(file=pipe, force_terminal=False), epochs=1)
    assert "epoch 1/1 train" in terminal.getvalue()
    assert "epoch 1/1 train" not in pipe.getvalue()
    assert "epoch 1/1  train/loss=" in pipe.getvalue()  # one plain line per epoch instead


def test_shards_of_an_epoch_cover_every_sample_and_change_with_the_epoch():
    ranks = [EpochShardSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    for sampler in ranks:
        sampler.set_epoch(1)
    shards = [sampler.indices() for sampler in ranks]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded so every rank takes the same number of steps
    assert set().union(*shards) == set(range(10))
    ranks[0].set_epoch(2)
    assert ranks[0].indices() != shards[0]
    ranks[0].set_epoch(1)
    assert ranks[0].indices() == shards[0]


def test_curves_show_loss_then_summary_figures_before_per_class_ones():
    from medkit.plots import curve_names

    records = [
        {
            "epoch": 1,
            "train/loss": 1.0,
            "val/dice/lung": 0.5,
            "val/mean_dice": 0.5,
            "val/samples": 4,
            "val/pixel_accuracy": 0.9,
            "lr": 0.1,
        }
    ]
    assert curve_names(records) == ["loss", "mean_dice", "pixel_accuracy", "dice/lung"]
