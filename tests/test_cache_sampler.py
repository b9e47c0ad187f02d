"""Paper 002's limited-RAM sampler over the slice cache: balance across volumes, the memory budget, disk reads,
workers and ranks, determinism, background prefetch, and the slice-selection helpers."""

from __future__ import annotations

import os
import pickle
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch.utils.data import DataLoader

from medkit.cache.build import build_cache
from medkit.cache.pairing import Pair
from medkit.cache.sampler import LimitedRamSampler, ProcessPosition, ResidentSliceDataset, VolumeSlices
from medkit.cache.selection import CachedSlices, all_slices, labelled_slices, largest_mask_slices
from medkit.cache.store import NO_PREPROCESSING, Preprocessing, SliceCache
from medkit.cache.synthetic import ct_volume
from medkit.errors import UsageError

LENGTHS = (6, 12, 24, 48, 96)  # a 16-fold spread of volume lengths


def make_cache(tmp_path, lengths=LENGTHS, size=16, preprocessing=NO_PREPROCESSING) -> SliceCache:
    pairs = []
    for i, length in enumerate(lengths):
        image, mask = ct_volume(length, size, seed=i)
        path = tmp_path / f"vol{i:02d}.npz"
        np.savez(path, image=image, mask=mask)
        pairs.append(Pair(f"vol{i:02d}", path, path))
    build_cache(pairs, tmp_path / "cache.h5", preprocessing=preprocessing)
    return SliceCache(tmp_path / "cache.h5")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> SliceCache:
    return make_cache(tmp_path_factory.mktemp("cache"))


def volumes_of(lengths, slice_bytes=768) -> list[VolumeSlices]:
    return [VolumeSlices(i, np.arange(n), n, slice_bytes) for i, n in enumerate(lengths)]


def test_every_volume_is_drawn_equally_often_whatever_its_length():
    sampler = LimitedRamSampler(volumes_of(LENGTHS), samples=20_000, resident=2, uses=10, seed=0)
    counts = np.bincount([v for v, _ in sampler], minlength=len(LENGTHS))
    assert chisquare(counts).pvalue > 0.01  # uniform over volumes
    # the test would notice a sampler that drew slices uniformly (volumes in proportion to length)
    by_length = np.array(LENGTHS) / sum(LENGTHS) * counts.sum()
    assert chisquare(counts, by_length).pvalue < 1e-9


def test_slices_are_drawn_uniformly_within_a_volume():
    sampler = LimitedRamSampler(volumes_of([10, 10]), samples=20_000, resident=2, uses=10, seed=1)
    slices = np.bincount([s for v, s in sampler if v == 0], minlength=10)
    assert chisquare(slices).pvalue > 0.01


def test_each_period_keeps_k_volumes_resident_and_draws_k_times_m():
    sampler = LimitedRamSampler(volumes_of(LENGTHS), samples=200, resident=3, uses=5, seed=0)
    periods = list(sampler.periods())
    assert all(len(p.volumes) == 3 and len(p.draws) == 15 for p in periods[:-1])
    assert all({v for v, _ in p.draws} <= set(p.volumes) for p in periods)
    assert sum(len(p.draws) for p in periods) == 200


def test_methods_1_and_2_of_the_paper():
    per_sample = list(LimitedRamSampler(volumes_of(LENGTHS), samples=50, method="per_sample").periods())
    assert len(per_sample) == 50 and all(len(p.volumes) == 1 and len(p.draws) == 1 for p in per_sample)
    one_volume = list(
        LimitedRamSampler(volumes_of(LENGTHS), samples=sum(LENGTHS), method="one_volume").periods()
    )
    assert sorted(len(p.draws) for p in one_volume) == sorted(LENGTHS)  # every slice of each volume, once
    assert all(sorted(s for _, s in p.draws) == list(range(len(p.draws))) for p in one_volume)


def test_a_budget_shrinks_the_resident_set_or_derives_k():
    volumes = volumes_of(LENGTHS, slice_bytes=1000)
    tight = LimitedRamSampler(volumes, samples=500, resident=5, uses=10, budget_bytes=2 * 20_000, seed=0)
    assert all(tight.period_bytes(p) <= 20_000 for p in tight.periods())
    derived = LimitedRamSampler(volumes, samples=500, resident=None, uses=10, budget_bytes=2 * 30_000, seed=0)
    assert max(len(p.volumes) for p in derived.periods()) == 3  # 30 kB / (10 slices x 1 kB)
    assert all(derived.period_bytes(p) <= 30_000 for p in derived.periods())


