"""``medkit cache build``: convert volumes and masks into one slice cache, in parallel, atomically, resumably.

The build writes ``OUT.partial`` and renames it to ``OUT`` only when every volume is in; a killed build leaves
no half-written cache. Each volume's group is marked complete last, so ``--resume`` keeps every finished volume
and redoes only the one that was being written.

Memory stays bounded by a few volumes whatever the data set size: at most ``2 * workers`` conversions are in
flight, and each volume is dropped once it is written.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import fsync_directory
from ..errors import RunError, UsageError
from .codecs import codec_options
from .pairing import ID_RULE, Pair, id_problem
from .readers import read_mask, read_volume
from .store import FORMAT_VERSION, NO_PREPROCESSING, Preprocessing, check_format, open_h5


@dataclass
class Converted:
    """A volume read and checked by a worker, ready to be written."""

    pair: Pair
    image: np.ndarray
    mask: np.ndarray | None
    spacing: tuple[float, float, float]
    source_orientation: str


@dataclass
class BuildReport:
    out: Path
    converted: list[str] = field(default_factory=list)
    skipped_done: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def convert(pair: Pair) -> Converted:
    """Read one pair (runs in a worker process)."""
    volume = read_volume(pair.image)
    mask = read_mask(pair.mask, volume) if pair.mask is not None else None
    image = volume.array
    if image.dtype == np.float64:  # scaled NIfTI comes back as float64; float32 halves the cache and RAM
        image = image.astype(np.float32)
    return Converted(pair, image, mask, volume.spacing, volume.source_orientation)


def checksum(image: np.ndarray, mask: np.ndarray | None) -> str:
    digest = hashlib.sha256(_raw_bytes(image))
    if mask is not None:
        digest.update(_raw_bytes(mask))
    return digest.hexdigest()


def _raw_bytes(array: np.ndarray) -> np.ndarray:
    """The array's bytes as a view (the same bytes as ``tobytes()``, which would copy a whole volume)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def mask_area(mask: np.ndarray) -> np.ndarray:
    """(Z, C) pixel count of each class 0..max in each slice."""
    classes = int(mask.max()) + 1 if mask.size else 1
    area = np.empty((mask.shape[0], classes), dtype=np.int32)
    for index, plane in enumerate(mask):  # slice by slice: a whole-volume int64 copy is 8x the mask in RAM
        area[index] = np.bincount(plane.ravel(), minlength=classes)
    return area


def write_volume(volumes: Any, item: Converted, codec: str) -> None:
    """One group per volume; ``complete`` is set last, so a kill mid-write leaves a group --resume redoes."""
    name = item.pair.id
    if name in volumes:
        del volumes[name]
    group = volumes.create_group(name)
    slice_chunk = (1, *item.image.shape[1:])
    group.create_dataset("image", data=item.image, chunks=slice_chunk, **codec_options(codec))
    if item.mask is not None:
        group.create_dataset("mask", data=item.mask, chunks=slice_chunk, **codec_options(codec))
        group.create_dataset("mask_area", data=mask_area(item.mask))
    group.attrs.update(
        spacing=np.asarray(item.spacing, dtype=np.float64),
        orientation="LPS",
        source_orientation=item.source_orientation,
        source=str(item.pair.image),
        mask_source=str(item.pair.mask or ""),
        sha256=checksum(item.image, item.mask),
    )
    group.attrs["complete"] = True


def _converted(pairs: Sequence[Pair], workers: int) -> Iterator[tuple[Pair, Converted | Exception]]:
    """Each pair read, in a process pool when ``workers > 1``; failures are yielded, not raised.

    Close the iterator when stopping early (``contextlib.closing``): that cancels the conversions not started.
    """
    if workers <= 1:
        for pair in pairs:
            try:
                yield pair, convert(pair)
            except Exception as err:
                yield pair, err
        return
    # spawn: workers never inherit the open HDF5 handle of the writer
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    try:
        yield from _bounded(pool, pairs, in_flight=2 * workers)
    except BrokenProcessPool as err:
        # no volume's fault, and nothing more can be converted: stop, even with --skip-bad
        pool.shutdown(wait=False, cancel_futures=True)
        raise RunError(
            f"a worker process died while converting volumes ({err}); being killed for lack of memory is the "
            "usual cause: rerun with --resume (converted volumes are kept) and fewer --workers"
        ) from err
    except BaseException:  # GeneratorExit too: a stopped build must not wait for every pending conversion
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _bounded(
    pool: Executor, pairs: Sequence[Pair], in_flight: int
) -> Iterator[tuple[Pair, Converted | Exception]]:
    """Results in completion order, with at most ``in_flight`` pairs submitted and not yet yielded.

    A finished future holds its volume until it is taken, so submitting every pair at once kept the whole
    data set in RAM; refilling one pair per result keeps ``in_flight`` volumes plus the one being written.
    """
    waiting = iter(pairs)
    running: dict[Future[Converted], Pair] = {}
    while True:
        for pair in islice(waiting, in_flight - len(running)):
            running[pool.submit(convert, pair)] = pair
        if not running:
            return
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        yield _take(running, done.pop())  # no local keeps the result: the caller drops it once written


