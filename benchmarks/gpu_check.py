"""GPU check: the CUDA paths that CPU tests never reach, in one script that fits in 8 minutes on one H100.

Checks (names for --only; a group name such as `resume` selects all of its checks):

- resume-ct-seg, resume-ubc, resume-gan-aug: a short training on CUDA (AMP on for ct-seg and ubc; gan-aug's
  trainer has no AMP option) is run uninterrupted and, beside it, killed with SIGKILL once its first checkpoint
  exists, then resumed with `--resume`; the two metrics.jsonl must agree (timings and paths aside): exactly, or
  within TOLERANCE (1e-4) on CUDA, where a few kernels stay non-deterministic. CUBLAS_WORKSPACE_CONFIG is set.
- paper-step-ct-seg, paper-step-ubc, paper-step-gan-aug: one training step of each plugin's configs/paper.yaml
  at the paper's image and batch size (less data, no long evaluation), with peak GPU memory.
- faiss-gpu: a GPU IndexFlatL2 returns the CPU index's 5 neighbours on random data.
- torchrun-nccl: a short ct-seg training under torchrun, one process per GPU, logs each epoch once.
- throughput: images/s of ct-seg's `unet` and `attn_unetpp_v2` beside smp's `Unet` and `UnetPlusPlus` (the
  models of benchmarks/ct_seg_training.py), forward + backward + Adam step with AMP.

Without CUDA every check is skipped ("no CUDA device: skipped") in a few seconds; `--cpu-smoke` instead runs
resume-ct-seg and throughput on the CPU at a tiny size, so that the script's own logic is tested
(tests/test_gpu_check.py). Each check is isolated: a failure is recorded and the rest still run. Exit code 1
when a check failed; skips are not failures.

    .venv/bin/python benchmarks/gpu_check.py [--only NAME,...] [--out PATH] [--cpu-smoke] [--keep]

Writes benchmarks/results/gpu_check.json (atomically, after every check). Not yet run on a GPU: its CUDA paths
follow the CPU paths that --cpu-smoke and the plugins' tests run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "gpu_check.json"
TOLERANCE = 1e-4  # CUDA only: a few backward kernels (upsampling, index_add) have no deterministic version
IGNORED_KEYS = frozenset({"seconds", "checkpoint"})  # timings, and paths that name each run's own folder
BUDGET_S = 480.0  # 8 minutes: checks that would start later are skipped
CHECK_LIMIT_S = 300.0  # one check's children, all together; less when the budget is nearly spent
NO_CUDA = "no CUDA device: skipped"


class Skip(Exception):
    """A check that cannot run here; its message is the reason."""


class CheckFailed(Exception):
    """A check that ran and found a fault; keeps the figures it measured."""

    def __init__(self, message: str, figures: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.figures = figures or {}


@dataclass
class Setting:
    device: str  # "cuda", or "cpu" for --cpu-smoke and machines without CUDA
    smoke: bool  # --cpu-smoke: tiny sizes on the CPU
    work: Path  # run folders and logs of the children
    deadline: float = math.inf  # time.monotonic() after which no further check starts
    has_cuda: bool = False  # a GPU is visible (--cpu-smoke may still leave it unused)
    until: float = math.inf  # time.monotonic() by which the running check's children must be done

    def left(self) -> float:
        """Seconds the running check's children still have."""
        return max(1.0, self.until - time.monotonic())

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def require(self, cpu_smoke: bool = False) -> None:
        """Skip unless on CUDA, or on the CPU under --cpu-smoke for checks that have a CPU form."""
        if self.cuda or (self.smoke and cpu_smoke):
            return
        if not self.smoke:
            raise Skip(NO_CUDA)
        unused = "--cpu-smoke leaves the GPU unused" if self.has_cuda else NO_CUDA
        raise Skip(f"{unused} (--cpu-smoke has no CPU form of this check)")


# --- comparing metrics.jsonl records -------------------------------------------------------------------------


