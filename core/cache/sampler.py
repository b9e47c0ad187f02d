"""Paper 002's limited-RAM slice sampler (section 3, method 3) and the two methods it was compared with.

- ``resident`` (method 3, the paper's): keep K volumes resident, draw about M slices from each - a random
  resident volume, then a random slice of it - before replacing the whole set with the next K of a shuffled list.
  Disk reads fall M-fold against method 1 with no loss of quality.
- ``per_sample`` (method 1): load a whole volume for every sample.
- ``one_volume`` (method 2): load one volume and serve all its slices before the next (loses quality: batches
  then come from one patient).

Beyond the paper: a memory budget in bytes that is never exceeded (K shrinks to fit, or is derived from it);
only the slices a resident set will serve are read, not whole volumes (one slice per chunk makes that cheap);
the next resident set loads in a background thread while the current one is served; and under DataLoader
workers and torchrun each worker of each rank samples its own share of volumes, so no two hold the same set.
Under torchrun every rank draws the same number of samples (``samples_per_epoch`` is padded up to a multiple
of the number of ranks), so every rank takes the same number of steps and DDP's collectives never wait forever.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import IterableDataset, Sampler, get_worker_info

from ..errors import UsageError
from .store import SliceCache, make_sample

Method = Literal["resident", "per_sample", "one_volume"]
ReadMode = Literal["slices", "volumes"]


@dataclass(frozen=True)
class Period:
    """One resident set and the draws served from it, in order."""

    volumes: tuple[int, ...]
    draws: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class VolumeSlices:
    """A volume the sampler may draw from: its cache index, the slices allowed, and its memory footprint."""

    index: int
    allowed: np.ndarray
    total_slices: int
    slice_bytes: int


class LimitedRamSampler(Sampler[tuple[int, int]]):
    """Draws ``(volume, slice)`` keys period by period; every volume has the same chance whatever its length.

    ``budget_bytes`` bounds the RAM of the resident data: one period's slices (``read="slices"``) or whole
    volumes (``read="volumes"``), two periods when ``prefetch`` holds the next one beside the current. ``resident``
    is K; ``None`` derives K from the budget.
    """

    def __init__(
        self,
        volumes: Sequence[VolumeSlices],
        samples: int,
        *,
        method: Method = "resident",
        resident: int | None = 20,
        uses: int = 10,
        budget_bytes: int | None = None,
        read: ReadMode = "slices",
        prefetch: bool = True,
        seed: int = 0,
        budget_shares: int = 1,
    ) -> None:
        if not volumes:
            raise UsageError("the sampler has no volumes to draw from")
        if method == "resident" and resident is None and budget_bytes is None:
            raise UsageError("give the number of resident volumes (K) or a memory budget to derive it from")
        self.volumes, self.samples, self.method = list(volumes), samples, method
        self.resident, self.uses, self.read = (
            resident,
            max(1, uses),
            read if method == "resident" else "volumes",
        )
        self.sets_in_ram = 2 if prefetch else 1
        self.cap = None if budget_bytes is None else budget_bytes // self.sets_in_ram
        self.seed, self.epoch = seed, 0
        self.budget_shares = budget_shares  # processes the total budget was divided among (for messages)
        self._check_budget()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for period in self.periods():
            yield from period.draws

    def period_bytes(self, period: Period) -> int:
        """RAM the period's resident data takes."""
        by_index = {v.index: v for v in self.volumes}
        if self.read == "volumes":
            return sum(by_index[i].total_slices * by_index[i].slice_bytes for i in period.volumes)
        return sum(by_index[v].slice_bytes for v, _ in set(period.draws))

    def periods(self) -> Iterator[Period]:
        """The periods of the current epoch, each a reproducible function of (seed, epoch)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        planner = {"resident": self._resident, "per_sample": self._per_sample, "one_volume": self._one_volume}
        remaining = self.samples
        for period in planner[self.method](rng):
            if remaining <= 0:
                return
            if len(period.draws) > remaining:
                period = Period(period.volumes, period.draws[:remaining])
            remaining -= len(period.draws)
            yield period

    def _shuffled_forever(self, rng: np.random.Generator) -> Iterator[int]:
        """Positions into ``self.volumes``, reshuffled each time the list is exhausted (the paper's order)."""
        while True:
            yield from rng.permutation(len(self.volumes)).tolist()

    def _draws(
        self, positions: Sequence[int], count: int, rng: np.random.Generator
    ) -> tuple[tuple[int, int], ...]:
        """A random resident volume, then a random allowed slice of it, ``count`` times."""
        chosen = rng.integers(0, len(positions), size=count)
        draws = []
        for c in chosen:
            volume = self.volumes[positions[c]]
            draws.append((volume.index, int(volume.allowed[rng.integers(0, len(volume.allowed))])))
        return tuple(draws)

    def _resident(self, rng: np.random.Generator) -> Iterator[Period]:
        order = self._shuffled_forever(rng)
        k_wanted = self.resident or self._k_from_budget()
        k_wanted = min(k_wanted, len(self.volumes))
        while True:
            positions: list[int] = []
            while len(positions) < k_wanted:
                position = next(order)
                if position not in positions:
                    positions.append(position)
            period_rng = np.random.default_rng(rng.integers(2**63))
            yield self._fit_to_budget(positions, period_rng)

    def _fit_to_budget(self, positions: list[int], rng: np.random.Generator) -> Period:
        """Draw K*M slices; while they would not fit the budget, drop the last resident volume and redraw."""
        state = rng.bit_generator.state
        while True:
            rng.bit_generator.state = state
            draws = self._draws(positions, len(positions) * self.uses, rng)
            period = Period(tuple(self.volumes[p].index for p in positions), draws)
            if self.cap is None or self.period_bytes(period) <= self.cap or len(positions) == 1:
                return period
            positions = positions[:-1]

    def _k_from_budget(self) -> int:
        per_volume = [
            self.uses * v.slice_bytes if self.read == "slices" else v.total_slices * v.slice_bytes
            for v in self.volumes
        ]
        return max(1, int(self.cap // float(np.median(per_volume))))

    def _per_sample(self, rng: np.random.Generator) -> Iterator[Period]:
        while True:
            volume = self.volumes[int(rng.integers(0, len(self.volumes)))]
            yield Period((volume.index,), ((volume.index, int(rng.choice(volume.allowed))),))

    def _one_volume(self, rng: np.random.Generator) -> Iterator[Period]:
        for position in self._shuffled_forever(rng):
            volume = self.volumes[position]
            order = rng.permutation(volume.allowed)
            yield Period((volume.index,), tuple((volume.index, int(s)) for s in order))

    def _check_budget(self) -> None:
        """Refuse a budget that cannot hold even the smallest possible resident set."""
        if self.cap is None:
            return
        for volume in self.volumes:
            need = (
                volume.total_slices * volume.slice_bytes
                if self.read == "volumes"
                else (min(self.uses, len(volume.allowed)) * volume.slice_bytes)
            )
            if need > self.cap:
                shared = (
                    f", x {self.budget_shares} processes (DataLoader workers x ranks) sharing it"
                    if self.budget_shares > 1
                    else ""
                )
                minimum = need * self.sets_in_ram * self.budget_shares
                raise UsageError(
                    f"memory budget too small: volume #{volume.index} alone needs {need:,} bytes resident "
                    f"({'whole volume' if self.read == 'volumes' else f'{self.uses} slices'}), the budget allows "
                    f"{self.cap:,} per resident set; raise the budget to at least {minimum:,} bytes "
                    f"({self.sets_in_ram} set(s) in RAM with prefetch={self.sets_in_ram == 2}{shared}) or lower M"
                )


@dataclass
class LoaderStats:
    """What a ResidentSliceDataset did, for tests and benchmarks (per process)."""

    resident_bytes: int = 0
    peak_resident_bytes: int = 0
    periods_loaded: int = 0
    slices_read: int = 0
    wait_seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, nbytes: int) -> None:
        with self.lock:
            self.resident_bytes += nbytes
            self.peak_resident_bytes = max(self.peak_resident_bytes, self.resident_bytes)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, lock=threading.Lock())


@dataclass(frozen=True)
class ProcessPosition:
    """Where the iterating process sits: its torchrun rank and its DataLoader worker."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    workers: int = 1

    @property
    def shard(self) -> int:
        return self.rank * self.workers + self.worker

    @property
    def shards(self) -> int:
        return self.world_size * self.workers


def process_position() -> ProcessPosition:
    """This process's torchrun rank and DataLoader worker (0 of 1 outside either).

    A DataLoader worker is not a member of the process group; it reads its rank from the environment
    torchrun set for its parent (``RANK``, ``WORLD_SIZE``), which every worker inherits.
    """
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    worker = get_worker_info()
    worker_id, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
    return ProcessPosition(rank, world, worker_id, workers)


def rank_share(samples: int, world_size: int) -> int:
    """Samples each rank draws in an epoch: ``samples`` padded up to a multiple of the ranks, so that every
    rank takes the same number of steps (as the trainer's EpochShardSampler pads a map-style set)."""
    return -(-samples // world_size)


def worker_share(rank_samples: int, worker: int, workers: int) -> int:
    """Worker ``worker``'s part of its rank's samples; the same split on every rank."""
    return rank_samples // workers + (1 if worker < rank_samples % workers else 0)


class ResidentSliceDataset(IterableDataset):
    """Training slices from a slice cache through the limited-RAM sampler.

    Iterate it directly or through ``DataLoader(dataset, batch_size=..., num_workers=N)``. Each worker of each
    rank takes its own share of the volumes (reshuffled every epoch with ``set_epoch``) and its own share of
    the samples, so workers never hold the same resident set. Under torchrun each rank draws
    ``ceil(samples_per_epoch / ranks)`` samples (padded: every rank takes the same number of steps).
    ``budget_bytes`` is the total of every worker of every rank: each holds at most its equal part.
    """

    shards_by_rank = True  # the trainer scores it as it is under torchrun: each rank iterates only its share

    def __init__(
        self,
        cache: SliceCache | Path | str,
        samples_per_epoch: int,
        *,
        method: Method = "resident",
        resident: int | None = 20,
        uses: int = 10,
        budget_bytes: int | None = None,
        read: ReadMode = "slices",
        prefetch: bool = True,
        volumes: Sequence[int] | None = None,
        slices: Mapping[int, Sequence[int]] | None = None,
        seed: int = 0,
        transform: Callable[[dict[str, Any], np.random.Generator], dict[str, Any]] | None = None,
    ) -> None:
        self.cache = cache if isinstance(cache, SliceCache) else SliceCache(cache)
        self.samples_per_epoch = samples_per_epoch
        self.options = {
            "method": method,
            "resident": resident,
            "uses": uses,
            "budget_bytes": budget_bytes,
            "read": read,
            "prefetch": prefetch,
        }
        chosen = range(len(self.cache)) if volumes is None else volumes
        self.volume_slices = [
            self._volume_slices(v, None if slices is None else slices.get(v)) for v in chosen
        ]
        self.volume_slices = [v for v in self.volume_slices if len(v.allowed)]
        if not self.volume_slices:
            raise UsageError(f"{self.cache.path}: no slices to sample from (the selection is empty)")
        self.seed, self.epoch, self.transform = seed, 0, transform
        self.stats = LoaderStats()

    def _volume_slices(self, volume: int, allowed: Sequence[int] | None) -> VolumeSlices:
        info = self.cache.volumes[volume]
        chosen = np.arange(info.slices) if allowed is None else np.asarray(sorted(allowed), dtype=np.int64)
        return VolumeSlices(volume, chosen, info.slices, info.slice_bytes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Samples this process yields in an epoch: its rank's share in the main process, its worker's part
        of it inside a DataLoader worker."""
        return self.share(process_position())

    def share(self, position: ProcessPosition) -> int:
        """Samples the process at ``position`` draws in an epoch."""
        per_rank = rank_share(self.samples_per_epoch, position.world_size)
        return worker_share(per_rank, position.worker, position.workers)

    def sampler(self, position: ProcessPosition | None = None) -> LimitedRamSampler:
        """The sampler of one process: its volumes are every ``shards``-th of this epoch's shuffled list, its
        budget an equal part of the total."""
        position = position or ProcessPosition()
        shard, count = position.shard, position.shards
        if count > len(self.volume_slices):
            raise UsageError(
                f"{len(self.volume_slices)} volume(s) cannot be shared among {position.workers} DataLoader "
                f"worker(s) x {position.world_size} rank(s); use fewer workers"
            )
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.volume_slices))
        mine = [self.volume_slices[i] for i in order[shard::count]]
        options = dict(self.options)
        if options["budget_bytes"] is not None:
            options["budget_bytes"] = options["budget_bytes"] // count
        sampler = LimitedRamSampler(
            mine, self.share(position), seed=self.seed * 7919 + shard, budget_shares=count, **options
        )
        sampler.set_epoch(self.epoch)
        return sampler

    def __iter__(self) -> Iterator[dict[str, Any]]:
        position = process_position()
        shard = position.shard
        sampler = self.sampler(position)
        rng = np.random.default_rng([self.seed, self.epoch, shard, 1])
        for period, data, nbytes in self._prefetched(sampler):
            try:
                for volume, index in period.draws:
                    image, mask = data[(volume, index)]
                    sample = make_sample(self.cache, volume, index, image, mask)
                    yield self.transform(sample, rng) if self.transform else sample
            finally:
                data.clear()
                self.stats.add(-nbytes)

    def _load(
        self, period: Period, read: ReadMode
    ) -> tuple[dict[tuple[int, int], tuple[np.ndarray, Any]], int]:
        """Read the period's slices (only those drawn, or whole volumes); returns the data and its bytes."""
        data: dict[tuple[int, int], tuple[np.ndarray, Any]] = {}
        nbytes = 0
        for volume in period.volumes:
            wanted = sorted({s for v, s in period.draws if v == volume})
            if not wanted:
                continue
            if read == "volumes":  # methods 1 and 2: the whole volume is resident; slices are views into it
                images, masks = self.cache.read_volume(volume)
                positions = wanted
            else:
                images, masks = self.cache.read_slices(volume, wanted)
                positions = range(len(wanted))
            for position, s in zip(positions, wanted, strict=True):
                data[(volume, s)] = (images[position], None if masks is None else masks[position])
            nbytes += images.nbytes + (0 if masks is None else masks.nbytes)
            self.stats.slices_read += len(images)
        self.stats.add(nbytes)
        self.stats.periods_loaded += 1
        return data, nbytes

    def _prefetched(self, sampler: LimitedRamSampler) -> Iterator[tuple[Period, dict, int]]:
        """Periods with their data; the next one loads in a background thread while this one is served.

        A semaphore admits at most two loaded periods (one with ``prefetch=False``), which is what the budget
        was divided for.
        """
        slots = threading.Semaphore(2 if self.options["prefetch"] else 1)
        ready: queue.Queue = queue.Queue()
        stop = threading.Event()
        read = sampler.read

        def load_all() -> None:
            try:
                for period in sampler.periods():
                    while not slots.acquire(timeout=0.1):
                        if stop.is_set():
                            return
                    if stop.is_set():
                        return
                    ready.put((period, *self._load(period, read)))
            except BaseException as err:  # surfaced in the consuming thread
                ready.put(err)
            ready.put(None)

        loader = threading.Thread(target=load_all, daemon=True, name="medkit-slice-prefetch")
        loader.start()
        try:
            while True:
                started = time.perf_counter()
                item = ready.get()
                self.stats.wait_seconds += time.perf_counter() - started
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                try:
                    yield item
                finally:
                    slots.release()
        finally:
            stop.set()
            loader.join(timeout=5)
