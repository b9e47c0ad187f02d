"""The core GradientTrainer through real runs of the example plugin: exact resume after a kill, early stopping,
best checkpoints, and distributed data-parallel training on CPU (gloo, 2 processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medkit.checkpoint import load_checkpoint
from medkit.testing import free_port, run_and_kill

SMALL = ["--device", "cpu", "--set", "samples=48", "--set", "image_size=16", "--set", "batch_size=8"]


def medkit(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    completed = subprocess.run(
        [sys.executable, "-m", "medkit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if check:
        assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


def metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_result(tmp_path):
    """Kill -9 during epoch 3 of 4, resume, and get the very figures of an uninterrupted run."""
    options = ["--device", "cpu", "--epochs", "4", "--set", "samples=640", "--set", "image_size=32"]
    medkit("run", "example", "--out", str(tmp_path / "whole"), *options)

    killed = tmp_path / "killed"
    run_and_kill(["run", "example", "--out", str(killed), *options], killed, epochs_logged=2, delay=0.3)
    interrupted_at = load_checkpoint(killed / "checkpoints" / "last.pt")["progress"]["epoch"]
    assert 1 <= interrupted_at < 4

    medkit("run", "example", "--out", str(killed), "--resume", *options)
    assert metrics(killed) == metrics(tmp_path / "whole")
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    resumed = json.loads((killed / "summary.json").read_text())
    assert resumed["final"] == whole["final"] and resumed["best_epoch"] == whole["best_epoch"]
    assert len(json.loads((killed / "env.json").read_text())["resumed"]) == 1


def test_resume_uses_the_runs_own_config_and_refuses_a_changed_one(tmp_path):
    out = tmp_path / "run"
    medkit("run", "example", "--out", str(out), "--epochs", "1", "--set", "optim.lr=0.01", *SMALL)
    extended = medkit("run", "example", "--out", str(out), "--resume", "--epochs", "2")
    assert "resuming" in extended.stdout
    assert [r["epoch"] for r in metrics(out)] == [1, 2]
    assert "lr: 0.01" in (out / "config.yaml").read_text()
    refused = medkit("run", "example", "--out", str(out), "--resume", "--set", "optim.lr=0.5", check=False)
    assert refused.returncode == 2
    assert "optim.lr" in refused.stderr and "must keep its config" in refused.stderr


def test_early_stopping_ends_a_run_that_stops_improving(tmp_path):
    out = tmp_path / "run"
    # With a learning rate of zero nothing improves after epoch 1, so patience 2 stops at epoch 3.
    medkit(
        "run",
        "example",
        "--out",
        str(out),
        "--epochs",
        "10",
        "--set",
        "optim.lr=0",
        "--set",
        "patience=2",
        "--set",
        "monitor=val/loss",
        "--set",
        "monitor_mode=min",
        *SMALL,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_early"] is True
    assert summary["epochs_run"] == 3 and summary["best_epoch"] == 1
    assert len(metrics(out)) == 3


def test_the_best_checkpoint_holds_the_best_epoch(tmp_path):
    out = tmp_path / "run"
    medkit("run", "example", "--out", str(out), "--epochs", "3", *SMALL)
    summary = json.loads((out / "summary.json").read_text())
    records = metrics(out)
    best = max(records, key=lambda r: r["val/mean_dice"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best"] == pytest.approx(best["val/mean_dice"])
    assert load_checkpoint(out / "checkpoints" / "best.pt", arch="tiny_cnn")["epoch"] == best["epoch"]
    assert (out / "plots" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_same_seed_gives_the_same_run_and_another_seed_does_not(tmp_path):
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        medkit("run", "example", "--out", str(tmp_path / name), "--epochs", "1", "--seed", seed, *SMALL)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert metrics(tmp_path / "a") != metrics(tmp_path / "c")


@pytest.mark.slow
def test_distributed_training_on_cpu_logs_once_and_checkpoints_from_rank_0(tmp_path):
    out = tmp_path / "ddp"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "medkit",
            "run",
            "example",
            "--out",
            str(out),
            "--epochs",
            "2",
            *SMALL,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    records = metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]  # logged once, not once per rank
    # Each rank trained on its own half: 36 training samples in all, 18 per rank.
    assert all(r["train/samples"] == 36 and r["val/samples"] == 12 for r in records)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert (state["world_size"], state["written_by_rank"]) == (2, 0)
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert completed.stdout.count("epoch 1/2") == 1
