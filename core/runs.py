"""Run directories: one folder per run holding its config, environment, metrics, summary and checkpoints.

Layout::

    runs/<plugin>/<YYYYmmdd-HHMMSS>-<arch or recipe>/
        config.yaml      the resolved config; `medkit run PLUGIN --config config.yaml` re-runs it
        env.json         versions, device, seed, git commit, command line
        metrics.jsonl    one JSON object per epoch or evaluation
        summary.json     the final figures (what scripts read)
        checkpoints/     last.pt and best.pt, written atomically
        plots/           training curves and other pictures
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .config import dump_yaml, load_yaml_file, to_plain
from .errors import UsageError

CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
RESUMABLE_CHANGES = frozenset({"out", "epochs", "device"})
"""Keys a resumed run may change: where it lives, how long it trains, where it computes."""


def runs_root() -> Path:
    return Path(os.environ.get("MEDKIT_RUNS_DIR", "runs"))


def default_run_dir(plugin: str, label: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = runs_root() / plugin / f"{stamp}-{label}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = runs_root() / plugin / f"{stamp}-{label}-{suffix}"
    return candidate


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None: strict JSON (RFC 8259, ``jq``, JavaScript's
    JSON.parse, pandas' default reader) has no NaN, and an undefined figure reads as ``null``."""
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def strict_json(data: Any, indent: int | None = None) -> str:
    """``data`` (dataclasses, Paths, numpy scalars included) as strict JSON: undefined figures become null."""
    return json.dumps(finite_or_null(to_plain(data)), indent=indent, allow_nan=False, default=_json_scalar)


def _json_scalar(value: Any) -> Any:
    """numpy scalars and arrays as plain numbers and lists (then checked for NaN again)."""
    if hasattr(value, "tolist"):
        return finite_or_null(value.tolist())
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, strict_json(data, indent=2) + "\n")


def is_run_dir(path: Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file() and (Path(path) / ENV_FILE).is_file()


def latest_run_dir(plugin: str, recipe: str) -> Path:
    """The newest run of ``plugin``/``recipe`` under the runs folder (what ``--resume`` without ``--out`` means)."""
    folder = runs_root() / plugin
    candidates = sorted((p for p in folder.glob("*") if is_run_dir(p)), key=lambda p: p.stat().st_mtime)
    candidates = [p for p in candidates if read_json(p / ENV_FILE).get("recipe") == recipe]
    if not candidates:
        raise UsageError(
            f"--resume: no earlier run of {plugin} {recipe} under {folder}; pass --out DIR of the run to resume"
        )
    return candidates[-1]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records logged in ``run_dir``'s metrics.jsonl (none when it has none); a line torn by a kill is
    ignored."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        # a figure that was undefined (NaN) is stored as null; it reads back as NaN, as it was logged
        records.append({key: math.nan if value is None else value for key, value in record.items()})
    return records


def stored_config(run_dir: Path) -> dict[str, Any]:
    return load_yaml_file(Path(run_dir) / CONFIG_FILE)


def check_run_dir(run_dir: Path, plugin: str, recipe: str, resume: bool) -> None:
    """Refuse to mix runs: a folder holding another run needs --resume, and --resume needs a run."""
    run_dir = Path(run_dir)
    holds_run = is_run_dir(run_dir)
    if resume:
        if not holds_run:
            raise UsageError(
                f"--resume: {run_dir} holds no medkit run to resume (no {CONFIG_FILE}/{ENV_FILE})"
            )
        env = read_json(run_dir / ENV_FILE)
        if (env.get("plugin"), env.get("recipe")) != (plugin, recipe):
            raise UsageError(
                f"--resume: {run_dir} is a run of {env.get('plugin')} {env.get('recipe')}, "
                f"not of {plugin} {recipe}"
            )
        return
    if holds_run:
        raise UsageError(
            f"--out {run_dir} already holds a run; pass --resume to continue it, or choose another --out"
        )
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UsageError(f"--out {run_dir} exists and is not an empty folder; choose another --out")


def config_changes(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs."""
    changes = []
    for key in sorted(set(stored) | set(current)):
        a, b, path = stored.get(key), current.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{path}.")
        elif a != b:
            changes.append(path)
    return changes


def git_commit(where: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment(
    plugin_name: str, plugin_version: str | None, recipe: str, config: Any, device: str
) -> dict[str, Any]:
    """What env.json records: enough to know what produced a run and to reproduce it."""
    from importlib import metadata

    from .version import API_VERSION, __version__

    def version_of(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "plugin": plugin_name,
        "plugin_version": plugin_version,
        "recipe": recipe,
        "medkit_version": __version__,
        "medkit_api": API_VERSION,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: version_of(name) for name in ("torch", "torchvision", "timm", "numpy")},
        "seed": getattr(config, "seed", None),
        "device": device,
        "cuda": _cuda_name(device),
        "git_commit": git_commit(Path.cwd()) or git_commit(Path(__file__).parent),
        "argv": sys.argv,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _cuda_name(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_name()


@dataclass
class Run:
    """An open run directory. Only the main process (rank 0) writes; other ranks read."""

    dir: Path
    plugin: str
    recipe: str
    config: Any
    resume: bool = False
    rank: int = 0
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    @property
    def plots_dir(self) -> Path:
        return self.dir / "plots"

    def start(self, env: dict[str, Any]) -> None:
        """Write config.yaml and env.json (a resumed run keeps its env and notes the resume)."""
        if not self.is_main:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        plain = to_plain(self.config)
        plain["out"] = None  # the saved config re-runs into a new folder, not over this one
        atomic_write_text(
            self.dir / CONFIG_FILE, f"# medkit run {self.plugin} {self.recipe}\n{dump_yaml(plain)}"
        )
        env_path = self.dir / ENV_FILE
        if self.resume and env_path.is_file():
            previous = read_json(env_path)
            previous.setdefault("resumed", []).append({"at": env["started_at"], "argv": env["argv"]})
            env = previous
        write_json(env_path, env)

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one line to metrics.jsonl (main process only)."""
        if not self.is_main:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(strict_json(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records logged so far (see :func:`read_metrics`)."""
        return read_metrics(self.dir)

    def keep_metrics(self, upto_epoch: int) -> None:
        """Drop records after ``upto_epoch``: a resumed run logs those epochs again, exactly once."""
        if not self.is_main:
            return
        kept = [r for r in self.read_metrics() if r.get("epoch", 0) <= upto_epoch]
        atomic_write_text(self.dir / METRICS_FILE, "".join(strict_json(r) + "\n" for r in kept))

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.is_main:
            write_json(self.dir / SUMMARY_FILE, summary)
