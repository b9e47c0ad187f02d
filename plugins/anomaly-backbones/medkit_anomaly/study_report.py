"""The backbone study's report, laid out like the thesis' tables: one row per trial, then image / pixel ROC-AUC
by backbone and method for each weight source, and the quality-vs-speed plot.

``study.csv`` holds every trial (floats in full, a column per category and figure); ``study.md`` the same table
at 3 decimals, the thesis-style tables and the plot. The pixel ROC-AUC is the thesis' pROC-AUC.
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

SETTINGS = ("method", "backbone", "weights")
COSTS = ("ms_per_image", "fit_memory_mb", "fit_seconds")  # shown at 1 decimal
FIGURES = ("embedding_dim", "d", "image_auroc", "pixel_auroc", "aupro", *COSTS)
CATEGORY_FIGURES = ("image_auroc", "pixel_auroc")
PLOT = Path("plots") / "quality_vs_speed.png"
HEADERS = {"embedding_dim": "a"}  # the thesis' name of the embedding dimension


@dataclass
class TrialResult:
    """One trial's row: its settings, its figures (means over categories) and each category's figures."""

    method: str
    backbone: str
    weights: str
    run_dir: str
    figures: dict[str, Any] = field(default_factory=dict)
    categories: dict[str, dict[str, float]] = field(default_factory=dict)
    error: str = ""
    skipped: str = ""  # why the trial did not run (ImageNet weights with no local file): not a failure

    @property
    def finished(self) -> bool:
        return not self.error and not self.skipped

    @property
    def trial(self) -> str:
        return Path(self.run_dir).name

    def row(self) -> dict[str, Any]:
        per_category = {
            f"{category}/{name}": value
            for category, figures in self.categories.items()
            for name, value in figures.items()
        }
        return {
            "trial": self.trial,
            "status": "finished" if self.finished else "skipped" if self.skipped else "failed",
            **{name: getattr(self, name) for name in SETTINGS},
            **self.figures,
            **per_category,
            "run_dir": self.run_dir,
            "error": self.error or self.skipped,
        }


def trial_result(
    method: str, backbone: str, weights: str, run_dir: str, summary: dict[str, Any]
) -> TrialResult:
    """A finished trial's row, from its fit run's summary.json."""
    figures = {
        "embedding_dim": summary["embedding_dim"],
        "d": summary["model"].get("d"),
        "image_auroc": summary["mean/image_auroc"],
        "pixel_auroc": summary["mean/pixel_auroc"],
        "aupro": summary["mean/aupro"],
        "ms_per_image": summary["mean/ms_per_image"],
        "fit_memory_mb": summary["max/fit_memory_mb"],
        "fit_seconds": summary["total/fit_seconds"],
    }
    categories = {
        name: {figure: record[figure] for figure in CATEGORY_FIGURES}
        for name, record in summary["categories"].items()
    }
    return TrialResult(method, backbone, weights, run_dir, figures, categories)


def columns(results: Sequence[TrialResult]) -> list[str]:
    categories = dict.fromkeys(c for r in results for c in r.categories)
    per_category = [f"{c}/{name}" for c in categories for name in CATEGORY_FIGURES]
    return ["trial", "status", *SETTINGS, *FIGURES, *per_category, "run_dir", "error"]


def csv_table(results: Sequence[TrialResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(results), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.row() for result in results)
    return buffer.getvalue()


def _cell(value: Any, decimals: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if right else "---" for right in numeric) + "|")
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def trials_table(results: Sequence[TrialResult]) -> list[str]:
    shown = [c for c in columns(results) if c not in ("trial", "run_dir")]
    decimals = [1 if c in COSTS else 3 for c in shown]
    rows = [
        [_cell(row.get(c), n) for c, n in zip(shown, decimals, strict=True)]
        for row in map(TrialResult.row, results)
    ]
    numeric = [c in FIGURES or "/" in c for c in shown]
    return _markdown([HEADERS.get(c, c) for c in shown], rows, numeric)


def thesis_tables(results: Sequence[TrialResult]) -> list[str]:
    """One table per weight source: a row per backbone, a column per method, cells image / pixel ROC-AUC."""
    methods = list(dict.fromkeys(r.method for r in results))
    lines: list[str] = []
    for weights in dict.fromkeys(r.weights for r in results):
        chosen = {(r.method, r.backbone): r for r in results if r.weights == weights}
        backbones = list(dict.fromkeys(backbone for _, backbone in chosen))
        rows = [[backbone, *(_pair(chosen.get((m, backbone))) for m in methods)] for backbone in backbones]
        lines += ["", f"### {weights} weights: image ROC-AUC / pixel ROC-AUC", ""]
        lines += _markdown(["backbone", *methods], rows, [False] + [True] * len(methods))
    return lines


def _pair(result: TrialResult | None) -> str:
    if result is None:
        return ""
    if not result.finished:
        return "skipped" if result.skipped else "failed"
    image, pixel = (_cell(result.figures[name]) or "undefined" for name in CATEGORY_FIGURES)
    return f"{image} / {pixel}"


def skipped_list(results: Sequence[TrialResult]) -> list[str]:
    """The trials that did not run and why (which weights file to put where): the thesis tables' blank cells."""
    skipped = [r for r in results if r.skipped]
    if not skipped:
        return []
    lines = ["", "### Skipped trials", ""]
    return lines + [f"- `{r.trial}`: {' '.join(r.skipped.split())}" for r in skipped]


