"""Which HDF5 codec the slice cache uses: size, write time, and the time to read one slice, per codec.

One synthetic CT volume (int16 HU, 256x256x200 by default), chunked one axial slice per chunk as the cache
stores it; random single-slice reads without a chunk cache, as the sampler does. Ratios are against gzip
(level 1), the codec h5py offers without plugins. Writes benchmarks/results/cache_codecs.json.

    .venv/bin/python benchmarks/cache_codecs.py [--slices 200 --size 256]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from medkit.cache.codecs import CODECS, codec_options
from medkit.cache.synthetic import ct_volume


def measure(volume: np.ndarray, codec: str, folder: Path, reads: int = 200) -> dict[str, float]:
    path = folder / f"{codec}.h5"
    started = time.perf_counter()
    with h5py.File(path, "w") as handle:
        handle.create_dataset("image", data=volume, chunks=(1, *volume.shape[1:]), **codec_options(codec))
    write = time.perf_counter() - started
    indices = np.random.default_rng(0).integers(0, len(volume), reads)
    with h5py.File(path, "r", rdcc_nbytes=0) as handle:
        dataset = handle["image"]
        started = time.perf_counter()
        for index in indices:
            dataset[int(index)]
        read = (time.perf_counter() - started) / reads
    return {"size_ratio": path.stat().st_size / volume.nbytes, "write_s": write, "slice_read_ms": read * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cache_codecs.json")
    args = parser.parse_args()
    volume, _ = ct_volume(args.slices, args.size, seed=1)
    with tempfile.TemporaryDirectory() as folder:
        rows = {codec: measure(volume, codec, Path(folder)) for codec in CODECS}
    gzip = rows["gzip"]
    for row in rows.values():
        row["read_speedup_vs_gzip"] = gzip["slice_read_ms"] / row["slice_read_ms"]
        row["write_speedup_vs_gzip"] = gzip["write_s"] / row["write_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"volume": list(volume.shape), "codecs": rows}, indent=2) + "\n")
    print("| codec | size / raw | write (s) | slice read (ms) | read x gzip |\n|---|---:|---:|---:|---:|")
    for codec, row in rows.items():
        print(
            f"| {codec} | {row['size_ratio']:.3f} | {row['write_s']:.3f} | {row['slice_read_ms']:.3f} "
            f"| {row['read_speedup_vs_gzip']:.1f} |"
        )


if __name__ == "__main__":
    main()