def test_a_volume_larger_than_the_budget_is_refused_by_name():
    with pytest.raises(UsageError, match=r"volume #4 alone needs 96,000 bytes"):
        LimitedRamSampler(volumes_of(LENGTHS, 1000), samples=10, method="per_sample", budget_bytes=100_000)


def test_the_same_seed_gives_the_same_draws_and_each_epoch_new_ones():
    first = list(LimitedRamSampler(volumes_of(LENGTHS), samples=300, seed=5))
    assert first == list(LimitedRamSampler(volumes_of(LENGTHS), samples=300, seed=5))
    sampler = LimitedRamSampler(volumes_of(LENGTHS), samples=300, seed=5)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_samples_are_the_right_slices_with_their_masks(cache):
    dataset = ResidentSliceDataset(cache, samples_per_epoch=60, resident=2, uses=5, seed=0)
    for sample in dataset:
        expected = cache.sample(sample["volume"], sample["slice"])
        assert torch.equal(sample["image"], expected["image"]) and torch.equal(
            sample["mask"], expected["mask"]
        )


def test_the_memory_budget_is_never_exceeded_measured_by_tracemalloc(cache):
    slice_bytes = cache.volumes[0].slice_bytes
    budget = 40 * slice_bytes
    dataset = ResidentSliceDataset(
        cache, samples_per_epoch=400, resident=3, uses=6, budget_bytes=budget, seed=2
    )
    tracemalloc.start()
    baseline, _ = tracemalloc.get_traced_memory()
    for _ in dataset:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert dataset.stats.peak_resident_bytes <= budget
    overhead = 64 * 1024  # per-sample tensors, the index of a period, Python objects: a fixed amount
    assert peak - baseline <= budget + overhead, (peak - baseline, budget)
    assert dataset.stats.resident_bytes == 0  # everything released at the end


def test_the_resident_sampler_reads_m_fold_fewer_slices_than_loading_a_volume_per_sample(cache):
    reads = {}
    for method in ("per_sample", "resident"):
        dataset = ResidentSliceDataset(
            cache, samples_per_epoch=300, method=method, resident=3, uses=10, seed=0
        )
        for _ in dataset:
            pass
        reads[method] = dataset.stats.slices_read
    assert reads["resident"] <= 300  # only slices that are served are read
    assert reads["per_sample"] / reads["resident"] > 10


def test_workers_share_the_volumes_and_the_samples_without_overlap(cache):
    dataset = ResidentSliceDataset(cache, 101, seed=3)
    shards = [dataset.sampler(ProcessPosition(worker=worker, workers=4)) for worker in range(4)]
    owned = [{v.index for v in s.volumes} for s in shards]
    assert set().union(*owned) == set(range(len(LENGTHS)))
    assert all(a.isdisjoint(b) for i, a in enumerate(owned) for b in owned[i + 1 :])
    assert sum(len(s) for s in shards) == 101


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_a_dataloader_with_two_workers_serves_correct_pairs(cache, context):
    cache.sample(0, 0)  # the parent holds an open handle; workers must not reuse it
    dataset = ResidentSliceDataset(cache, samples_per_epoch=40, resident=1, uses=4, seed=1)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context=context)
    seen = 0
    for batch in loader:
        for i in range(len(batch["volume"])):
            expected = cache.sample(int(batch["volume"][i]), int(batch["slice"][i]))
            assert torch.equal(batch["image"][i], expected["image"])
            assert torch.equal(batch["mask"][i], expected["mask"])
        seen += len(batch["volume"])
    assert seen == 40


def test_the_dataset_pickles_with_an_open_handle(cache):
    dataset = ResidentSliceDataset(cache, samples_per_epoch=10, seed=0)
    next(iter(dataset))
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone.cache._file is None
    assert len(list(clone)) == 10


def test_the_next_resident_set_loads_while_the_current_one_is_served(cache):
    for prefetch, expected in ((True, 2), (False, 1)):
        dataset = ResidentSliceDataset(
            cache, samples_per_epoch=40, resident=1, uses=10, prefetch=prefetch, seed=0
        )
        iterator = iter(dataset)
        next(iterator)  # period 1 is being served
        deadline = time.monotonic() + 5
        while dataset.stats.periods_loaded < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert dataset.stats.periods_loaded == expected
        iterator.close()
    assert not [t for t in threading.enumerate() if t.name == "medkit-slice-prefetch" and t.is_alive()]