@dataclass
class Comparison:
    equal: bool  # every value identical
    within_tolerance: bool  # the same keys and non-numeric values, numbers within the tolerance
    max_abs_diff: float
    differences: list[str] = field(default_factory=list)  # "epoch 2 val/loss: 0.51 != 0.52", first few


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(key path, leaf) of nested records: gan-aug logs lists such as ada/p_per_step."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(value, list | tuple):
        yield f"{prefix}#len", len(value)
        for i, item in enumerate(value):
            yield from flatten(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _label(record: dict[str, Any], index: int) -> str:
    for key in ("epoch", "images"):
        if key in record:
            return f"{key} {record[key]}"
    return f"record {index + 1}"


def compare_records(
    expected: Sequence[dict[str, Any]],
    actual: Sequence[dict[str, Any]],
    tolerance: float = 0.0,
    ignore: frozenset[str] = IGNORED_KEYS,
) -> Comparison:
    """Record by record, key by key: which figures differ and by how much (``ignore``d keys left out)."""
    differences: list[str] = []
    max_diff, structural = 0.0, False
    if len(expected) != len(actual):
        differences.append(f"{len(expected)} records != {len(actual)} records")
        structural = True
    for index, (a, b) in enumerate(zip(expected, actual, strict=False)):
        left = {k: v for k, v in flatten({k: v for k, v in a.items() if k not in ignore})}
        right = {k: v for k, v in flatten({k: v for k, v in b.items() if k not in ignore})}
        label = _label(a, index)
        for key in sorted(left.keys() ^ right.keys()):
            differences.append(f"{label} {key}: only in {'the first' if key in left else 'the second'}")
            structural = True
        for key in sorted(left.keys() & right.keys()):
            x, y = left[key], right[key]
            if x == y or (_is_number(x) and _is_number(y) and math.isnan(x) and math.isnan(y)):
                continue
            differences.append(f"{label} {key}: {x!r} != {y!r}")
            if _is_number(x) and _is_number(y):
                max_diff = max(max_diff, abs(x - y))
            else:
                structural = True
    return Comparison(
        equal=not differences,
        within_tolerance=not structural and max_diff <= tolerance,
        max_abs_diff=max_diff,
        differences=differences,
    )


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records; a line still being written (or torn by the kill) is left out."""
    path = run_dir / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


# --- children ------------------------------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    # cuBLAS is deterministic only with a fixed workspace; seed_everything asks torch for deterministic kernels
    return {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "PYTHONUNBUFFERED": "1"}


def medkit_command(*args: str) -> list[str]:
    """The CLI as `medkit` runs it (pyproject's console script is medkit.cli.main:main, as `-m medkit`)."""
    return [sys.executable, "-m", "medkit", *args]


def tail(path: Path, chars: int = 2500) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else ""


def start(command: list[str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as handle:  # a file, not a pipe: a chatty child never blocks on a full pipe
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT)


def finish(process: subprocess.Popen, log: Path, what: str, timeout: float) -> None:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise CheckFailed(
            f"{what} did not finish in {timeout:.0f} s; its output ends:\n{tail(log)}"
        ) from None
    if code:
        raise CheckFailed(f"{what} exited with {code}; its output ends:\n{tail(log)}")


def run_logged(command: list[str], log: Path, what: str, timeout: float) -> None:
    finish(start(command, log), log, what, timeout)


def run_child(setting: Setting, log: Path, *args: str) -> dict[str, Any]:
    """``python gpu_check.py --child *args`` in a fresh process (its own GPU memory peak; a crash or an
    out-of-memory stays there); the child prints its figures as JSON on its last line."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    run_logged(command, log, f"child {' '.join(args)}", setting.left())
    return json.loads(log.read_text().strip().splitlines()[-1])


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sets(*options: str) -> list[str]:
    return [part for option in options for part in ("--set", option)]


# --- kill and resume -----------------------------------------------------------------------------------------


def training_args(plugin: str, setting: Setting) -> list[str]:
    """`medkit run` arguments of a short training: a few epochs (or checkpoint intervals) of a second or so."""
    device = ["--device", setting.device]
    if plugin == "ct-seg":
        return [
            *("run", "ct-seg", "--arch", "mini_unet" if setting.smoke else "attn_unetpp_v2"),
            *device,
            *("--epochs", "3"),
            *sets(
                f"image_size={32 if setting.smoke else 64}",
                "model.b=8",
                "amp=true",
                "phantoms.volumes=4",
                "phantoms.slices=8" if setting.smoke else "phantoms.slices=16",
            ),
            *sets(
                f"sampler.samples_per_epoch={64 if setting.smoke else 256}",
                "sampler.resident=2",
                "sampler.uses=4",
            ),
        ]
    if plugin == "ubc":
        return [
            *("run", "ubc", "--arch", "ubc_resnet18", *device, "--epochs", "3"),
            *sets("amp=true", "image_size=64", "batch_size=8", "data_options.synthetic.patients=8"),
            *sets("min_epoch_images=160", "plateau=2"),
        ]
    if plugin == "gan-aug":
        network = ("resolution=32", "channel_base=512", "channel_max=32", "z_dim=16", "w_dim=16")
        network += ("mapping_layers=2", "embed_dim=16")
        training = (
            "batch_size=8",
            "total_images=384",
            "checkpoint_every_images=128",
            "eval_every_images=128",
        )
        return [
            *("run", "gan-aug", *device),
            *sets(*(f"network.{o}" for o in network), *(f"training.{o}" for o in training)),
            *sets("data_options.scale=0.1", "metrics.images=36", "metrics.eval_images=36"),
            *sets("compare_classifiers=false", "grid_per_class=1"),
        ]
    raise ValueError(plugin)


def checkpoint_progress(path: Path) -> dict[str, Any]:
    from medkit.checkpoint import load_checkpoint

    progress = load_checkpoint(path)["progress"]
    return {k: progress[k] for k in ("epoch", "images_seen") if k in progress}


def kill_after_first_checkpoint(command: list[str], out: Path, log: Path, timeout: float) -> dict[str, Any]:
    """Start the run, SIGKILL it as soon as checkpoints/last.pt and a metrics line exist; what it had done."""
    process = start(command, log)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if (out / "checkpoints" / "last.pt").is_file() and read_records(out):
                break
            if process.poll() is not None:
                raise CheckFailed(
                    f"the run ended (exit {process.returncode}) before its first checkpoint:\n{tail(log)}"
                )
            time.sleep(0.01)
        else:
            raise CheckFailed(f"no checkpoint after {timeout:.0f} s; the run's output ends:\n{tail(log)}")
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        stop(process)
    if (out / "summary.json").is_file():
        raise CheckFailed("the run finished before it could be killed; give it longer epochs")
    return {"records_at_kill": len(read_records(out)), **checkpoint_progress(out / "checkpoints" / "last.pt")}


def resume_check(plugin: str) -> Callable[[Setting], dict[str, Any]]:
    def check(setting: Setting) -> dict[str, Any]:
        setting.require(cpu_smoke=plugin == "ct-seg")
        args = training_args(plugin, setting)
        folder = setting.work / f"resume-{plugin}"
        whole, killed = folder / "whole", folder / "killed"
        # the uninterrupted run trains beside the killed one: same figures, half the wall time
        uninterrupted = start(medkit_command(*args, "--out", str(whole)), folder / "whole.log")
        try:
            figures = kill_after_first_checkpoint(
                medkit_command(*args, "--out", str(killed)), killed, folder / "killed.log", setting.left()
            )
            resume = medkit_command("run", plugin, "--out", str(killed), "--resume")
            run_logged(resume, folder / "resumed.log", "the resumed run", setting.left())
            finish(uninterrupted, folder / "whole.log", "the uninterrupted run", setting.left())
        finally:
            stop(uninterrupted)
        # gan-aug's trainer has no AMP option: it trains in float32
        figures["amp"] = setting.cuda and plugin != "gan-aug"
        return compare_runs(read_records(whole), read_records(killed), setting, figures)

    return check


def compare_runs(
    whole: list[dict[str, Any]], resumed: list[dict[str, Any]], setting: Setting, figures: dict[str, Any]
) -> dict[str, Any]:
    tolerance = TOLERANCE if setting.cuda else 0.0  # the CPU kernels are deterministic: exact or a bug
    result = compare_records(whole, resumed, tolerance)
    figures = {
        **figures,
        "records": len(whole),
        "match": "exact" if result.equal else "within tolerance" if result.within_tolerance else "differs",
        "max_abs_diff": result.max_abs_diff,
        "tolerance": tolerance,
        "differences": result.differences[:10],
    }
    if not result.within_tolerance:
        raise CheckFailed(
            f"the resumed run's figures differ from the uninterrupted run's in {len(result.differences)} values "
            f"(max abs diff {result.max_abs_diff:.3g}, tolerance {tolerance:g}); first: {result.differences[:3]}",
            figures,
        )
    return figures


# --- one step at the paper's size ----------------------------------------------------------------------------

# less data and evaluation than the paper, the same network, image size and batch size
PAPER_SETS = {
    "ct-seg": ["sampler.samples_per_epoch=8", "phantoms.volumes=8", "phantoms.slices=16"],
    "ubc": ["data_options.synthetic.patients=10"],  # 5 patients x 5 slices x 2 classes: one batch of 50
    "gan-aug": [
        "training.total_images=32",  # one step of the paper's 32 (lazy R1 and path length run at step 0)
        "training.checkpoint_every_images=32",
        "training.eval_every_images=null",
        "metrics.extractor=lite0",  # paper.yaml's inception needs a weights file; the step is what is checked
        "metrics.images=36",
        "metrics.eval_images=36",
        "data_options.scale=0.1",
        "compare_classifiers=false",
        "grid_per_class=1",
    ],
}
PAPER_EPOCHS = {"ct-seg": 1, "ubc": 1}


def paper_step_child(plugin: str, device: str, out: str) -> dict[str, Any]:
    """In the child: `medkit run PLUGIN --config configs/paper.yaml` through the runner, one step long."""
    import io

    import torch
    from rich.console import Console

    from medkit.plugins import get_plugins
    from medkit.runner import execute, resolve

    record = get_plugins().get(plugin)
    recipe = record.default_recipe()
    flags = {"out": out, "device": device, "epochs": PAPER_EPOCHS.get(plugin)}
    paper = ROOT / "plugins" / plugin / "configs" / "paper.yaml"
    config = resolve(record, recipe, [paper], PAPER_SETS[plugin], flags)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    _, summary = execute(record, recipe, config, console=Console(file=io.StringIO()))
    figures = {"seconds_in_recipe": round(time.perf_counter() - started, 1), **paper_size(plugin, config)}
    if device == "cuda":
        figures["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        figures["peak_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20)
    losses = {k: v for r in read_records(Path(out)) for k, v in r.items() if "loss" in k and _is_number(v)}
    figures["losses"] = losses
    if summary.get("parameters"):
        figures["parameters"] = summary["parameters"]
    if not losses or not all(math.isfinite(v) for v in losses.values()):
        raise RuntimeError(f"no finite loss after one step: {losses}")
    return figures


def paper_size(plugin: str, config: Any) -> dict[str, Any]:
    if plugin == "gan-aug":
        n = config.network
        return {
            "resolution": n.resolution,
            "batch_size": config.training.batch_size,
            "channel_max": n.channel_max,
            "z_dim": n.z_dim,
        }
    return {"arch": config.arch, "image_size": config.image_size, "batch_size": config.batch_size}


def paper_step_check(plugin: str) -> Callable[[Setting], dict[str, Any]]:
    def check(setting: Setting) -> dict[str, Any]:
        setting.require()
        out = setting.work / f"paper-{plugin}"
        return run_child(
            setting, setting.work / f"paper-{plugin}.log", "paper-step", plugin, "cuda", str(out)
        )

    return check


# --- FAISS ---------------------------------------------------------------------------------------------------


def faiss_check(setting: Setting) -> dict[str, Any]:
    setting.require()
    import faiss
    import numpy as np

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        raise Skip(
            f"faiss {faiss.__version__} has no GPU support (faiss-cpu); `pip install -e '.[gpu]'` installs "
            "faiss-gpu-cu12"
        )
    rng = np.random.default_rng(0)
    base, queries = rng.standard_normal((50_000, 64), np.float32), rng.standard_normal((500, 64), np.float32)
    cpu = faiss.IndexFlatL2(64)
    cpu.add(base)
    cpu_d, cpu_i = cpu.search(queries, 5)
    gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, faiss.IndexFlatL2(64))
    gpu.add(base)
    gpu_d, gpu_i = gpu.search(queries, 5)
    relative = np.abs(gpu_d - cpu_d) / np.maximum(np.abs(cpu_d), 1e-6)
    same = cpu_i == gpu_i
    figures = {
        "index_agreement": float(same.mean()),
        "max_rel_distance_diff": float(relative.max()),
        "neighbours_compared": int(same.size),
    }
    # the GPU's distances come from a matrix product: near-ties may swap two neighbours, but a neighbour that
    # is not a tie changes the distance at its rank
    if relative.max() > 1e-4:
        raise CheckFailed("the GPU index returns other neighbours than the CPU index", figures)
    return figures


# --- torchrun ------------------------------------------------------------------------------------------------


def torchrun_check(setting: Setting) -> dict[str, Any]:
    setting.require()
    import torch

    gpus = torch.cuda.device_count()
    out = setting.work / "torchrun"
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus)),
        *("--master_addr", "127.0.0.1", "--master_port", str(free_port())),
        *("-m", "medkit", "run", "ct-seg", "--arch", "mini_unet", "--out", str(out), "--device", "cuda"),
        *("--epochs", "2"),
        # 4 phantoms per process: every rank trains on volumes of its own
        *sets("model.b=8", "image_size=32", f"phantoms.volumes={4 * gpus}", "phantoms.slices=8"),
        *sets("sampler.samples_per_epoch=16", "sampler.resident=2", "sampler.uses=4"),
    ]
    run_logged(command, setting.work / "torchrun.log", "torchrun", setting.left())
    epochs = [r["epoch"] for r in read_records(out)]
    summary = json.loads((out / "summary.json").read_text())
    figures = {"processes": gpus, "epochs_logged": epochs, "world_size": summary.get("world_size")}
    if epochs != [1, 2] or summary.get("world_size") != gpus:
        raise CheckFailed(f"expected epochs [1, 2] logged once by a world of {gpus}", figures)
    return figures


# --- throughput ----------------------------------------------------------------------------------------------

MODELS = ("medkit:unet", "medkit:attn_unetpp_v2", "smp:Unet", "smp:UnetPlusPlus")


def throughput_child(
    device: str, batch: int, size: int, warmup: int, steps: int, rounds: int
) -> dict[str, Any]:
    """Images/s of each model, AMP on CUDA, channels-last; rounds interleaved, the best kept."""
    import torch
    from ct_seg_training import build  # the CPU benchmark's models: width b=16, smp's smallest encoder
    from torch import nn

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    cuda = device == "cuda"
    x = torch.randn(batch, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 4, (batch, size, size), device=device)
    figures: dict[str, dict[str, Any]] = {}
    for _ in range(rounds):
        for spec in MODELS:
            model = build(spec).to(device, memory_format=torch.channels_last)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            scaler = torch.amp.GradScaler("cuda", enabled=cuda)

            def step(model=model, optimizer=optimizer, scaler=scaler) -> None:
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type=device, enabled=cuda):
                    loss = nn.functional.cross_entropy(model(x), y)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

            for _ in range(warmup):
                step()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            for _ in range(steps):
                step()
            if cuda:
                torch.cuda.synchronize()
            row = {
                "images_per_s": batch * steps / (time.perf_counter() - started),
                "parameters": sum(p.numel() for p in model.parameters()),
                **({"peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20)} if cuda else {}),
            }
            if spec not in figures or row["images_per_s"] > figures[spec]["images_per_s"]:
                figures[spec] = row
            del model, optimizer, scaler
            if cuda:
                torch.cuda.empty_cache()
    return figures


def throughput_check(setting: Setting) -> dict[str, Any]:
    setting.require(cpu_smoke=True)
    # GPU: batch 32 of 128 px slices (the paper's size; batch 8 leaves an H100 idle); CPU smoke: a token size
    shape = (32, 128, 5, 30, 2) if setting.cuda else (2, 32, 1, 2, 1)
    args = [setting.device, *map(str, shape)]
    models = run_child(setting, setting.work / "throughput.log", "throughput", *args)
    speed = {spec: row["images_per_s"] for spec, row in models.items()}
    return {
        "batch_size": shape[0],
        "image_size": shape[1],
        "amp": setting.cuda,
        "models": models,
        "ratios": {
            "unet / smp Unet": speed["medkit:unet"] / speed["smp:Unet"],
            "attn_unetpp_v2 / smp UnetPlusPlus": speed["medkit:attn_unetpp_v2"] / speed["smp:UnetPlusPlus"],
        },
    }


# --- the run -------------------------------------------------------------------------------------------------

CHECKS: dict[str, Callable[[Setting], dict[str, Any]]] = {
    "resume-ct-seg": resume_check("ct-seg"),
    "resume-ubc": resume_check("ubc"),
    "resume-gan-aug": resume_check("gan-aug"),
    "paper-step-ct-seg": paper_step_check("ct-seg"),
    "paper-step-ubc": paper_step_check("ubc"),
    "paper-step-gan-aug": paper_step_check("gan-aug"),
    "faiss-gpu": faiss_check,
    "torchrun-nccl": torchrun_check,
    "throughput": throughput_check,
}


def selected(only: str | None) -> list[str]:
    """Check names from --only: names or group prefixes (`resume`, `paper-step`)."""
    if not only:
        return list(CHECKS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if not any(n == w or n.startswith(f"{w}-") for n in CHECKS)]
    if unknown:
        raise SystemExit(f"--only: unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    return [n for n in CHECKS if any(n == w or n.startswith(f"{w}-") for w in wanted)]


def run_check(name: str, setting: Setting) -> dict[str, Any]:
    started = time.monotonic()
    if started > setting.deadline:
        return {"status": "skipped", "reason": "the time budget (--budget) was spent", "seconds": 0.0}
    # a check started late gets what is left of the budget, at least a minute
    setting.until = started + min(CHECK_LIMIT_S, max(60.0, setting.deadline - started))
    try:
        entry: dict[str, Any] = {"status": "ok", "figures": CHECKS[name](setting)}
    except Skip as skip:
        entry = {"status": "skipped", "reason": str(skip)}
    except CheckFailed as failed:
        entry = {"status": "failed", "error": str(failed), "figures": failed.figures}
    except Exception as err:  # any fault of one check is its own result; the others still run
        entry = {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc()[-3000:],
        }
    entry["seconds"] = round(time.monotonic() - started, 1)
    return entry


def environment() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "card": torch.cuda.get_device_name(0) if cuda else None,
        "gpus": torch.cuda.device_count() if cuda else 0,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    from medkit.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def line(name: str, entry: dict[str, Any]) -> str:
    detail = entry.get("reason") or entry.get("error", "")
    figures = entry.get("figures", {})
    if entry["status"] == "ok" and "match" in figures:
        detail = f"{figures['match']} match over {figures['records']} records (killed at {figures['records_at_kill']})"
    elif entry["status"] == "ok" and "ratios" in figures:
        detail = ", ".join(f"{k} {v:.2f}" for k, v in figures["ratios"].items())
    elif entry["status"] == "ok" and "peak_memory_mb" in figures:
        detail = f"peak {figures['peak_memory_mb']} MiB"
    return f"{name:<20} {entry['status']:<8} {entry['seconds']:>6.1f} s  {' '.join(detail.split())[:200]}"


def main_run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    chosen = selected(args.only)
    os.environ.setdefault("MEDKIT_CACHE_DIR", str(Path(tempfile.gettempdir()) / "medkit-gpu-check-cache"))
    env = environment()
    device = "cuda" if env["card"] and not args.cpu_smoke else "cpu"
    mode = "cuda" if device == "cuda" else "cpu-smoke" if args.cpu_smoke else "cpu"
    report: dict[str, Any] = {**env, "mode": mode, "finished": False, "total_seconds": 0.0, "checks": {}}
    work = Path(tempfile.mkdtemp(prefix="medkit-gpu-check-"))
    setting = Setting(device, args.cpu_smoke, work, started + args.budget, has_cuda=bool(env["card"]))
    if device == "cpu":
        # two trainings run side by side: torch's threads spinning on shared cores made each epoch 30x slower
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
    for name in CHECKS:
        if name in chosen:
            entry = run_check(name, setting)
        else:
            entry = {"status": "skipped", "reason": "not selected by --only", "seconds": 0.0}
        report["checks"][name] = entry
        report["total_seconds"] = round(time.monotonic() - started, 1)
        write_report(args.out, report)
        print(line(name, entry), flush=True)
    report["finished"] = True
    write_report(args.out, report)
    failed = [n for n, e in report["checks"].items() if e["status"] == "failed"]
    if args.keep or failed:  # a failure's full logs are worth keeping
        print(f"run folders and logs: {work}")
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(
        f"{mode}: {len(failed)} failed, {report['total_seconds']} s on {env['card'] or 'no GPU'}; {args.out}"
    )
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON report")
    parser.add_argument("--only", help=f"comma-separated checks or groups: {', '.join(CHECKS)}")
    parser.add_argument("--cpu-smoke", action="store_true", help="run the checks that have a CPU form, tiny")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds after which no check starts")
    parser.add_argument("--keep", action="store_true", help="keep the children's run folders and logs")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "paper-step":
            print(json.dumps(paper_step_child(*rest)))
        else:
            device, *numbers = rest
            print(json.dumps(throughput_child(device, *map(int, numbers))))
        return
    sys.exit(main_run(args))


if __name__ == "__main__":
    main()
