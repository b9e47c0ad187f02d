"""Slice delivery from CT volumes: paper 002's sampler over the H5 cache against the alternatives, in one run.

Loaders compared (each in its own process, so peak memory is its own):
  a  method 1 - load a source volume (NIfTI) for every sample
  b  method 2 - one source volume at a time, all its slices, then the next
  c  medkit   - ResidentSliceDataset (method 3: K resident, M draws each) over the H5 slice cache
  d  preloaded - every volume in RAM (upper bound)
  e  TorchIO Queue - the peer a user would pick, with comparable memory (max_length = K x M slices)

Two figures each: raw delivery (slices/s into a loop that does nothing) with peak resident memory, and
delivery under training (a loop that spends a fixed time per batch of 8: by default the measured forward and
backward time of a small U-Net at 128 px on this machine), which shows whether the loader keeps a model busy.

    .venv/bin/python benchmarks/slice_cache.py                      # 40 volumes of 256x256x(100-300)
    .venv/bin/python benchmarks/slice_cache.py --volumes 8 --size 128 --quick

Writes benchmarks/results/slice_cache.json with every figure and the ratios the targets are stated in.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
BATCH = 8
OVERHEAD_MB = (
    256  # stated fixed overhead of a loading process: torch's first CPU allocations, HDF5, glibc arenas
)


def generate(workdir: Path, volumes: int, size: int, min_slices: int, max_slices: int) -> list[Path]:
    """Synthetic CT volumes as gzipped NIfTI with masks (``<name>_seg.nii.gz``), reused across runs."""
    import nibabel as nib

    from medkit.cache.synthetic import ct_volume

    folder = workdir / f"nifti-{volumes}x{size}-{min_slices}-{max_slices}"
    folder.mkdir(parents=True, exist_ok=True)
    lengths = np.random.default_rng(0).integers(min_slices, max_slices + 1, size=volumes)
    paths = []
    for i, length in enumerate(lengths):
        path = folder / f"ct{i:03d}.nii.gz"
        if not path.exists():
            image, mask = ct_volume(int(length), size, seed=i)
            affine = np.diag([0.7, 0.7, 1.25, 1.0])
            nib.save(nib.Nifti1Image(mask.transpose(2, 1, 0), affine), folder / f"ct{i:03d}_seg.nii.gz")
            partial = path.with_name(f"partial-{path.name}")  # a killed generation leaves no truncated volume
            nib.save(nib.Nifti1Image(image.transpose(2, 1, 0), affine), partial)
            os.replace(partial, path)
        paths.append(path)
    return paths


def build(folder: Path, out: Path, workers: int) -> float | None:
    from medkit.cache.build import build_cache
    from medkit.cache.pairing import find_pairs

    if out.exists():  # reused from an earlier run: no build time to report
        return None
    started = time.perf_counter()
    build_cache(find_pairs([folder], mask_suffix="_seg"), out, workers=workers)
    return time.perf_counter() - started


def unet_step_seconds() -> float:
    """Forward + backward time of a small U-Net (4 levels, width 16) on a batch of 8 at 128 px."""
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )

    class SmallUNet(nn.Module):
        def __init__(self, w: int = 16) -> None:
            super().__init__()
            self.down = nn.ModuleList(
                [block(1, w), block(w, 2 * w), block(2 * w, 4 * w), block(4 * w, 8 * w)]
            )
            self.up = nn.ModuleList(
                [
                    nn.ConvTranspose2d(8 * w, 4 * w, 2, 2),
                    nn.ConvTranspose2d(4 * w, 2 * w, 2, 2),
                    nn.ConvTranspose2d(2 * w, w, 2, 2),
                ]
            )
            self.merge = nn.ModuleList([block(8 * w, 4 * w), block(4 * w, 2 * w), block(2 * w, w)])
            self.head = nn.Conv2d(w, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for i, down in enumerate(self.down):
                x = down(x if i == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
                x = merge(torch.cat([up(x), skip], dim=1))
            return self.head(x)

    model = SmallUNet()
    optimizer = torch.optim.Adam(model.parameters())
    x, y = torch.randn(BATCH, 1, 128, 128), torch.randint(0, 4, (BATCH, 128, 128))
    times = []
    for _ in range(6):
        started = time.perf_counter()
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return float(np.median(times[1:]))


# ---- the loaders (each runs in a child process) ---------------------------------------------------------


def nifti_slices(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    image = np.asanyarray(nib.load(path).dataobj).transpose(2, 1, 0)
    mask = np.asanyarray(nib.load(str(path).replace(".nii.gz", "_seg.nii.gz")).dataobj).transpose(2, 1, 0)
    return image, mask


def make_loader(variant: str, args: argparse.Namespace, workers: int) -> Any:
    """An iterable of batches of 8 slices for ``variant``."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    paths = sorted(Path(args.nifti).glob("ct???.nii.gz"))
    samples = args.samples

    class Method1(IterableDataset):
        def __iter__(self):
            rng = np.random.default_rng(0)
            for _ in range(samples):
                image, mask = nifti_slices(paths[rng.integers(len(paths))])
                s = rng.integers(len(image))
                yield {
                    "image": torch.from_numpy(image[s].astype(np.float32)),
                    "mask": torch.from_numpy(mask[s]),
                }

    class Method2(IterableDataset):
        def __iter__(self):
            rng, served = np.random.default_rng(0), 0
            while True:
                for p in rng.permutation(len(paths)):
                    image, mask = nifti_slices(paths[p])
                    for s in rng.permutation(len(image)):
                        if served == samples:
                            return
                        served += 1
                        yield {
                            "image": torch.from_numpy(image[s].astype(np.float32)),
                            "mask": torch.from_numpy(mask[s]),
                        }

    if variant == "a":
        return DataLoader(Method1(), batch_size=BATCH, num_workers=workers)
    if variant == "b":
        return DataLoader(Method2(), batch_size=BATCH, num_workers=workers)
    if variant == "c":
        from medkit.cache.sampler import ResidentSliceDataset

        dataset = ResidentSliceDataset(
            args.cache, samples, resident=args.k, uses=args.m, budget_bytes=args.budget, seed=0
        )
        return DataLoader(dataset, batch_size=BATCH, num_workers=workers)
    if variant == "d":
        return preloaded_batches([nifti_slices(p) for p in paths], samples)
    return torchio_queue(paths, samples, args.k, args.m, workers)