def test_preprocessing_recorded_in_the_cache_is_applied_to_served_slices(tmp_path):
    windowed = make_cache(tmp_path, lengths=(4,), preprocessing=Preprocessing("window", -1000, 400))
    image = windowed.sample(0, 2)["image"]
    raw, _ = windowed.read_slices(0, [2])
    assert torch.allclose(image[0], torch.from_numpy((np.clip(raw[0], -1000, 400) + 1000) / 1400).float())
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0


def test_slice_selection_helpers(cache):
    assert sum(map(len, all_slices(cache).values())) == sum(LENGTHS)
    labelled = labelled_slices(cache)
    for v, chosen in labelled.items():
        _, mask = cache.read_volume(v)
        assert chosen == np.flatnonzero(mask.reshape(len(mask), -1).max(axis=1) > 0).tolist()
    largest = largest_mask_slices(cache, 5)
    for v, chosen in largest.items():
        _, mask = cache.read_volume(v)
        areas = (mask > 0).reshape(len(mask), -1).sum(axis=1)
        labelled_areas = sorted(areas[areas > 0], reverse=True)
        assert list(areas[chosen]) == labelled_areas[:5]  # the 5 largest, largest first, never an empty slice


def test_25d_stacks_hold_the_neighbours_clamped_at_the_ends(cache):
    stacks = CachedSlices(cache, {0: [0, 3]}, context=1)
    first, middle = stacks[0], stacks[1]
    assert first["image"].shape == (3, 16, 16) and stacks.in_channels == 3
    raw, masks = cache.read_volume(0)
    assert torch.equal(first["image"][0], first["image"][1])  # slice -1 clamps to slice 0
    assert torch.equal(middle["image"][2], torch.from_numpy(raw[4].astype(np.float32)))
    assert torch.equal(middle["mask"], torch.from_numpy(masks[3].astype(np.int64)))


def _volumes_seen_by_rank(rank: int, world: int, cache_path: str, init_file: str, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    dataset = ResidentSliceDataset(cache_path, samples_per_epoch=50, resident=1, uses=5, seed=4)
    seen = sorted({sample["volume"] for sample in dataset})
    with open(f"{out}.{rank}", "w") as handle:
        handle.write(" ".join(map(str, [len(dataset), *seen])))
    torch.distributed.destroy_process_group()


def _batches_of_rank(rank: int, world: int, cache_path: str, init_file: str, out: str, workers: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))  # as torchrun sets them for each rank
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    dataset = ResidentSliceDataset(cache_path, samples_per_epoch=321, resident=2, uses=5, seed=4)
    loader = DataLoader(dataset, batch_size=8, num_workers=workers)
    sizes = [len(batch["volume"]) for batch in loader]
    Path(f"{out}.{rank}").write_text(" ".join(map(str, sizes)))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("workers", [0, 2])
def test_under_distributed_training_uneven_shares_are_padded_so_every_rank_takes_the_same_steps(
    cache, tmp_path, workers
):
    """321 samples over 2 ranks at batch 8: 161 per rank (padded), so both take 21 steps; DDP would hang if one
    rank took a step the other did not."""
    out = str(tmp_path / "batches")
    torch.multiprocessing.spawn(
        _batches_of_rank,
        args=(2, str(cache.path), str(tmp_path / "init"), out, workers),
        nprocs=2,
        join=True,
    )
    sizes = [list(map(int, Path(f"{out}.{rank}").read_text().split())) for rank in range(2)]
    assert len(sizes[0]) == len(sizes[1])
    assert sum(sizes[0]) == sum(sizes[1]) == 161


def test_the_memory_budget_is_the_total_of_every_worker_of_every_rank(cache):
    budget = 40 * cache.volumes[0].slice_bytes
    dataset = ResidentSliceDataset(cache, 100, resident=None, uses=2, budget_bytes=budget, seed=0)
    for workers in (1, 2, 4):
        parts = [dataset.sampler(ProcessPosition(worker=w, workers=workers)) for w in range(workers)]
        assert sum(part.cap * part.sets_in_ram for part in parts) <= budget


def test_under_distributed_training_each_rank_samples_its_own_volumes(cache, tmp_path):
    out = str(tmp_path / "seen")
    torch.multiprocessing.spawn(
        _volumes_seen_by_rank, args=(2, str(cache.path), str(tmp_path / "init"), out), nprocs=2, join=True
    )
    shares = [list(map(int, Path(f"{out}.{rank}").read_text().split())) for rank in range(2)]
    assert [share[0] for share in shares] == [25, 25]  # each rank serves half of the epoch
    first, second = set(shares[0][1:]), set(shares[1][1:])
    assert first and second and first.isdisjoint(second)
