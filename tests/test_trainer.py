"""GradientTrainer used directly, as a plugin's recipe does: it learns, shows progress only on a terminal,
and shards epochs deterministically."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from medkit import Dataset, Model, SegmentationScorer, UsageError
from medkit.checkpoint import load_checkpoint
from medkit.runs import Run
from medkit.seeding import rng_state, set_rng_state
from medkit.trainer import EpochShardSampler, GradientTrainer, rank_share_of


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


def test_the_trainer_takes_slices_from_the_cache_through_the_limited_ram_sampler(tmp_path):
    import numpy as np

    from medkit.cache.build import build_cache
    from medkit.cache.pairing import Pair
    from medkit.cache.sampler import ResidentSliceDataset
    from medkit.cache.selection import CachedSlices
    from medkit.cache.store import Preprocessing, SliceCache
    from medkit.cache.synthetic import ct_volume

    pairs = []
    for i in range(4):
        image, mask = ct_volume(8, 16, seed=i)
        np.savez(tmp_path / f"v{i}.npz", image=image, mask=mask)
        pairs.append(Pair(f"v{i}", tmp_path / f"v{i}.npz", tmp_path / f"v{i}.npz"))
    build_cache(pairs, tmp_path / "c.h5", preprocessing=Preprocessing("window", -1000, 400))
    cache = SliceCache(tmp_path / "c.h5")
    train = ResidentSliceDataset(cache, samples_per_epoch=48, resident=2, uses=6, volumes=[0, 1, 2])
    val = CachedSlices(cache, {3: list(range(8))})

    class LungByIntensity(nn.Conv2d, Model):
        name, task = "lung_by_intensity", "segmentation"

        def __init__(self) -> None:
            super().__init__(1, 4, kernel_size=1)

    trainer = GradientTrainer(
        loss=lambda logits, batch: nn.functional.cross_entropy(logits, batch["mask"]),
        make_optimizer=lambda params: torch.optim.Adam(params, lr=0.2),
        epochs=4,
        batch_size=8,
        console=Console(file=io.StringIO()),
    )
    trainer.fit(LungByIntensity(), train, val, Run(tmp_path / "run", "test", "fit", config=None))
    records = Run(tmp_path / "run", "test", "fit", config=None).read_metrics()
    assert [r["train/samples"] for r in records] == [48] * 4 and records[-1]["val/samples"] == 8
    assert records[-1]["val/loss"] < records[0]["val/loss"]


class ThreeChannels(Threshold):
    """Threshold on the mean of three channels, so that NCHW and NHWC layouts differ."""

    def __init__(self, size: int = 32) -> None:
        self.images = torch.randn(size, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def __getitem__(self, index: int) -> dict:
        image = self.images[index]
        return {"image": image, "mask": (image.mean(0) > 0).long()}


class LayoutRecorder(nn.Conv2d, Model):
    """A 1x1 convolution that records whether each batch it sees is channels-last."""

    name = "layout"
    task = "segmentation"

    def __init__(self) -> None:
        super().__init__(3, 2, kernel_size=1)
        self.seen_channels_last: set[bool] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_channels_last.add(
            not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        )
        return super().forward(x)


def test_channels_last_feeds_nhwc_batches_and_learns_the_same(tmp_path):
    losses = {}
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = LayoutRecorder()
        trainer = GradientTrainer(
            loss=lambda logits, batch: nn.functional.cross_entropy(logits, batch["mask"]),
            make_optimizer=lambda params: torch.optim.Adam(params, lr=0.1),
            epochs=2,
            batch_size=8,
            channels_last=channels_last,
            console=Console(file=io.StringIO()),
        )
        run = Run(tmp_path / str(channels_last), "test", "fit", config=None)
        summary = trainer.fit(model, ThreeChannels(), ThreeChannels(16), run)
        assert model.seen_channels_last == {channels_last}
        losses[channels_last] = summary["final"]["val/loss"]
    assert abs(losses[True] - losses[False]) < 1e-4


def test_a_two_headed_model_trains_and_its_scorer_sees_both_outputs_and_the_whole_batch(tmp_path):
    class Both(Threshold):
        def __getitem__(self, index: int) -> dict:
            sample = super().__getitem__(index)
            return {**sample, "label": int(sample["mask"].sum() > 32)}

    class TwoHeads(nn.Module, Model):
        name, task = "two_heads", "classification"

        def __init__(self) -> None:
            super().__init__()
            self.pixels, self.classes = nn.Conv2d(1, 2, 1), nn.Linear(64, 2)

        def forward(self, x: torch.Tensor) -> dict:
            return {"mask": self.pixels(x), "logits": self.classes(x.flatten(1))}

    seen: list = []

    class Recorder(SegmentationScorer):
        def update(self, prediction, target) -> None:
            seen.append((prediction, target))
            super().update(prediction["mask"], target["mask"])

    def loss(output: dict, batch: dict) -> torch.Tensor:
        return nn.functional.cross_entropy(output["mask"], batch["mask"]) + nn.functional.cross_entropy(
            output["logits"], batch["label"]
        )

    trainer = GradientTrainer(
        loss=loss,
        make_optimizer=lambda params: torch.optim.Adam(params, lr=0.1),
        make_scorers=lambda: [Recorder(Threshold.class_names)],
        epochs=2,
        target_key=None,
        console=Console(file=io.StringIO()),
    )
    summary = trainer.fit(TwoHeads(), Both(), Both(16), Run(tmp_path, "test", "fit", config=None))
    prediction, target = seen[-1]
    assert not prediction["mask"].requires_grad and not prediction["logits"].requires_grad
    assert set(target) == {"image", "mask", "label"}
    assert summary["final"]["val/mean_dice"] > 0.8


def trainer_for(epochs: int, **options) -> GradientTrainer:
    return GradientTrainer(
        loss=lambda logits, batch: nn.functional.cross_entropy(logits, batch["mask"]),
        make_optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        make_scheduler=lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs),
        make_scorers=lambda: [SegmentationScorer(Threshold.class_names)],
        epochs=epochs,
        batch_size=8,
        console=Console(file=io.StringIO()),
        **options,
    )


def test_random_states_restore_from_cpu_bytes_however_the_checkpoint_was_mapped(tmp_path):
    """Resume on CUDA loads a checkpoint with map_location=device; the saved random states must still restore
    (torch.set_rng_state takes only a CPU byte tensor). "meta" stands in for a GPU: a device holding no data."""
    trainer_for(1).fit(PixelClassifier(), Threshold(), None, Run(tmp_path, "test", "fit", config=None))
    draws = {}
    for device in ("cpu", "meta"):
        set_rng_state(load_checkpoint(tmp_path / "checkpoints" / "last.pt", map_location=device)["rng"])
        draws[device] = (torch.rand(4).tolist(), np.random.rand(2).tolist(), random.random())
    assert draws["meta"] == draws["cpu"]
    saved = torch.get_rng_state()  # checkpoints written before this change hold the state as a tensor
    expected = torch.rand(2)
    set_rng_state({**rng_state(), "torch": saved})
    assert torch.equal(torch.rand(2), expected)


def test_a_run_resumed_with_more_epochs_follows_the_schedule_planned_for_the_new_total(tmp_path):
    """A finished 3-epoch cosine run resumed with --epochs 6 trains epochs 4-6 at the rates a 6-epoch run has
    there, not at the old plan's final rate of zero."""
    run = Run(tmp_path, "test", "fit", config=None)
    trainer_for(3).fit(PixelClassifier(), Threshold(), Threshold(16), run)
    resumed = Run(tmp_path, "test", "fit", config=None, resume=True)
    trainer_for(6).fit(PixelClassifier(), Threshold(), Threshold(16), resumed)
    rates = {r["epoch"]: r["lr"] for r in resumed.read_metrics()}
    planned = {e: 0.1 * (1 + math.cos(math.pi * (e - 1) / 6)) / 2 for e in (4, 5, 6)}
    assert [rates[e] for e in (4, 5, 6)] == pytest.approx([planned[e] for e in (4, 5, 6)], rel=1e-6)
    assert rates[3] == pytest.approx(0.1 * (1 + math.cos(math.pi * 2 / 3)) / 2)  # the first run's own plan


