"""benchmarks/gpu_check.py on a CPU: every CUDA check skipped with its reason, the JSON's structure, and the
kill-and-resume comparison run for real on a tiny ct-seg training (--cpu-smoke)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load_script():
    """The script as a module (benchmarks/ is no package); registered first, as its dataclasses need."""
    if "gpu_check" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_check"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_check"]


def run_script(out: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    return completed, json.loads(out.read_text()) if out.is_file() else {}


def test_identical_records_compare_equal():
    gpu_check = load_script()
    records = [
        {"epoch": 1, "train/loss": 0.5, "seconds": 1.0},
        {"epoch": 2, "train/loss": 0.25, "lists": [1, 2]},
    ]
    timed = [{**r, "seconds": 9.0} for r in records]  # timings are not figures
    result = gpu_check.compare_records(records, timed)
    assert (
        result.equal and result.within_tolerance and result.max_abs_diff == 0.0 and result.differences == []
    )


def test_a_differing_figure_is_named_with_its_difference():
    gpu_check = load_script()
    expected = [{"epoch": 1, "val/loss": 0.5}, {"epoch": 2, "val/loss": 0.25, "val/dice": 0.7}]
    actual = [{"epoch": 1, "val/loss": 0.5}, {"epoch": 2, "val/loss": 0.25, "val/dice": 0.70001}]
    result = gpu_check.compare_records(expected, actual)
    assert not result.equal and not result.within_tolerance
    assert result.differences == ["epoch 2 val/dice: 0.7 != 0.70001"]
    assert result.max_abs_diff == pytest.approx(1e-5)
    assert gpu_check.compare_records(expected, actual, tolerance=1e-4).within_tolerance  # still not equal
    missing = gpu_check.compare_records(expected, expected[:1], tolerance=1.0)
    assert not missing.within_tolerance and missing.differences == ["2 records != 1 records"]


def test_a_failing_check_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    gpu_check = load_script()

    def broken(setting):
        raise ValueError("boom")

    def skipped(setting):
        raise gpu_check.Skip("not here")

    monkeypatch.setattr(
        gpu_check, "CHECKS", {"broken": broken, "skipped": skipped, "fine": lambda s: {"x": 1}}
    )
    setting = gpu_check.Setting("cpu", False, tmp_path)
    entries = {name: gpu_check.run_check(name, setting) for name in gpu_check.CHECKS}
    assert entries["broken"]["status"] == "failed" and entries["broken"]["error"] == "ValueError: boom"
    assert entries["skipped"] == {"status": "skipped", "reason": "not here", "seconds": 0.0}
    assert entries["fine"]["status"] == "ok" and entries["fine"]["figures"] == {"x": 1}
    assert gpu_check.selected("fine,broken") == ["broken", "fine"]
    with pytest.raises(SystemExit, match="unknown check"):
        gpu_check.selected("nosuch")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks that CUDA checks are skipped without CUDA")
def test_without_cuda_every_check_is_skipped_with_its_reason_and_the_report_is_written(tmp_path):
    out = tmp_path / "gpu_check.json"
    completed, report = run_script(out)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert report["finished"] is True and report["mode"] == "cpu" and report["card"] is None
    assert report["torch"] == torch.__version__ and report["total_seconds"] >= 0
    assert len(report["checks"]) == 9
    for name, entry in report["checks"].items():
        assert entry["status"] == "skipped" and entry["reason"] == "no CUDA device: skipped", name
    assert "no CUDA device: skipped" in completed.stdout


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="--cpu-smoke is the CPU form of the check")
def test_cpu_smoke_kills_and_resumes_a_ct_seg_training_to_the_same_figures(tmp_path):
    out = tmp_path / "gpu_check.json"
    completed, report = run_script(out, "--cpu-smoke", "--only", "resume-ct-seg")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert report["mode"] == "cpu-smoke"
    entry = report["checks"]["resume-ct-seg"]
    assert entry["status"] == "ok", entry
    figures = entry["figures"]
    assert 1 <= figures["epoch"] == figures["records_at_kill"] < 3  # killed after its first checkpoint
    assert figures["records"] == 3 and figures["match"] == "exact" and figures["differences"] == []
    assert figures["max_abs_diff"] == 0.0 and figures["tolerance"] == 0.0
    others = {name: e for name, e in report["checks"].items() if name != "resume-ct-seg"}
    assert {e["status"] for e in others.values()} == {"skipped"}
    assert others["resume-ubc"]["reason"] == "not selected by --only"
