"""ct-seg's headline recipes against a plain 2D U-Net at equal wall time, on two phantom generators (issue 16).

The reference is what a researcher writes in an afternoon: a 4-level U-Net of width 8 (double 3x3 conv + BN +
ReLU, max-pool down, transposed conv up), softmax focal loss (gamma 2), Adam 1e-3 without a schedule, batch 8,
per-slice min-max, random batches of the labelled slices of the training volumes held in RAM. It trains for the
same wall time as the medkit run it is compared with, and, like medkit, keeps its best validation evaluation.

Compared, per generator (the embedded phantoms, and `ct_seg_phantoms_b.py`, which no default was tuned on):
- `default`: `medkit run ct-seg` with its defaults (attn_unetpp_v2);
- `unet_paper`: `medkit run ct-seg --arch unet` with the report's recipe (focal, Adam 1e-3, batch 8, no schedule,
  960 slices per epoch);
- `plain_unet`: the reference above.
Every run sees the same slice cache, the same train/validation split of volumes, and is scored by ct-seg's own
per-slice metric (absent class = 1) on the validation volumes' labelled slices. medkit's epochs are set from a
calibration (runs of 1 and 3 epochs) so that each run takes about `--minutes`.

    .venv/bin/python benchmarks/ct_seg_reference.py [--minutes 5] [--volumes 16] [--generators embedded,b]
        [--keep DIR]  # keep caches and runs (checkpoints) to re-score them later

Writes benchmarks/results/ct_seg_reference.json (figures, seconds, and each recipe's figures over the plain
U-Net's).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FIGURES = ("mean_dice", "dice/left_lung", "dice/right_lung", "dice/airway")
# the report's focal loss, Adam 1e-3 without a schedule, batch 8, and its 960 slices per epoch (fewer evaluations)
PAPER_RECIPE = ["--set", "loss=focal", "--set", "optim.scheduler=none", "--set", "batch_size=8"]
PAPER_RECIPE += ["--set", "sampler.samples_per_epoch=960"]
RECIPES: dict[str, list[str]] = {"default": [], "unet_paper": ["--arch", "unet", *PAPER_RECIPE]}


def make_volumes(generator: str, count: int, slices: int, size: int) -> list[tuple[Any, Any]]:
    if generator == "embedded":
        from medkit_ct_seg.phantoms import phantom

        return [phantom(slices, size, seed=1_000 + i) for i in range(count)]
    from ct_seg_phantoms_b import phantom_b

    return [phantom_b(slices, size, seed=i) for i in range(count)]


def build_data(generator: str, count: int, work: Path) -> Path:
    """The generator's volumes as NIfTI images/ + masks/, converted into one slice cache."""
    from ct_seg_phantoms_b import write_folder

    from medkit.cache.build import build_cache
    from medkit.cache.pairing import find_pairs

    folder = write_folder(work / generator, make_volumes(generator, count, 40, 128))
    cache = work / f"{generator}.h5"
    build_cache(find_pairs([folder / "images"], mask_dir=folder / "masks"), cache)
    return cache


def medkit_run(cache: Path, out: Path, recipe: list[str], epochs: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "medkit", "run", "ct-seg", "--data", str(cache), "--out", str(out)]
    command += ["--device", "cpu", "--epochs", str(epochs), *recipe]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode:
        raise RuntimeError(completed.stderr[-3000:])
    summary = json.loads((out / "summary.json").read_text())
    best = summary["best_val"]
    return {"seconds": round(seconds, 1), "epochs": epochs, **{f: best.get(f) for f in FIGURES}}


def calibrated_epochs(cache: Path, work: Path, name: str, recipe: list[str], minutes: float) -> int:
    """Epochs that fill ``minutes``, from runs of 1 and 3 epochs: their difference is the wall time of two
    epochs with everything an epoch brings (validation, checkpoints), the rest is start-up."""
    one = medkit_run(cache, work / f"calibrate-{name}-1", recipe, 1)["seconds"]
    three = medkit_run(cache, work / f"calibrate-{name}-3", recipe, 3)["seconds"]
    epoch = (three - one) / 2
    return max(1, math.floor((minutes * 60 - (one - epoch)) / epoch))


def plain_unet(width: int = 8, classes: int = 4) -> Any:
    from torch import nn

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )  # fmt: skip

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = [width * 2**i for i in range(5)]  # 4 levels below the first
            self.down = nn.ModuleList(
                [block(1, widths[0])] + [block(a, b) for a, b in itertools.pairwise(widths)]
            )
            self.up = nn.ModuleList(
                [nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in itertools.pairwise(widths)]
            )
            self.merge = nn.ModuleList([block(2 * a, a) for a in widths[:-1]])
            self.head = nn.Conv2d(widths[0], classes, 1)

        def forward(self, x):
            skips = []
            for i, down in enumerate(self.down):
                x = down(x if i == 0 else nn.functional.max_pool2d(x, 2))
                skips.append(x)
            for i in reversed(range(len(self.up))):
                x = self.merge[i](torch_cat([self.up[i](x), skips[i]]))
            return self.head(x)

    return UNet()