def test_a_misspelt_monitor_stops_the_trainer_before_the_first_step_naming_the_closest_figure(tmp_path):
    trainer = trainer_for(1, monitor="val/mean_dcie")
    model = PixelClassifier()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(UsageError, match=r"val/mean_dcie.*Did you mean 'val/mean_dice'"):
        trainer.fit(model, Threshold(), Threshold(16), Run(tmp_path, "test", "fit", config=None))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("setting", [{"epochs": 0}, {"batch_size": 0}, {"num_workers": -1}])
def test_settings_that_would_waste_a_run_are_refused_before_it_starts(tmp_path, setting):
    trainer = trainer_for(1)
    for key, value in setting.items():
        setattr(trainer, key, value)
    with pytest.raises(UsageError, match=f"{next(iter(setting))}={next(iter(setting.values()))}"):
        trainer.fit(PixelClassifier(), Threshold(), None, Run(tmp_path, "test", "fit", config=None))


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(Threshold(10)[i] for i in range(10))


def test_an_iterable_evaluation_set_is_shared_between_ranks_not_scored_whole_by_each():
    shares = [list(rank_share_of(Stream(), rank, 3)) for rank in range(3)]
    assert [len(share) for share in shares] == [4, 3, 3]
    images = [sample["image"] for share in shares for sample in share]
    assert len({tuple(image.flatten().tolist()) for image in images}) == 10
    assert rank_share_of(Stream(), 0, 1).__class__ is Stream


