"""The reusable gradient trainer: epochs, scorers, best/last checkpoints, early stopping, exact resume, AMP, DDP.

Determinism: the order of samples in epoch ``e`` is a permutation drawn from ``(seed, e)`` alone, and every
global random state is saved with the checkpoint at the end of each epoch, so a run killed in epoch ``e`` and
resumed repeats epoch ``e`` exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from rich.console import Console
from torch.utils.data import DataLoader, IterableDataset, Sampler

from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .errors import UsageError
from .interfaces import Dataset, Model, Scorer, Trainer
from .monitor import check_monitor
from .plots import plot_curves
from .runs import Run
from .seeding import rank_seed, rng_state, seed_everything, set_rng_state

LossFn = Callable[[torch.Tensor, dict[str, Any]], torch.Tensor]


class EpochShardSampler(Sampler[int]):
    """This rank's share of a permutation drawn from (seed, epoch); shards are padded to equal length so that
    every DDP rank takes the same number of steps."""

    def __init__(
        self, size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ) -> None:
        self.size, self.seed, self.rank, self.world_size, self.shuffle = size, seed, rank, world_size, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        per_rank = math.ceil(self.size / self.world_size)
        padded = order + order[: per_rank * self.world_size - self.size]
        return padded[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)


def move_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def detached(output: Any) -> Any:
    """A model output cut from the graph as float: a tensor, or the tuples, lists and dicts of tensors that
    multi-head models return (a classifier with a segmentation decoder returns logits and a mask)."""
    if torch.is_tensor(output):
        return output.detach().float()
    if isinstance(output, dict):
        return {key: detached(value) for key, value in output.items()}
    if isinstance(output, list | tuple):
        return type(output)(detached(value) for value in output)
    return output


def to_channels_last(batch: dict[str, Any], key: str) -> dict[str, Any]:
    """``batch[key]`` in channels-last layout when it is a 4-D image batch; everything else unchanged."""
    x = batch.get(key)
    if torch.is_tensor(x) and x.ndim == 4:
        batch = {**batch, key: x.contiguous(memory_format=torch.channels_last)}
    return batch


@dataclass
class EpochResult:
    loss_sum: float = 0.0
    count: int = 0
    scorers: list[Scorer] = field(default_factory=list)


@dataclass
class GradientTrainer(Trainer):
    """Trains a torch :class:`Model` by gradient descent on batches of ``{input_key: x, target_key: y}``."""

    loss: LossFn
    make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
    make_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None
    make_scorers: Callable[[], Sequence[Scorer]] = list
    epochs: int = 10
    batch_size: int = 8
    num_workers: int = 0
    device: str = "cpu"
    amp: bool = True
    channels_last: bool = False  # NHWC for convnets: 10-40 % faster on CPU (benchmarks/ct_seg_training.py)
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    patience: int | None = None
    seed: int = 0
    input_key: str = "image"
    target_key: str | None = "mask"  # None: scorers get the whole batch (several targets: label and mask)
    arch: str | None = None
    arch_options: dict[str, Any] = field(default_factory=dict)  # saved with checkpoints, to rebuild the model
    console: Console = field(default_factory=Console)

    def fit(self, model: Model, train: Dataset, val: Dataset | None, run: Run) -> dict[str, Any]:
        self.dist = distributed.current()
        self.device_obj = torch.device(self.device)
        self._check_settings()
        module: torch.nn.Module = model.to(self.device_obj)  # type: ignore[attr-defined]
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.use_amp = self.amp and self.device_obj.type == "cuda"
        optimizer = self.make_optimizer(module.parameters())
        scheduler = self.make_scheduler(optimizer) if self.make_scheduler else None
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        progress = {"epoch": 0, "best": None, "best_epoch": None, "bad_epochs": 0, "stopped_early": False}
        if run.resume and run.last_checkpoint.is_file():
            progress, scheduler = self._restore(run, module, optimizer, scheduler, scaler)
        elif self.dist.enabled:
            # every rank built the same model from the run's seed (and DDP broadcasts rank 0's weights); from
            # here on dropout and augmentation drawn from the global generators must differ between ranks
            seed_everything(rank_seed(self.seed, self.dist.rank), deterministic=False)
        run.keep_metrics(progress["epoch"])
        wrapped = self._wrap(module)
        for epoch in range(progress["epoch"] + 1, self.epochs + 1):
            if progress["stopped_early"]:
                break
            record = self._epoch(epoch, wrapped, module, train, val, optimizer, scaler)
            if scheduler is not None:
                scheduler.step()
            self._track_best(record, progress, run, module)
            progress["epoch"] = epoch
            run.log_metrics(record)
            self._report(record)
            self._checkpoint(run.last_checkpoint, run, module, optimizer, scheduler, scaler, progress)
            distributed.barrier()
        return self._summary(run, progress)

    def _check_settings(self) -> None:
        """Settings that would waste a run: no epochs, empty batches, a monitored figure no scorer computes
        (a typo there silently disables best.pt and early stopping)."""
        if self.epochs < 1 or self.batch_size < 1 or self.num_workers < 0:
            raise UsageError(
                f"epochs={self.epochs}, batch_size={self.batch_size}, num_workers={self.num_workers}: epochs and "
                "batch_size must be at least 1 and num_workers at least 0"
            )
        check_monitor(self.monitor, declared_figures(self.make_scorers()))

    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.dist.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.dist.local_rank] if self.device_obj.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def _loader(self, dataset: Any, sampler: Sampler[int] | Sequence[int] | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.device_obj.type == "cuda",
            persistent_workers=False,
        )

    def _progress(self, loader: DataLoader, description: str) -> Iterator[dict[str, Any]]:
        """The loader's batches, with a rich progress bar on the main process when the output is a terminal."""
        if not (self.dist.is_main and self.console.is_terminal):
            yield from loader
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:
            try:
                total = len(loader)
            except TypeError:  # an iterable dataset without a length
                total = None
            task = progress.add_task(description, total=total)
            for batch in loader:
                yield batch
                progress.advance(task)

    def _train_loader(self, train: Any, epoch: int) -> DataLoader:
        """A map-style dataset is shuffled by (seed, epoch) and sharded by rank here; an iterable one (such as
        the slice cache's ResidentSliceDataset) shards itself and is told the epoch."""
        if isinstance(train, IterableDataset):
            if hasattr(train, "set_epoch"):
                train.set_epoch(epoch)
            return self._loader(train, None)
        sampler = EpochShardSampler(len(train), self.seed, self.dist.rank, self.dist.world_size)
        sampler.set_epoch(epoch)
        return self._loader(train, sampler)

    def _epoch(self, epoch, wrapped, module, train, val, optimizer, scaler) -> dict[str, Any]:
        started = time.perf_counter()
        wrapped.train()
        result = EpochResult(scorers=list(self.make_scorers()))
        for batch in self._progress(self._train_loader(train, epoch), f"epoch {epoch}/{self.epochs} train"):
            batch = self._prepare(batch)
            with torch.autocast(device_type=self.device_obj.type, enabled=self.use_amp):
                output = wrapped(batch[self.input_key])
                loss = self.loss(output, batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            self._accumulate(result, loss, output, batch)
        record: dict[str, Any] = {"epoch": epoch, **self._figures("train", result)}
        if val is not None and (isinstance(val, IterableDataset) or len(val) > 0):
            record.update(self.evaluate(module, val))
        record["lr"] = optimizer.param_groups[0]["lr"]
        record["seconds"] = round(time.perf_counter() - started, 3)
        return record

    def _prepare(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = move_to(batch, self.device_obj)
        return to_channels_last(batch, self.input_key) if self.channels_last else batch

    def _accumulate(self, result: EpochResult, loss: torch.Tensor, output: torch.Tensor, batch: dict) -> None:
        size = len(batch[self.input_key])
        result.loss_sum += float(loss.detach()) * size
        result.count += size
        for scorer in result.scorers:
            scorer.update(detached(output), batch if self.target_key is None else batch[self.target_key])

    @torch.inference_mode()
    def evaluate(self, module: torch.nn.Module, dataset: Dataset, prefix: str = "val") -> dict[str, float]:
        """Loss and scorer figures over ``dataset``, each rank scoring its shard, merged across ranks."""
        module.eval()
        if isinstance(dataset, IterableDataset):
            shard = None
            dataset = rank_share_of(dataset, self.dist.rank, self.dist.world_size)
        else:
            shard = range(self.dist.rank, len(dataset), self.dist.world_size)
        result = EpochResult(scorers=list(self.make_scorers()))
        for batch in self._progress(self._loader(dataset, shard), prefix):
            batch = self._prepare(batch)
            with torch.autocast(device_type=self.device_obj.type, enabled=self.use_amp):
                output = module(batch[self.input_key])
                loss = self.loss(output, batch)
            self._accumulate(result, loss, output, batch)
        return self._figures(prefix, result)

    def _figures(self, prefix: str, result: EpochResult) -> dict[str, float]:
        states = distributed.gather_objects(
            (result.loss_sum, result.count, [scorer.state for scorer in result.scorers])
        )
        loss_sum = sum(s[0] for s in states)
        count = sum(s[1] for s in states)
        figures = {f"{prefix}/loss": loss_sum / max(count, 1), f"{prefix}/samples": count}
        for i, scorer in enumerate(result.scorers):
            scorer.reset()
            for state in states:
                scorer.merge(state[2][i])
            figures.update({f"{prefix}/{k}": v for k, v in scorer.compute().items()})
        return figures

    def _track_best(self, record: dict, progress: dict, run: Run, module: torch.nn.Module) -> None:
        value = record.get(self.monitor)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        best = progress["best"]
        improved = best is None or (value < best if self.mode == "min" else value > best)
        if improved:
            progress.update(best=value, best_epoch=record["epoch"], bad_epochs=0)
            if run.is_main:
                save_checkpoint(run.best_checkpoint, self._model_state(module, record["epoch"]))
        else:
            progress["bad_epochs"] += 1
            if self.patience is not None and progress["bad_epochs"] >= self.patience:
                progress["stopped_early"] = True

    def _model_state(self, module: torch.nn.Module, epoch: int) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "arch_options": dict(self.arch_options),
            "epoch": epoch,
            "model": module.state_dict(),
        }

    def _checkpoint(self, path, run, module, optimizer, scheduler, scaler, progress) -> None:
        rng_by_rank = distributed.gather_objects(rng_state())  # a collective: every rank takes part
        if not run.is_main:
            return
        state = self._model_state(module, progress["epoch"])
        state.update(
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict() if scheduler is not None else None,
            planned_epochs=self.epochs,
            scaler=scaler.state_dict(),
            progress=dict(progress),
            rng=rng_by_rank[0],
            rng_by_rank=rng_by_rank,
            world_size=self.dist.world_size,
            written_by_rank=self.dist.rank,
        )
        save_checkpoint(path, state)

    def _restore(self, run, module, optimizer, scheduler, scaler) -> tuple[dict[str, Any], Any]:
        """Load last.pt; returns the progress and the scheduler to go on with.

        The checkpoint is read onto the CPU: ``load_state_dict`` copies weights and optimiser moments onto the
        module's device, and the random states must be restored from CPU bytes whatever the device.
        """
        state = load_checkpoint(run.last_checkpoint, arch=self.arch, map_location="cpu")
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch = state["progress"]["epoch"]
        if scheduler is not None and state.get("scheduler") is not None:
            planned = state.get("planned_epochs", self.epochs)
            if planned == self.epochs:
                scheduler.load_state_dict(state["scheduler"])
            else:
                scheduler = self._replanned_scheduler(optimizer, epoch)
        scaler.load_state_dict(state["scaler"])
        by_rank = state.get("rng_by_rank") or []
        set_rng_state(by_rank[self.dist.rank] if len(by_rank) == self.dist.world_size else state["rng"])
        if run.is_main:
            self.console.print(f"resuming {run.dir} after epoch {epoch}")
        return dict(state["progress"]), scheduler

    def _replanned_scheduler(self, optimizer: torch.optim.Optimizer, epoch: int) -> Any:
        """The schedule of a run resumed with another ``--epochs``: planned for the new total, as if the run
        had been started with it, and advanced to the resumed epoch. The old plan would have held the learning
        rate at its end value (zero for cosine) for every added epoch."""
        for group in optimizer.param_groups:
            group["lr"] = group.get("initial_lr", group["lr"])
        assert self.make_scheduler is not None
        scheduler = self.make_scheduler(optimizer)
        with warnings.catch_warnings():  # stepping without optimiser steps is the point here
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step\\(\\)", category=UserWarning)
            for _ in range(epoch):
                scheduler.step()
        return scheduler

    def _report(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        shown = [f"{k}={v:.4f}" for k, v in record.items() if k in ("train/loss", "val/loss", self.monitor)]
        self.console.print(f"epoch {record['epoch']}/{self.epochs}  " + "  ".join(dict.fromkeys(shown)))

    def _summary(self, run: Run, progress: dict[str, Any]) -> dict[str, Any]:
        records = run.read_metrics() if run.is_main else []
        if run.is_main and records:
            plot_curves(records, run.plots_dir / "curves.png", title=f"{run.plugin} {run.recipe}")
        last = records[-1] if records else {}
        return {
            "epochs_run": progress["epoch"],
            "stopped_early": progress["stopped_early"],
            "monitor": self.monitor,
            "best_epoch": progress["best_epoch"],
            "best": progress["best"],
            "final": {k: v for k, v in last.items() if k not in ("epoch", "seconds")},
            "world_size": self.dist.world_size,
        }


def declared_figures(scorers: Sequence[Scorer]) -> list[str] | None:
    """The figures these scorers compute, or None when one of them does not declare its own."""
    names: list[str] = []
    for scorer in scorers:
        declared = scorer.figure_names()
        if declared is None:
            return None
        names += declared
    return names


def rank_share_of(dataset: IterableDataset, rank: int, world_size: int) -> IterableDataset:
    """This rank's share of an iterable evaluation set: the set itself when it shards by rank on its own
    (``shards_by_rank``), else every ``world_size``-th sample, so that no sample is scored twice."""
    if world_size == 1 or getattr(dataset, "shards_by_rank", False):
        return dataset
    return RankShare(dataset, rank, world_size)


class RankShare(IterableDataset):
    """Samples ``rank, rank + world_size, ...`` of an iterable dataset."""

    def __init__(self, dataset: IterableDataset, rank: int, world_size: int) -> None:
        self.dataset, self.rank, self.world_size = dataset, rank, world_size

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.dataset), self.rank, None, self.world_size)