def torch_cat(tensors: list[Any]) -> Any:
    import torch

    return torch.cat(tensors, dim=1)


def focal_loss(logits: Any, target: Any, gamma: float = 2.0) -> Any:
    import torch

    log_p = torch.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


def slices_of(cache: Any, volumes: list[int], every_slice: bool = False) -> tuple[Any, Any]:
    """The labelled slices of ``volumes`` (or all of them) as tensors: per-slice min-max images, masks."""
    import numpy as np
    import torch

    from medkit.cache.selection import labelled_slices

    chosen = labelled_slices(cache)
    images, masks = [], []
    for v in volumes:
        for s in range(len(cache.mask_area(v))) if every_slice else chosen.get(v, []):
            sample = cache.sample(v, s)
            images.append(
                np.asarray(sample["image"], dtype=np.float32).reshape(1, *sample["image"].shape[-2:])
            )
            masks.append(np.asarray(sample["mask"], dtype=np.int64))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


def evaluate(model: Any, images: Any, masks: Any) -> dict[str, float]:
    import torch

    from medkit_ct_seg.data import CLASS_NAMES
    from medkit_ct_seg.metrics import PaperSegmentationScorer

    scorer = PaperSegmentationScorer(CLASS_NAMES)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images), 32):
            scorer.update(model(images[start : start + 32]), masks[start : start + 32])
    model.train()
    return scorer.compute()


def reference_run(cache_path: Path, seconds: float, seed: int = 0, evaluations: int = 12) -> dict[str, Any]:
    """The plain U-Net for ``seconds`` of training, scored ``evaluations`` times; its best evaluation."""
    import torch

    from medkit.cache.store import Preprocessing, SliceCache
    from medkit_ct_seg.data import split_volumes

    torch.manual_seed(seed)
    cache = SliceCache(cache_path)
    cache.preprocessing = Preprocessing("minmax")
    train_ids, val_ids = split_volumes(cache, 0.25, seed)  # ct-seg's split for the same seed and fraction
    train_x, train_y = slices_of(cache, train_ids)
    val_x, val_y = slices_of(cache, val_ids)
    model = plain_unet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    best: dict[str, float] = {}
    started, steps, next_eval = time.perf_counter(), 0, seconds / evaluations
    while (elapsed := time.perf_counter() - started) < seconds:
        batch = torch.randint(0, len(train_x), (8,), generator=generator)
        loss = focal_loss(model(train_x[batch]), train_y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        if elapsed >= next_eval or time.perf_counter() - started >= seconds:
            figures = evaluate(model, val_x, val_y)
            if not best or figures["mean_dice"] > best["mean_dice"]:
                best = figures
            next_eval += seconds / evaluations
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "steps": steps,
        **{f: best.get(f) for f in FIGURES},
    }


def ratios(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    return {f: round(row[f] / reference[f], 4) for f in FIGURES if row.get(f) and reference.get(f)}


def run_generator(generator: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cache = build_data(generator, args.volumes, work)
    rows: dict[str, Any] = {}
    for name, recipe in RECIPES.items():
        epochs = calibrated_epochs(cache, work / generator, name, recipe, args.minutes)
        rows[name] = medkit_run(cache, work / generator / name, recipe, epochs)
        print(generator, name, rows[name], flush=True)
    wall = max(row["seconds"] for row in rows.values())  # the reference gets the longest medkit run's time
    rows["plain_unet"] = reference_run(cache, wall)
    print(generator, "plain_unet", rows["plain_unet"], flush=True)
    return {
        "rows": rows,
        "over_plain_unet": {name: ratios(rows[name], rows["plain_unet"]) for name in RECIPES},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="wall time of each run")
    parser.add_argument("--volumes", type=int, default=16, help="phantoms per generator (a quarter validate)")
    parser.add_argument("--generators", default="embedded,b")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ct_seg_reference.json")
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep the caches and run directories (checkpoints included) in this folder instead of a temporary one",
    )
    args = parser.parse_args()
    os.environ.setdefault("MEDKIT_RUNS_DIR", tempfile.mkdtemp(prefix="medkit-reference-runs-"))
    report: dict[str, Any] = {"minutes": args.minutes, "volumes": args.volumes, "generators": {}}
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    work = (
        contextlib.nullcontext(str(args.keep))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="ct-seg-reference-")
    )
    with work as folder:
        for generator in args.generators.split(","):
            report["generators"][generator] = run_generator(generator, args, Path(folder))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({g: r["over_plain_unet"] for g, r in report["generators"].items()}, indent=2))


if __name__ == "__main__":
    main()