def markdown_report(results: Sequence[TrialResult], plot: Path | None) -> str:
    lines = [
        "# anomaly-backbones study",
        "",
        "One row per trial (`trials/<method>-<backbone>-<weights>/` holds its fit run). Means over the "
        "categories: image ROC-AUC, pixel ROC-AUC (the thesis' pROC-AUC) and AUPRO (FPR <= 0.3); ms per test "
        "image of the method (scoring only); fit memory: the largest rise of resident memory while fitting a "
        "category (MB; a lower bound, as memory that earlier trials freed is reused without a rise); fit "
        "seconds: all categories. `a`: embedding dimension, `d`: channels kept (PaDiM).",
        "",
        "## Trials",
        "",
        *trials_table(results),
        "",
        "## The thesis' tables",
        *thesis_tables(results),
        *skipped_list(results),
    ]
    if plot is not None:
        lines += ["", "## Quality and speed", "", f"![quality vs speed]({plot.as_posix()})"]
    return "\n".join(lines) + "\n"


def write_tables(folder: Path, results: Sequence[TrialResult], plot: Path | None = None) -> None:
    """study.csv and study.md in ``folder``, each written atomically (a killed study leaves whole tables)."""
    atomic_write_text(Path(folder) / "study.csv", csv_table(results))
    atomic_write_text(Path(folder) / "study.md", markdown_report(results, plot))


def plot_quality_vs_speed(folder: Path, results: Sequence[TrialResult]) -> Path | None:
    """Mean image ROC-AUC against ms per image (log): a marker per method, a colour per weight source, each
    point labelled with its backbone. Returns the path relative to ``folder``, or None without finished trials."""
    points = [
        r
        for r in results
        if r.finished and not math.isnan(r.figures["image_auroc"]) and r.figures["ms_per_image"] > 0
    ]
    if not points:
        return None
    markers = dict(zip(dict.fromkeys(r.method for r in points), "osD^vP*X", strict=False))
    colours = {w: f"C{i}" for i, w in enumerate(dict.fromkeys(r.weights for r in points))}
    figure, axis = pyplot().subplots(figsize=(8, 5.5))
    for r in points:
        x, y = r.figures["ms_per_image"], r.figures["image_auroc"]
        axis.scatter(x, y, marker=markers.get(r.method, "o"), color=colours[r.weights], s=50)
        axis.annotate(r.backbone, (x, y), xytext=(4, 3), textcoords="offset points", fontsize="x-small")
    axis.set_xscale("log")
    axis.set(title="quality vs speed", xlabel="ms per test image (log scale)", ylabel="mean image ROC-AUC")
    axis.grid(alpha=0.3, which="both")
    from matplotlib.patches import Patch

    handles = [
        *(axis.scatter([], [], marker=m, color="grey", label=method) for method, m in markers.items()),
        *(Patch(color=c, label=f"{w} weights") for w, c in colours.items()),
    ]
    axis.legend(handles=handles, fontsize="small", loc="best")
    figure.tight_layout()
    save_figure(figure, Path(folder) / PLOT)
    return PLOT


def study_summary(folder: Path, results: Sequence[TrialResult]) -> dict[str, Any]:
    """Counts, the best trial per method and per weight source (by mean image ROC-AUC), the pretrained-vs-random
    gap per backbone, and the failed trials' errors."""
    finished = [r for r in results if r.finished and not math.isnan(r.figures["image_auroc"])]
    return {
        "trials": len(results),
        "finished": sum(r.finished for r in results),
        "failed": sum(bool(r.error) for r in results),
        "skipped_trials": sum(bool(r.skipped) for r in results),
        "table": str(Path(folder) / "study.md"),
        "best_by_method": _best(finished, "method"),
        "best_by_weights": _best(finished, "weights"),
        "imagenet_minus_random": imagenet_gap(finished),
        "errors": {r.trial: r.error for r in results if r.error},
        "skipped": {r.trial: r.skipped for r in results if r.skipped},
    }


def _best(results: Sequence[TrialResult], key: str) -> dict[str, Any]:
    best: dict[str, TrialResult] = {}
    for result in results:
        held = best.get(getattr(result, key))
        if held is None or result.figures["image_auroc"] > held.figures["image_auroc"]:
            best[getattr(result, key)] = result
    return {name: _brief(result) for name, result in best.items()}


def _brief(result: TrialResult) -> dict[str, Any]:
    return {
        "trial": result.trial,
        **{name: result.figures[name] for name in ("image_auroc", "pixel_auroc", "ms_per_image")},
        "run_dir": result.run_dir,
    }


def imagenet_gap(results: Sequence[TrialResult]) -> dict[str, dict[str, Any]]:
    """Per backbone: ImageNet minus random weights, image and pixel ROC-AUC, per method and the mean over the
    methods where both finished (a backbone without both is left out)."""
    by_key = {(r.backbone, r.method, r.weights): r for r in results}
    gaps: dict[str, dict[str, Any]] = {}
    for backbone, method, weights in by_key:
        random = by_key.get((backbone, method, "random"))
        if weights != "imagenet" or random is None:
            continue
        trained = by_key[(backbone, method, weights)]
        gaps.setdefault(backbone, {"methods": {}})["methods"][method] = {
            name: trained.figures[name] - random.figures[name] for name in CATEGORY_FIGURES
        }
    for gap in gaps.values():
        per_method = gap["methods"].values()
        for name in CATEGORY_FIGURES:
            gap[f"mean/{name}"] = sum(g[name] for g in per_method) / len(per_method)
    return gaps
