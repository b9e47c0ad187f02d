"""ct-seg training speed: medkit's architectures against segmentation_models_pytorch, and the core Trainer's cost.

1. Throughput: forward + backward + optimiser step on batches of 8 slices at 128 px (CPU), for `unet` and
   `attn_unetpp_v2` at b=16 and for smp's `Unet` / `UnetPlusPlus` (MobileNetV2 encoder, decoder 64..4: the
   smallest smp models, about 1.5x the parameters). Each model runs in its own process (peak memory is its own),
   in plain and channels_last memory format; rounds are interleaved so machine noise hits all alike.
2. Trainer overhead: the same model, data (the phantom slice cache through ResidentSliceDataset) and batch size,
   trained once by the core GradientTrainer (progress, paper metrics, checkpoints each epoch) and once by a bare
   PyTorch loop, in one process.

    .venv/bin/python benchmarks/ct_seg_training.py [--steps 8]

Writes benchmarks/results/ct_seg_training.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from child_process import run_child

HERE = Path(__file__).resolve().parent
MODELS = ("medkit:unet", "medkit:attn_unetpp_v2", "smp:Unet", "smp:UnetPlusPlus")
# "compiled" is channels_last plus torch.compile (inductor, default mode); its compile time is not counted
LAYOUTS = ("plain", "channels_last", "compiled")


def build(spec: str):
    import torch  # noqa: F401

    family, name = spec.split(":")
    if family == "medkit":
        from medkit.plugins import get_plugins

        return get_plugins().get("ct-seg").entry("architecture", name).build(b=16)
    import segmentation_models_pytorch as smp

    return getattr(smp, name)(
        encoder_name="mobilenet_v2",
        encoder_weights=None,
        in_channels=1,
        classes=4,
        decoder_channels=(64, 32, 16, 8, 4),
    )


def status_kb(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak since the last reset through /proc/self/clear_refs), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def throughput_child(spec: str, steps: int, layout: str) -> dict[str, Any]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    import segmentation_models_pytorch  # noqa: F401  (imported by every child, so baselines compare)

    baseline_kb = status_kb("VmRSS")  # the bare process: interpreter, torch, smp
    model = build(spec)
    x, y = torch.randn(8, 1, 128, 128), torch.randint(0, 4, (8, 128, 128))
    if layout in ("channels_last", "compiled"):
        model, x = (
            model.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if layout == "compiled" else model

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(forward(x), y).backward()
        optimizer.step()

    step()  # warm-up: first-call allocations and compilation
    step()
    Path("/proc/self/clear_refs").write_text("5")  # the peak counts the timed steps, not compilation
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - started
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "slices_per_s": 8 * steps / seconds,
        # model, optimiser state, activations and the allocator's cache at the busiest moment of a step
        "peak_step_memory_mb": (status_kb("VmHWM") - baseline_kb) / 1024,
    }


def throughput(steps: int, rounds: int) -> dict[str, Any]:
    figures: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for spec in MODELS:
            for layout in LAYOUTS:
                result = run_child(__file__, "throughput", spec, str(steps), layout)
                best = figures.setdefault(f"{spec} {layout}", result)
                if result["slices_per_s"] > best["slices_per_s"]:
                    figures[f"{spec} {layout}"] = result
    return figures


def trainer_overhead(epochs: int, samples: int) -> dict[str, float]:
    """Wall time of GradientTrainer.fit against a bare loop over the same batches."""
    import torch
    from rich.console import Console
    from torch import nn
    from torch.utils.data import DataLoader

    from medkit.cache.sampler import ResidentSliceDataset
    from medkit.cache.store import Preprocessing, SliceCache
    from medkit.runs import Run
    from medkit.trainer import GradientTrainer
    from medkit_ct_seg.data import CLASS_NAMES, phantom_cache
    from medkit_ct_seg.metrics import PaperSegmentationScorer

    cache = SliceCache(phantom_cache(8, 32, 128))
    cache.preprocessing = Preprocessing("minmax")

    def dataset() -> ResidentSliceDataset:
        return ResidentSliceDataset(cache, samples, resident=4, uses=10, seed=0)

    def model() -> nn.Module:
        torch.manual_seed(0)
        return build("medkit:unet")

    def loss(logits, batch):
        return nn.functional.cross_entropy(logits, batch["mask"].long())

    def bare_loop() -> float:
        net, data = model(), dataset()
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        started = time.perf_counter()
        for epoch in range(1, epochs + 1):
            data.set_epoch(epoch)
            for batch in DataLoader(data, batch_size=8):
                optimizer.zero_grad(set_to_none=True)
                loss(net(batch["image"]), batch).backward()
                optimizer.step()
        return time.perf_counter() - started

    def with_trainer() -> float:
        with tempfile.TemporaryDirectory() as folder:
            trainer = GradientTrainer(
                loss=loss,
                make_optimizer=lambda p: torch.optim.Adam(p, lr=1e-3),
                make_scorers=lambda: [PaperSegmentationScorer(CLASS_NAMES)],
                epochs=epochs,
                batch_size=8,
                console=Console(file=io.StringIO()),
                arch="unet",
                monitor="train/loss",
            )
            started = time.perf_counter()
            trainer.fit(model(), dataset(), None, Run(Path(folder) / "run", "ct-seg", "train", config=None))
            return time.perf_counter() - started

    bare_loop()  # warm-up: first-call allocations and page cache, counted for neither
    times = {"bare": [], "trainer": []}
    for _ in range(2):  # alternate, keep each one's best
        times["bare"].append(bare_loop())
        times["trainer"].append(with_trainer())
    bare, medkit = min(times["bare"]), min(times["trainer"])
    return {"bare_loop_s": bare, "gradient_trainer_s": medkit, "overhead": medkit / bare - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=160)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ct_seg_training.json")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _, spec, steps, layout = args.child
        print(json.dumps(throughput_child(spec, int(steps), layout)))
        return
    os.environ.setdefault("MEDKIT_CACHE_DIR", str(Path(tempfile.gettempdir()) / "medkit-bench-cache"))
    figures = throughput(args.steps, args.rounds)
    best_layout = {
        spec: max(LAYOUTS, key=lambda layout: figures[f"{spec} {layout}"]["slices_per_s"]) for spec in MODELS
    }
    best = {spec: figures[f"{spec} {best_layout[spec]}"] for spec in MODELS}
    ratios = {
        "unet / smp Unet": best["medkit:unet"]["slices_per_s"] / best["smp:Unet"]["slices_per_s"],
        "attn_unetpp_v2 / smp UnetPlusPlus": best["medkit:attn_unetpp_v2"]["slices_per_s"]
        / best["smp:UnetPlusPlus"]["slices_per_s"],
    }
    overhead = trainer_overhead(args.epochs, args.samples)
    report = {
        "throughput": figures,
        "ratios": ratios,
        "best_layout": best_layout,
        "trainer": overhead,
        "targets_met": {"trainer overhead <= 5 %": overhead["overhead"] <= 0.05},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| model | layout | parameters | slices/s | peak step memory (MB) |\n|---|---|---:|---:|---:|")
    for name, row in figures.items():
        spec, layout = name.split(" ")
        print(
            f"| {spec} | {layout} | {row['parameters']:,} | {row['slices_per_s']:.1f} | "
            f"{row['peak_step_memory_mb']:.0f} |"
        )
    print(json.dumps({"ratios": ratios, "trainer": overhead}, indent=2))


if __name__ == "__main__":
    main()
