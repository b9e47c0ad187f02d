"""``medkit cache build``: convert volumes and masks into one slice cache, in parallel, atomically, resumably.

The build writes ``OUT.partial`` and renames it to ``OUT`` only when every volume is in; a killed build leaves
no half-written cache. Each volume's group is marked complete last, so ``--resume`` keeps every finished volume
and redoes only the one that was being written.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from .codecs import codec_options
from .pairing import Pair
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
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    if mask is not None:
        digest.update(np.ascontiguousarray(mask).tobytes())
    return digest.hexdigest()


def mask_area(mask: np.ndarray) -> np.ndarray:
    """(Z, C) pixel count of each class 0..max in each slice."""
    classes = int(mask.max()) + 1 if mask.size else 1
    flat = mask.reshape(mask.shape[0], -1).astype(np.int64)
    offsets = np.arange(mask.shape[0])[:, None] * classes
    counts = np.bincount((flat + offsets).ravel(), minlength=mask.shape[0] * classes)
    return counts.reshape(mask.shape[0], classes).astype(np.int32)


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
    """Each pair read, in a process pool when ``workers > 1``; failures are yielded, not raised."""
    if workers <= 1:
        for pair in pairs:
            try:
                yield pair, convert(pair)
            except Exception as err:
                yield pair, err
        return
    # spawn: workers never inherit the open HDF5 handle of the writer
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(convert, pair): pair for pair in pairs}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as err:
                yield futures[future], err


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _prepare_partial(out: Path, resume: bool) -> Path:
    partial = partial_path(out)
    if out.exists() and not resume:
        raise UsageError(f"--out {out} exists; pass --resume to add volumes to it, or choose another --out")
    if partial.exists() and not resume:
        raise UsageError(
            f"{partial} is left from an interrupted build; pass --resume to continue it (nothing converted is "
            "lost), or delete it to start over"
        )
    if resume and out.exists() and not partial.exists():
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
    started = time.perf_counter()
    out = Path(out)
    partial = _prepare_partial(out, resume)
    report = BuildReport(out)
    with open_h5(partial, "a") as handle:
        _start_file(partial, handle, codec, preprocessing)
        volumes = handle.require_group("volumes")
        done = {name for name in volumes if volumes[name].attrs.get("complete", False)}
        todo = [pair for pair in pairs if pair.id not in done]
        report.skipped_done = sorted(pair.id for pair in pairs if pair.id in done)
        for pair, result in _converted(todo, workers):
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
            handle.flush()
            report.converted.append(pair.id)
            if on_progress:
                on_progress(pair.id, "ok")
        handle.attrs["complete"] = True
    os.replace(partial, out)
    report.seconds = time.perf_counter() - started
    return report


def _start_file(path: Path, handle: Any, codec: str, preprocessing: Preprocessing) -> None:
    """Root attributes of a new cache, or a check that a resumed one was started with the same settings."""
    from ..version import __version__

    if "medkit_cache_format" in handle.attrs:
        check_format(path, handle.attrs, allow_unfinished=True)
        recorded = Preprocessing.from_json(handle.attrs["preprocessing"])
        if recorded != preprocessing:
            raise UsageError(
                f"--resume: {path} was built with preprocessing {recorded}, not {preprocessing}; use the same options"
            )
        handle.attrs["complete"] = False
        return
    handle.attrs.update(
        medkit_cache_format=FORMAT_VERSION,
        medkit_version=__version__,
        codec=codec,
        preprocessing=preprocessing.to_json(),
        complete=False,
    )