def _fit_on_rank(rank: int, world: int, init_file: str, folder: str, epochs: int, resume: bool) -> None:
    """One rank of a gloo job: fit, recording the first global random draw of each epoch's loss calls."""
    import json
    from pathlib import Path

    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    torch.manual_seed(0)  # as the runner seeds every rank alike before the recipe builds its model
    draws: list[float] = []

    def loss(logits, batch):
        draws.append(float(torch.rand(1)))  # dropout or augmentation would draw here
        return nn.functional.cross_entropy(logits, batch["mask"])

    trainer = trainer_for(epochs)
    trainer.loss = loss
    run = Run(Path(folder), "test", "fit", config=None, resume=resume, rank=rank, world_size=world)
    trainer.fit(PixelClassifier(), Threshold(), None, run)
    Path(f"{folder}/draws.{rank}.{epochs}").write_text(json.dumps(draws))
    torch.distributed.destroy_process_group()


def test_under_torchrun_each_rank_draws_its_own_random_numbers_and_resumes_its_own_stream(tmp_path):
    """The runner seeds every rank alike (so the model is built alike); from training on, each rank's dropout and
    augmentation must differ, and a resumed run must give each rank back its own stream."""
    import json

    def job(folder, epochs, resume, init):
        torch.multiprocessing.spawn(
            _fit_on_rank, args=(2, str(tmp_path / init), str(folder), epochs, resume), nprocs=2, join=True
        )
        return [json.loads((folder / f"draws.{rank}.{epochs}").read_text()) for rank in range(2)]

    whole = job(tmp_path / "whole", 2, False, "init-a")
    assert whole[0] != whole[1]
    job(tmp_path / "split", 1, False, "init-b")
    resumed = job(tmp_path / "split", 2, True, "init-c")
    steps = len(whole[0]) // 2
    assert [r[-steps:] for r in resumed] == [w[-steps:] for w in whole]
