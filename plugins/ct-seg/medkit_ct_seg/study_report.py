"""The study's report, laid out like the paper's appendix: a table of its trials and the figures drawn from it.

``study.csv`` holds every trial in one table (floats in full); ``study.md`` one table per study (4 decimals)
with its plots below: validation mean Dice per epoch of each trial, the best mean Dice of each trial, and for
the architecture study the best mean Dice against the parameter count.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.atomic import atomic_write_text
from medkit.plots import pyplot, save_figure

FOREGROUND = ("left_lung", "right_lung", "airway")
SETTINGS = ("arch", "width", "batch_size", "loss", "optimizer", "augmentation")
FIGURES = (
    "parameters",
    "best_mean_dice",
    "best_epoch",
    "mean_top10_dice",
    *(f"dice_{name}" for name in FOREGROUND),
    "epochs",
    "seconds",
)
COLUMNS = ("study", "trial", "status", *SETTINGS, *FIGURES, "run_dir", "error")


@dataclass
class TrialResult:
    """One trial's row of the table, and its validation mean Dice per epoch for the curves."""

    study: str
    trial: str
    run_dir: str
    settings: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    curve: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def finished(self) -> bool:
        return not self.error

    def row(self) -> dict[str, Any]:
        status = "finished" if self.finished else "failed"
        return {
            "study": self.study,
            "trial": self.trial,
            "status": status,
            **self.settings,
            **self.figures,
            "run_dir": self.run_dir,
            "error": self.error,
        }


def csv_table(results: Sequence[TrialResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.row() for result in results)
    return buffer.getvalue()


def _cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.1f}" if column == "seconds" else f"{value:.4f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(results: Sequence[TrialResult], plots: dict[str, list[Path]]) -> str:
    """One section per study: its table, then its plots (paths relative to the study's run directory)."""
    columns = [c for c in COLUMNS if c not in ("study", "run_dir")]
    numeric = set(FIGURES) | {"width", "batch_size"}
    lines = [
        "# ct-seg study",
        "",
        "One row per trial (`trials/<study>/<trial>/` holds its run). Ranked as the report ranks: the best "
        "validation mean Dice over the epochs, its epoch, and the mean of the 10 best epochs; per-class Dice "
        "at the best epoch; seconds of training and validation.",
    ]
    for study in dict.fromkeys(r.study for r in results):
        lines += ["", f"## {study}", ""]
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "|".join("---:" if c in numeric else "---" for c in columns) + "|")
        for result in (r for r in results if r.study == study):
            row = result.row()
            lines.append("| " + " | ".join(_cell(c, row.get(c)) for c in columns) + " |")
        lines += [""] + [f"![{path.stem}]({path.as_posix()})" for path in plots.get(study, [])]
    return "\n".join(lines) + "\n"


def write_tables(folder: Path, results: Sequence[TrialResult], plots: dict[str, list[Path]]) -> None:
    """study.csv and study.md in ``folder``, each written atomically (a killed study leaves whole tables)."""
    atomic_write_text(Path(folder) / "study.csv", csv_table(results))
    atomic_write_text(Path(folder) / "study.md", markdown_table(results, plots))


def plot_studies(folder: Path, results: Sequence[TrialResult]) -> dict[str, list[Path]]:
    """Each study's plots under ``folder/plots``; returns their paths relative to ``folder``, by study."""
    plots: dict[str, list[Path]] = {}
    for study in dict.fromkeys(r.study for r in results):
        finished = [r for r in results if r.study == study and r.finished]
        if not finished:
            continue
        drawn = [_curves(folder, study, finished), _best(folder, study, finished)]
        if study == "architectures":
            drawn.append(_parameters(folder, finished))
        plots[study] = [path.relative_to(folder) for path in drawn]
    return plots


def _curves(folder: Path, study: str, results: Sequence[TrialResult]) -> Path:
    from matplotlib.ticker import MaxNLocator

    figure, axis = pyplot().subplots(figsize=(7, 4.5))
    for result in results:
        axis.plot(range(1, len(result.curve) + 1), result.curve, marker="o", markersize=3, label=result.trial)
    axis.set(title=f"{study}: validation mean Dice per epoch", xlabel="epoch", ylabel="mean Dice")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend(fontsize="x-small", ncol=1 + len(results) // 12)
    figure.tight_layout()
    return save_figure(figure, folder / "plots" / f"{study}_curves.png")


def _best(folder: Path, study: str, results: Sequence[TrialResult]) -> Path:
    figure, axis = pyplot().subplots(figsize=(max(5.0, 0.45 * len(results) + 2), 4.5))
    values = [r.figures["best_mean_dice"] for r in results]
    bars = axis.bar(range(len(results)), values)
    axis.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize="x-small")
    axis.set_xticks(
        range(len(results)), [r.trial for r in results], rotation=60, ha="right", fontsize="small"
    )
    axis.set(title=f"{study}: best validation mean Dice", ylabel="mean Dice")
    figure.tight_layout()
    return save_figure(figure, folder / "plots" / f"{study}_best.png")


def _parameters(folder: Path, results: Sequence[TrialResult]) -> Path:
    """Best mean Dice against parameters, one line per architecture across its widths (the report's figure
    behind "0.5-40 M parameters is the sweet spot")."""
    from matplotlib.ticker import NullFormatter

    figure, axis = pyplot().subplots(figsize=(7, 4.5))
    for arch in dict.fromkeys(r.settings["arch"] for r in results):
        points = sorted(
            (r.figures["parameters"], r.figures["best_mean_dice"])
            for r in results
            if r.settings["arch"] == arch
        )
        axis.plot(*zip(*points, strict=True), marker="o", label=arch)
    axis.set_xscale("log")
    axis.xaxis.set_minor_formatter(NullFormatter())  # label the powers of ten only
    axis.set(title="architectures: best validation mean Dice", xlabel="parameters", ylabel="mean Dice")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize="x-small")
    figure.tight_layout()
    return save_figure(figure, folder / "plots" / "architectures_parameters.png")