def preloaded_batches(volumes: list[tuple[np.ndarray, np.ndarray]], samples: int):
    import torch

    rng = np.random.default_rng(0)
    for _ in range(samples // BATCH):
        picks = [volumes[rng.integers(len(volumes))] for _ in range(BATCH)]
        slices = [(img, msk, rng.integers(len(img))) for img, msk in picks]
        yield {
            "image": torch.from_numpy(np.stack([img[s] for img, _, s in slices]).astype(np.float32)),
            "mask": torch.from_numpy(np.stack([msk[s] for _, msk, s in slices])),
        }


def torchio_queue(paths: list[Path], samples: int, k: int, m: int, workers: int):
    import torchio as tio
    from torch.utils.data import DataLoader

    subjects = [
        tio.Subject(image=tio.ScalarImage(p), mask=tio.LabelMap(str(p).replace(".nii.gz", "_seg.nii.gz")))
        for p in paths
    ]
    first = tio.ScalarImage(paths[0])
    sampler = tio.UniformSampler(patch_size=(first.shape[1], first.shape[2], 1))
    queue = tio.Queue(
        tio.SubjectsDataset(subjects),
        max_length=k * m,
        samples_per_volume=m,
        sampler=sampler,
        num_workers=workers,
        shuffle_subjects=True,
        shuffle_patches=True,
    )
    served = 0
    while served < samples:  # one pass over the queue is samples_per_volume x subjects patches
        for batch in DataLoader(queue, batch_size=BATCH, num_workers=0):
            if served >= samples:
                return
            served += BATCH
            yield batch


def proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak_rss() -> int:
    """Reset this process's peak RSS (VmHWM) to its current RSS and return that, in kB.

    ru_maxrss cannot serve: Linux carries it across exec, so a child would report its parent's peak.
    """
    Path("/proc/self/clear_refs").write_text("5")
    return proc_status_kb("VmRSS")


def child(args: argparse.Namespace) -> None:
    """Run one loader in this process and print its figures as JSON."""
    import torch

    torch.set_num_threads(1)
    baseline_kb = reset_peak_rss()
    workers = 0 if args.mode == "raw" or args.variant == "d" else 1
    made = make_loader(args.variant, args, workers)  # (d) preloads here, outside the timing
    loader = iter(made)
    started, delivered, waited = time.perf_counter(), 0, 0.0
    deadline = started + args.max_seconds
    while time.perf_counter() < deadline:
        asked = time.perf_counter()
        try:
            batch = next(loader)
        except StopIteration:
            break
        waited += time.perf_counter() - asked
        delivered += len(batch["image"])
        if args.mode == "train":
            time.sleep(args.step_seconds)  # the model's fixed time per batch
    elapsed = time.perf_counter() - started
    peak_kb = max(proc_status_kb("VmHWM"), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    figures = {
        "slices": delivered,
        "seconds": elapsed,
        "slices_per_s": delivered / elapsed,
        "waiting_share": waited / elapsed,
        "peak_rss_mb": peak_kb / 1024,
        "rss_above_start_mb": (peak_kb - baseline_kb) / 1024,
    }
    stats = getattr(getattr(made, "dataset", None), "stats", None)
    if stats is not None and workers == 0:  # what the sampler itself held (workers keep their own copy)
        figures["sampler_peak_resident_mb"] = stats.peak_resident_bytes / 2**20
    print(json.dumps(figures))


def run_child(variant: str, mode: str, args: argparse.Namespace, samples: int, step: float) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--variant",
        variant,
        "--mode",
        mode,
        "--nifti",
        str(args.nifti),
        "--cache",
        str(args.cache),
        "--samples",
        str(samples),
        "--k",
        str(args.k),
        "--m",
        str(args.m),
        "--budget",
        str(args.budget),
        "--step-seconds",
        str(step),
        "--max-seconds",
        str(args.max_seconds),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr else "failed"}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--min-slices", type=int, default=100)
    parser.add_argument("--max-slices", type=int, default=300)
    parser.add_argument("--k", type=int, default=20, help="resident volumes (paper: 20)")
    parser.add_argument("--m", type=int, default=10, help="draws per resident volume (paper: 10)")
    parser.add_argument(
        "--budget", type=int, default=256 * 2**20, help="medkit sampler memory budget in bytes"
    )
    parser.add_argument("--samples", type=int, default=4000, help="slices each loader is asked for")
    parser.add_argument("--max-seconds", type=float, default=40.0, help="time limit of each measurement")
    parser.add_argument(
        "--step-seconds", type=float, default=None, help="model time per batch (default: measured)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "medkit-bench"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "slice_cache.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--nifti", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    paths = generate(args.workdir, args.volumes, args.size, args.min_slices, args.max_slices)
    args.nifti = paths[0].parent
    args.cache = args.workdir / f"{args.nifti.name}.h5"
    build_seconds = build(args.nifti, args.cache, workers=2)
    step = args.step_seconds if args.step_seconds is not None else unet_step_seconds()
    names = {
        "a": "method 1: volume per sample (NIfTI)",
        "b": "method 2: one volume at a time (NIfTI)",
        "c": "medkit ResidentSliceDataset (H5 cache)",
        "d": "preloaded in RAM (upper bound)",
        "e": "TorchIO Queue (NIfTI)",
    }
    results: dict[str, Any] = {}
    for variant, name in names.items():
        results[variant] = {"name": name}
        for mode in ("raw", "train"):
            results[variant][mode] = run_child(variant, mode, args, args.samples, step)
            print(variant, mode, results[variant][mode], flush=True)

    def rate(variant: str, mode: str) -> float:
        return results[variant][mode].get("slices_per_s", float("nan"))

    ratios = {
        "raw_c_over_a": rate("c", "raw") / rate("a", "raw"),
        "train_c_over_d": rate("c", "train") / rate("d", "train"),
        "train_c_over_e": rate("c", "train") / rate("e", "train"),
        "raw_c_over_e": rate("c", "raw") / rate("e", "raw"),
    }
    targets = {
        "raw (c) >= 10x (a)": ratios["raw_c_over_a"] >= 10,
        "train (c) >= 0.9x (d)": ratios["train_c_over_d"] >= 0.9,
        "train (c) ahead of (e)": ratios["train_c_over_e"] > 1,
        "sampler's resident data of (c) within its budget": results["c"]["raw"].get(
            "sampler_peak_resident_mb", 1e9
        )
        <= args.budget / 2**20,
        "process memory of (c) within budget + 256 MB fixed overhead": results["c"]["raw"].get(
            "rss_above_start_mb", 1e9
        )
        <= args.budget / 2**20 + OVERHEAD_MB,
    }
    report = {
        "config": {k: str(v) for k, v in vars(args).items() if k not in ("child", "variant", "mode")},
        "unet_step_seconds": step,
        "build_seconds": build_seconds,
        "results": results,
        "ratios": ratios,
        "targets_met": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "targets_met": targets}, indent=2))


if __name__ == "__main__":
    main()
