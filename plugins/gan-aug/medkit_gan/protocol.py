"""Paper 001's classifier comparison: every classifier trained several times on every training set (real,
synthetic only, real + synthetic), scored on the real validation set, and summarised as the paper's tables 1-2.

Each finished run is one JSON file, ``OUT/runs/<set>/<arch>/run<k>.json``, written atomically; a comparison that
was stopped resumes by skipping the runs whose file exists (their settings must match the ones asked for now).
"""

from __future__ import annotations

import csv
import inspect
import io
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medkit import UsageError
from medkit.atomic import atomic_write_text
from medkit.runs import read_json, write_json

from . import classifiers
from .classifiers import DISPLAY_NAMES, check_arch
from .imageset import ImageSet

RESUME_SETTINGS = ("epochs", "batch_size", "lr", "weights", "balanced", "images_per_epoch")
"""train_classifier options a resumed comparison must share with the runs already on disk (device may change)."""
_TRAIN_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(classifiers.train_classifier).parameters.items()
    if p.default is not inspect.Parameter.empty
}
CSV_COLUMNS = (
    "set",
    "arch",
    "run",
    "seed",
    "train_size",
    "val_size",
    "accuracy",
    "balanced_accuracy",
    "seconds",
)


def run_file(out_dir: Path, set_name: str, arch: str, run: int) -> Path:
    return Path(out_dir) / "runs" / set_name / arch / f"run{run}.json"


def _check_sets(train_sets: dict[str, ImageSet], val: ImageSet) -> None:
    if not train_sets:
        raise UsageError("the classifier comparison needs at least one training set")
    for name, data in train_sets.items():
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise UsageError(f"training set name {name!r} cannot name a folder; use e.g. 'real+synthetic'")
        if data.class_names != val.class_names:
            raise UsageError(
                f"training set {name!r} has classes {', '.join(data.class_names)} but the validation set has "
                f"{', '.join(val.class_names)}; generate or load the training set with the validation set's "
                "classes, in the same order"
            )


def _settings(train_kwargs: dict[str, Any], seed: int, data: ImageSet, val: ImageSet) -> dict[str, Any]:
    settings = {key: train_kwargs.get(key, _TRAIN_DEFAULTS.get(key)) for key in RESUME_SETTINGS}
    if isinstance(settings["weights"], Path):
        settings["weights"] = str(settings["weights"])
    return {**settings, "seed": seed, "train_counts": data.counts(), "val_counts": val.counts()}


