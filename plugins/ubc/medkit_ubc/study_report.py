"""The study's report: accuracy against training-set size with Wilson intervals (paper figure 6), test Dice
against accuracy for the UBC trials (figure 7), and the tables behind them.

``study.csv`` holds every trial; ``study.md`` the per-(model, size) table - mean plateau accuracy over seeds with
its 95 % Wilson interval over the one test set's n images (paper section 3), and the spread over seeds beside it
- with the plots below it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medkit.atomic import atomic_write_text
from medkit.plots import pyplot, save_figure
from medkit.scorers import wilson_interval

FIGURES = (
    "accuracy",
    "balanced_accuracy",
    "roc_auc",
    "dice",
    "parameters",
    "epochs",
    "seconds",
    "test_images",
)
COLUMNS = ("arch", "size", "seed", "status", *FIGURES, "run_dir", "error")


@dataclass
class TrialResult:
    arch: str
    size: int
    seed: int
    run_dir: str
    figures: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def finished(self) -> bool:
        return not self.error

    def row(self) -> dict[str, Any]:
        status = "finished" if self.finished else "failed"
        base = {"arch": self.arch, "size": self.size, "seed": self.seed, "status": status}
        return {**base, **self.figures, "run_dir": self.run_dir, "error": self.error}


def _mean(results: Sequence[TrialResult], name: str) -> float:
    values = [r.figures.get(name, math.nan) for r in results]
    return float(np.nanmean(values)) if not all(math.isnan(v) for v in values) else math.nan


def _spread(results: Sequence[TrialResult], name: str) -> float:
    """Sample standard deviation over seeds (ddof 1); NaN with fewer than two finished seeds."""
    values = [r.figures.get(name, math.nan) for r in results]
    values = [v for v in values if not math.isnan(v)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def summarise(results: Sequence[TrialResult]) -> list[dict[str, Any]]:
    """One row per (arch, size) over its finished seeds.

    ``accuracy`` is the mean over seeds of each run's plateau accuracy; ``ci_low``/``ci_high`` the 95 % Wilson
    interval of that accuracy over the test set's n images (the paper's interval: n = 380, one test set) - the
    seeds are not pooled into seeds x n trials, because every seed is scored on the same images, which are not
    independent draws. How much the result moves between seeds is reported separately: ``seed_sd`` (sample
    standard deviation of the seeds' accuracies), ``seed_min`` and ``seed_max``.
    """
    rows = []
    archs = list(dict.fromkeys(r.arch for r in results))
    keys = sorted(dict.fromkeys((r.arch, r.size) for r in results), key=lambda k: (archs.index(k[0]), k[1]))
    for arch, size in keys:
        done = [r for r in results if (r.arch, r.size) == (arch, size) and r.finished]
        if not done:
            continue
        tests = {r.figures["test_images"] for r in done}
        if len(tests) != 1:
            raise ValueError(
                f"{arch} at {size} images per class: trials were scored on test sets of {sorted(tests)} images; "
                "a study compares runs on one fixed test set (split_seed)"
            )
        n = tests.pop()
        accuracies = [r.figures["accuracy"] for r in done]
        accuracy = float(np.mean(accuracies))
        low, high = wilson_interval(round(accuracy * n), n)
        rows.append(
            {
                "arch": arch,
                "size": size,
                "seeds": len(done),
                "test_images": n,
                "accuracy": accuracy,
                "ci_low": low,
                "ci_high": high,
                "seed_sd": _spread(done, "accuracy"),
                "seed_min": min(accuracies),
                "seed_max": max(accuracies),
                "balanced_accuracy": _mean(done, "balanced_accuracy"),
                "roc_auc": _mean(done, "roc_auc"),
                "dice": _mean(done, "dice"),
                "dice_sd": _spread(done, "dice"),
            }
        )
    return rows


def csv_table(results: Sequence[TrialResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.row() for r in results)
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.3f}" if isinstance(value, float) else str(value).replace("|", "\\|").replace("\n", " ")


def markdown(results: Sequence[TrialResult], plots: Sequence[Path]) -> str:
    summary = summarise(results)
    columns = (
        "arch",
        "size",
        "seeds",
        "test_images",
        "accuracy",
        "ci_low",
        "ci_high",
        "seed_sd",
        "seed_min",
        "seed_max",
        "balanced_accuracy",
        "roc_auc",
        "dice",
        "dice_sd",
    )
    lines = [
        "# ubc small-sample study",
        "",
        "Figures of each run are read at the plateau: the mean of its last `plateau` test evaluations (paper: 5). "
        "`accuracy` is the mean over seeds; `ci_low`-`ci_high` its 95 % Wilson interval over the test set's "
        "`test_images` (the paper's interval, n = 380 there): the uncertainty from the finite test set. "
        "`seed_sd`, `seed_min`, `seed_max` are the spread over seeds (training subset and initialisation): "
        "how much a repeat moves. `dice` is the mean over seeds, `dice_sd` its spread.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if c == "arch" else "---:" for c in columns) + "|",
    ]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in summary]
    failed = [r for r in results if not r.finished]
    if failed:
        lines += ["", "## Failed trials", ""] + [
            f"- {r.arch} n={r.size} seed {r.seed}: {r.error}" for r in failed
        ]
    lines += [""] + [f"![{path.stem}]({path.as_posix()})" for path in plots]
    return "\n".join(lines) + "\n"


def write_tables(folder: Path, results: Sequence[TrialResult], plots: Sequence[Path]) -> None:
    atomic_write_text(Path(folder) / "study.csv", csv_table(results))
    atomic_write_text(Path(folder) / "study.md", markdown(results, plots))


def plot_accuracy(folder: Path, results: Sequence[TrialResult]) -> Path:
    """Figure 6: test accuracy against training images per class, one line per model (mean over seeds with its
    Wilson interval over the test set), each seed's accuracy as a dot."""
    figure, axis = pyplot().subplots(figsize=(6.5, 4.5))
    rows = summarise(results)
    for arch in dict.fromkeys(r["arch"] for r in rows):
        mine = [r for r in rows if r["arch"] == arch]
        sizes = [r["size"] for r in mine]
        accuracy = np.array([r["accuracy"] for r in mine])
        error = [accuracy - [r["ci_low"] for r in mine], [r["ci_high"] for r in mine] - accuracy]
        line = axis.errorbar(
            sizes, accuracy, yerr=error, marker="o", capsize=3, label=f"{arch} (95 % Wilson)"
        )
        seeds = [r for r in results if r.arch == arch and r.finished]
        axis.scatter(  # every seed's plateau accuracy: the spread over repeats, apart from the interval
            [r.size for r in seeds], [r.figures["accuracy"] for r in seeds], s=12, alpha=0.5,
            color=line[0].get_color(),
        )  # fmt: skip
    axis.axhline(0.5, color="grey", linestyle=":", label="chance")
    axis.set_xscale("log")
    # the study's sizes as plain numbers: a log axis would label them 2x10^0, 3x10^1, ...
    axis.set_xticks(sorted({r["size"] for r in rows}), [str(s) for s in sorted({r["size"] for r in rows})])
    axis.xaxis.set_minor_formatter("")
    axis.set(title="accuracy vs training images per class", xlabel="images per class", ylabel="test accuracy")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    figure.tight_layout()
    return save_figure(figure, Path(folder) / "plots" / "accuracy_vs_size.png")


def plot_dice_accuracy(folder: Path, results: Sequence[TrialResult]) -> Path:
    """Figure 7: test Dice against test accuracy of every UBC trial, coloured by training size."""
    figure, axis = pyplot().subplots(figsize=(6, 4.5))
    points = [r for r in results if r.finished and not math.isnan(r.figures.get("dice", math.nan))]
    if points:
        drawn = axis.scatter(
            [r.figures["dice"] for r in points],
            [r.figures["accuracy"] for r in points],
            c=[math.log10(r.size) for r in points],
            cmap="viridis",
        )
        figure.colorbar(drawn, ax=axis, label="log10 images per class")
    axis.set(title="UBC: Dice vs accuracy per trial", xlabel="test Dice", ylabel="test accuracy")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, Path(folder) / "plots" / "dice_vs_accuracy.png")