def _take(
    running: dict[Future[Converted], Pair], future: Future[Converted]
) -> tuple[Pair, Converted | Exception]:
    pair = running.pop(future)
    try:
        return pair, future.result()
    except BrokenProcessPool:
        raise
    except Exception as err:
        return pair, err


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _prepare_partial(out: Path, resume: bool, codec: str, preprocessing: Preprocessing) -> Path:
    partial = partial_path(out)
    if out.exists() and not resume:
        raise UsageError(f"--out {out} exists; pass --resume to add volumes to it, or choose another --out")
    if partial.exists() and not resume:
        raise UsageError(
            f"{partial} is left from an interrupted build; pass --resume to continue it (nothing converted is "
            "lost), or delete it to start over"
        )
    if resume and out.exists() and not partial.exists():
        # checked before the rename: a refused resume leaves the cache where it was
        with open_h5(out) as handle:
            _check_same_settings(out, handle.attrs, codec, preprocessing)
        os.replace(out, partial)
    out.parent.mkdir(parents=True, exist_ok=True)
    return partial


def build_cache(
    pairs: Sequence[Pair],
    out: Path,
    *,
    codec: str = "blosc-lz4",
    preprocessing: Preprocessing = NO_PREPROCESSING,
    workers: int = 1,
    resume: bool = False,
    skip_bad: bool = False,
    on_progress: Callable[[str, str], None] | None = None,
) -> BuildReport:
    """Convert ``pairs`` into the cache ``out``; returns what was converted, skipped and refused.

    A bad volume stops the build with a message naming its file, unless ``skip_bad``: then it is reported
    in ``BuildReport.bad`` and the others go in. Either way every volume already written stays.
    """
    if not pairs:
        raise UsageError("nothing to convert: no volumes found in the sources")
    codec_options(codec)  # an unknown codec fails before any work
    _check_ids(pairs)
    started = time.perf_counter()
    out = Path(out)
    partial = _prepare_partial(out, resume, codec, preprocessing)
    report = BuildReport(out)
    with open_h5(partial, "a") as handle:
        _start_file(partial, handle, codec, preprocessing)
        volumes = handle.require_group("volumes")
        done = {name for name in volumes if volumes[name].attrs.get("complete", False)}
        todo = [pair for pair in pairs if pair.id not in done]
        report.skipped_done = sorted(pair.id for pair in pairs if pair.id in done)
        with closing(_converted(todo, workers)) as results:
            for pair, result in results:
                if isinstance(result, Exception):
                    report.bad[pair.id] = str(result)
                    if on_progress:
                        on_progress(pair.id, f"bad: {result}")
                    if not skip_bad:
                        handle.flush()
                        raise UsageError(
                            f"{result} (volume {pair.id!r}; {len(report.converted) + len(done)} volume(s) converted "
                            f"so far are kept in {partial}; fix or remove it and rerun with --resume, or pass --skip-bad)"
                        )
                    continue
                write_volume(volumes, result, codec)
                del result  # not held while the next volume is awaited
                handle.flush()
                report.converted.append(pair.id)
                if on_progress:
                    on_progress(pair.id, "ok")
        handle.attrs["complete"] = True
    os.replace(partial, out)
    fsync_directory(out.parent)  # the finished cache's name survives a power cut
    report.seconds = time.perf_counter() - started
    return report


def _start_file(path: Path, handle: Any, codec: str, preprocessing: Preprocessing) -> None:
    """Root attributes of a new cache, or a check that a resumed one was started with the same settings."""
    from ..version import __version__

    if "medkit_cache_format" in handle.attrs:
        _check_same_settings(path, handle.attrs, codec, preprocessing)
        handle.attrs["complete"] = False
        return
    handle.attrs.update(
        medkit_cache_format=FORMAT_VERSION,
        medkit_version=__version__,
        codec=codec,
        preprocessing=preprocessing.to_json(),
        complete=False,
    )


def _check_same_settings(path: Path, attrs: Any, codec: str, preprocessing: Preprocessing) -> None:
    """A resumed build must use the settings it was started with: the file records one codec and one preprocessing."""
    check_format(path, attrs, allow_unfinished=True)
    recorded = Preprocessing.from_json(attrs["preprocessing"])
    if recorded != preprocessing:
        raise UsageError(
            f"--resume: {path} was built with preprocessing {recorded}, not {preprocessing}; use the same options"
        )
    recorded_codec = str(attrs.get("codec", codec))
    if recorded_codec != codec:
        raise UsageError(
            f"--resume: {path} was built with --codec {recorded_codec}, not {codec}; rerun with "
            f"--codec {recorded_codec} to continue it, or build into another --out to use {codec}"
        )


def _check_ids(pairs: Sequence[Pair]) -> None:
    """Ids name HDF5 groups: a '/' would nest groups and a repeated id would overwrite a volume."""
    images: dict[str, Path] = {}
    for pair in pairs:
        problem = id_problem(pair.id)
        if problem:
            raise UsageError(
                f"volume id '{pair.id}' ({pair.image}) cannot name a volume in the cache ({problem}); "
                f"{ID_RULE}: give the pair another id"
            )
        if pair.id in images:
            raise UsageError(
                f"volume id '{pair.id}' is given twice ({images[pair.id]} and {pair.image}); "
                "give each volume its own id"
            )
        images[pair.id] = pair.image