def _resumed(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    row = read_json(path)
    stored = row.get("settings", {})
    changed = [f"{k}={stored.get(k)!r} there, {v!r} now" for k, v in settings.items() if stored.get(k) != v]
    if changed:
        raise UsageError(
            f"{path} was made with other settings ({'; '.join(changed)}): finish the comparison with the same "
            f"settings, or give it a new output folder (or delete {path.parents[2]})"
        )
    return row


def run_protocol(
    train_sets: dict[str, ImageSet],
    val: ImageSet,
    archs: Sequence[str],
    runs: int = 3,
    *,
    out_dir: Path,
    **train_kwargs: Any,
) -> list[dict[str, Any]]:
    """Train and score every (training set, classifier, run), seed = ``seed`` (default 0) + run index; returns one
    row per run (train_classifier's result plus set, arch, run, seed, sizes and settings). ``train_kwargs`` go to
    :func:`medkit_gan.classifiers.train_classifier` (epochs, batch_size, lr, weights, device, ...)."""
    archs = tuple(archs)
    for arch in archs:
        check_arch(arch)
    if runs < 1:
        raise UsageError(f"the classifier comparison needs at least 1 run per classifier (got {runs})")
    _check_sets(train_sets, val)
    base_seed = int(train_kwargs.pop("seed", 0))
    progress = train_kwargs.get("progress")
    rows = []
    for name, data in train_sets.items():
        for arch in archs:
            for run in range(runs):
                path = run_file(out_dir, name, arch, run)
                settings = _settings(train_kwargs, base_seed + run, data, val)
                if path.is_file():
                    rows.append(_resumed(path, settings))
                    if progress is not None:
                        progress(f"{name} / {arch} / run {run}: done before, read from {path}")
                    continue
                if progress is not None:
                    progress(f"{name} / {arch} / run {run}: training on {len(data)} images")
                result = classifiers.train_classifier(data, val, arch, seed=base_seed + run, **train_kwargs)
                row = {
                    "set": name,
                    "arch": arch,
                    "run": run,
                    "seed": base_seed + run,
                    "train_size": len(data),
                    "val_size": len(val),
                    "settings": settings,
                    **result,
                }
                write_json(path, row)
                rows.append(row)
    return rows


def _spread(values: list[float]) -> float:
    """Sample standard deviation over runs (0 for a single run)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation of accuracy and balanced accuracy per (set, arch), in the rows' order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["set"], row["arch"]), []).append(row)
    summary = []
    for (name, arch), group in groups.items():
        accuracy = [float(r["accuracy"]) for r in group]
        balanced = [float(r["balanced_accuracy"]) for r in group]
        summary.append(
            {
                "set": name,
                "arch": arch,
                "runs": len(group),
                "train_size": group[0]["train_size"],
                "weights": group[0]["weights"],
                "accuracy_mean": statistics.fmean(accuracy),
                "accuracy_std": _spread(accuracy),
                "balanced_accuracy_mean": statistics.fmean(balanced),
                "balanced_accuracy_std": _spread(balanced),
            }
        )
    return summary


def _cell(entry: dict[str, Any] | None, runs_everywhere: int | None) -> str:
    if entry is None:
        return "-"
    text = (
        f"{100 * entry['accuracy_mean']:.2f} +- {100 * entry['accuracy_std']:.2f} / "
        f"{100 * entry['balanced_accuracy_mean']:.2f} +- {100 * entry['balanced_accuracy_std']:.2f}"
    )
    return text if runs_everywhere is not None else f"{text} ({entry['runs']} runs)"


def _weights_line(summary: list[dict[str, Any]]) -> str:
    per_arch: dict[str, set[str]] = {}
    for entry in summary:
        per_arch.setdefault(entry["arch"], set()).add(entry["weights"])
    every = {w for used in per_arch.values() for w in used}
    if len(every) == 1:
        return f"Weights: {every.pop()}."
    return (
        "Weights: " + "; ".join(f"{arch}: {', '.join(sorted(used))}" for arch, used in per_arch.items()) + "."
    )


def _markdown(rows: Sequence[dict[str, Any]], title: str) -> str:
    summary = summarise(rows)
    archs = list(dict.fromkeys(entry["arch"] for entry in summary))
    sets = list(dict.fromkeys(entry["set"] for entry in summary))
    table = {(entry["set"], entry["arch"]): entry for entry in summary}
    run_counts = {entry["runs"] for entry in summary}
    runs_everywhere = run_counts.pop() if len(run_counts) == 1 else None
    sizes = {entry["set"]: entry["train_size"] for entry in summary}
    lines = [
        f"# {title}",
        "",
        "| Training data | " + " | ".join(DISPLAY_NAMES.get(a, a) for a in archs) + " |",
        "|---" * (len(archs) + 1) + "|",
    ]
    for name in sets:
        cells = [_cell(table.get((name, arch)), runs_everywhere) for arch in archs]
        lines.append(f"| {name} ({sizes[name]:,} images) | " + " | ".join(cells) + " |")
    first = rows[0]
    counts = first.get("settings", {}).get("val_counts", {})
    described_counts = f" ({', '.join(f'{k} {v:,}' for k, v in counts.items())})" if counts else ""
    over = f"{runs_everywhere} runs" if runs_everywhere is not None else "the runs shown"
    lines += [
        "",
        f"Cells: Accuracy / Balanced Accuracy in %, mean +- sample standard deviation over {over}, on the real "
        f"validation set of {first['val_size']:,} images{described_counts}.",
        _weights_line(summary),
        "",
    ]
    return "\n".join(lines)


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, "weights"])
    for row in rows:
        writer.writerow([row[c] for c in CSV_COLUMNS] + [row["weights"]])
    return buffer.getvalue()


def write_tables(rows: Sequence[dict[str, Any]], out_dir: Path, title: str) -> None:
    """``classify.csv`` (one line per run) and ``classify.md`` (paper 001's table layout: one row per training
    set, one column per classifier, cells "Acc / Bal Acc" as mean +- std in percent) in ``out_dir``."""
    if not rows:
        raise UsageError("no classifier runs to tabulate")
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "classify.csv", _csv(rows))
    atomic_write_text(out_dir / "classify.md", _markdown(rows, title))