def make_optimizer_factory(optim: Any) -> Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]:
    """An optimiser factory from an :class:`~medkit.config.OptimizerConfig`."""

    def build(parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if optim.name == "adam":
            return torch.optim.Adam(parameters, lr=optim.lr, weight_decay=optim.weight_decay)
        if optim.name == "adamw":
            return torch.optim.AdamW(parameters, lr=optim.lr, weight_decay=optim.weight_decay)
        if optim.name == "lion":
            return _lion(parameters, optim.lr, optim.weight_decay)
        return torch.optim.SGD(
            parameters, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
        )

    return build


def _lion(parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Lion (Chen et al. 2023, sign of an interpolated momentum) from lion-pytorch, an optional dependency:
    imported here so that a recipe that never picks it does not need it."""
    try:
        from lion_pytorch import Lion
    except ImportError as err:
        raise UsageError(
            "optim.name=lion needs the lion-pytorch package: pip install lion-pytorch "
            "(or pick another optim.name: adam, adamw, sgd)"
        ) from err
    return Lion(parameters, lr=lr, weight_decay=weight_decay)


def make_scheduler_factory(optim: Any, epochs: int) -> Callable[[torch.optim.Optimizer], Any] | None:
    if optim.scheduler == "cosine":
        return lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    if optim.scheduler == "step":
        return lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=optim.step_size, gamma=optim.gamma)
    return None


def trainer_from_config(
    config: Any,
    device: str,
    loss: LossFn,
    make_scorers: Callable[[], Sequence[Scorer]],
    console: Console | None = None,
    **overrides: Any,
) -> GradientTrainer:
    """A GradientTrainer set up from a :class:`~medkit.config.TrainingConfig`."""
    options: dict[str, Any] = {
        "loss": loss,
        "make_optimizer": make_optimizer_factory(config.optim),
        "make_scheduler": make_scheduler_factory(config.optim, config.epochs),
        "make_scorers": make_scorers,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "num_workers": config.num_workers,
        "device": device,
        "amp": config.amp,
        "channels_last": getattr(config, "channels_last", False),
        "monitor": config.monitor,
        "mode": config.monitor_mode,
        "patience": config.patience,
        "seed": config.seed,
        "arch": config.arch,
        "arch_options": dict(getattr(config, "model", {})),
        **({"console": console} if console is not None else {}),
        **overrides,
    }
    return GradientTrainer(**options)
