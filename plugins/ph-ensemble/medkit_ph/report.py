"""The ensemble run's figures and report: faithful and nested side by side, per-fold tables, confusion
matrices (summed over the validation folds) and the chosen members."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medkit.atomic import atomic_write_text
from medkit.plots import pyplot, save_figure
from medkit.scorers import confusion_matrix, wilson_interval

from .evaluation import FoldOutcome


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation over folds (numpy's default, as the authors' figure)."""
    return float(np.mean(values)), float(np.std(values))


def faithful_summary(outcomes: list[FoldOutcome], y: np.ndarray, pipelines: Sequence[str], classes: int):
    """Per pipeline the mean of per-fold bests; the pipeline with the higher mean is kept (spec)."""
    per_pipeline = {}
    for pipeline in pipelines:
        folds = [o for o in outcomes if o.pipeline == pipeline and o.faithful]
        mean, std = _mean_std([o.faithful["accuracy"] for o in folds])  # type: ignore[index]
        per_pipeline[pipeline] = {"mean": mean, "std": std, "folds": folds}
    chosen = max(pipelines, key=lambda p: per_pipeline[p]["mean"])
    folds = per_pipeline[chosen]["folds"]
    matrix = sum(confusion_matrix(o.faithful["predicted"], y[o.test], classes) for o in folds)  # type: ignore[index]
    rows = [
        {
            "fold": o.fold + 1,
            "accuracy": o.faithful["accuracy"],  # type: ignore[index]
            "strategy": o.faithful["strategy"],  # type: ignore[index]
            "by_strategy": o.faithful["by_strategy"],  # type: ignore[index]
            "members": o.faithful["members"],  # type: ignore[index]
        }
        for o in folds
    ]
    return {
        "accuracy": per_pipeline[chosen]["mean"],
        "std": per_pipeline[chosen]["std"],
        "pipeline": chosen,
        "by_pipeline": {p: {"mean": v["mean"], "std": v["std"]} for p, v in per_pipeline.items()},
        "folds": rows,
        "confusion": np.asarray(matrix).tolist(),
    }


def nested_summary(outcomes: list[FoldOutcome], y: np.ndarray, pipelines: Sequence[str], classes: int):
    """Per outer fold the pipeline whose ensemble did best on the inner folds, scored on the outer fold."""
    rows, matrix = [], np.zeros((classes, classes), dtype=np.int64)
    correct = total = 0
    for fold in sorted({o.fold for o in outcomes}):
        candidates = [
            o for p in pipelines for o in outcomes if o.fold == fold and o.pipeline == p and o.nested
        ]
        best = max(candidates, key=lambda o: o.nested["selection_accuracy"])  # type: ignore[index]
        nested = best.nested
        matrix += confusion_matrix(nested["predicted"], y[best.test], classes)  # type: ignore[index]
        correct += int((nested["predicted"] == y[best.test]).sum())  # type: ignore[index]
        total += len(best.test)
        rows.append(
            {
                "fold": fold + 1,
                "accuracy": nested["accuracy"],  # type: ignore[index]
                "pipeline": best.pipeline,
                "inner_accuracy": nested["selection_accuracy"],  # type: ignore[index]
                "strategy": nested["strategy"],  # type: ignore[index]
                "members": nested["members"],  # type: ignore[index]
            }
        )
    mean, std = _mean_std([r["accuracy"] for r in rows])
    low, high = wilson_interval(correct, total)
    return {
        "accuracy": mean,
        "std": std,
        "pooled_accuracy": correct / total,
        "pooled_ci95": [low, high],
        "folds": rows,
        "confusion": matrix.tolist(),
    }


def _table(matrix: list[list[int]], class_names: Sequence[str]) -> str:
    head = (
        "| true \\ predicted | " + " | ".join(class_names) + " |\n|---|" + "---:|" * len(class_names) + "\n"
    )
    return head + "".join(
        f"| {name} | " + " | ".join(str(v) for v in row) + " |\n"
        for name, row in zip(class_names, matrix, strict=True)
    )


def _members(members: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(f"`{m}`" for m in members[:limit])
    return shown + (f" and {len(members) - limit} more" if len(members) > limit else "")


def markdown(summary: dict[str, Any], class_names: Sequence[str]) -> str:
    lines = ["# ph-ensemble: feature ensemble, faithful and nested\n"]
    if summary.get("random_weights"):
        lines.append(
            f"**Random weights**: feature sets {', '.join(summary['random_weights'])} come from untrained "
            "networks (asked for with weights=random); these figures say nothing about ImageNet features.\n"
        )
    lines.append(
        f"Data: {summary['data']['source']}; {summary['data']['images']} images, per class "
        f"{summary['data']['per_class']}. Feature sets: {', '.join(summary['feature_sets'])}.\n"
    )
    for note in summary.get("notes", []):
        lines.append(f"- note: {note}")
    lines.append("\n| evaluation | accuracy (mean +- sd over folds) | pipeline | what chooses the ensemble |")
    lines.append("|---|---:|---|---|")
    faithful, nested = summary.get("faithful"), summary.get("nested")
    if faithful:
        lines.append(
            f"| faithful (authors' protocol) | {100 * faithful['accuracy']:.2f} % +- {100 * faithful['std']:.2f} | "
            f"{faithful['pipeline']} | the validation fold's own labels (optimistic) |"
        )
    if nested:
        lines.append(
            f"| nested | {100 * nested['accuracy']:.2f} % +- {100 * nested['std']:.2f} | per fold | inner folds of "
            "the training part only (unbiased) |"
        )
    if faithful:
        lines.append("\n## Faithful, per fold\n")
        by = ", ".join(f"{p}: {100 * v['mean']:.2f} %" for p, v in faithful["by_pipeline"].items())
        lines.append(f"Mean per pipeline: {by}; kept: {faithful['pipeline']}.\n")
        lines.append(
            "| fold | accuracy | strategy | best single / top-k / semi-greedy | members |\n|---:|---:|---|---|---|"
        )
        for r in faithful["folds"]:
            strategies = " / ".join(f"{100 * v:.1f}" for v in r["by_strategy"].values())
            lines.append(
                f"| {r['fold']} | {100 * r['accuracy']:.2f} % | {r['strategy']} | {strategies} | "
                f"{len(r['members'])}: {_members(r['members'])} |"
            )
        lines.append(
            "\nConfusion matrix (validation folds summed):\n\n" + _table(faithful["confusion"], class_names)
        )
    if nested:
        lines.append("## Nested, per fold\n")
        lines.append(
            "| fold | accuracy | pipeline | inner accuracy | strategy | members |\n|---:|---:|---|---:|---|---|"
        )
        for r in nested["folds"]:
            lines.append(
                f"| {r['fold']} | {100 * r['accuracy']:.2f} % | {r['pipeline']} | {100 * r['inner_accuracy']:.2f} % | "
                f"{r['strategy']} | {len(r['members'])}: {_members(r['members'])} |"
            )
        lines.append(
            f"\nPooled over folds: {100 * nested['pooled_accuracy']:.2f} % (95 % Wilson interval "
            f"{100 * nested['pooled_ci95'][0]:.1f}-{100 * nested['pooled_ci95'][1]:.1f} %).\n"
        )
        lines.append(
            "Confusion matrix (validation folds summed):\n\n" + _table(nested["confusion"], class_names)
        )
    lines.append("## Time\n")
    lines.append("| stage | seconds |\n|---|---:|")
    for stage, seconds in summary["seconds"].items():
        lines.append(f"| {stage} | {seconds:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(folder: Path, summary: dict[str, Any], class_names: Sequence[str]) -> Path:
    path = Path(folder) / "report.md"
    atomic_write_text(path, markdown(summary, class_names))
    return path


def plot_confusions(path: Path, summary: dict[str, Any], class_names: Sequence[str]) -> Path:
    plt = pyplot()
    shown = [(name, summary[name]) for name in ("faithful", "nested") if summary.get(name)]
    figure, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown), 4.2), squeeze=False)
    for axis, (name, part) in zip(axes.flat, shown, strict=True):
        matrix = np.array(part["confusion"])
        axis.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            axis.text(j, i, str(value), ha="center", va="center", color="black")
        axis.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
        axis.set_yticks(range(len(class_names)), class_names)
        axis.set_title(f"{name}: {100 * part['accuracy']:.1f} %")
        axis.set_xlabel("predicted")
        axis.set_ylabel("true")
    figure.tight_layout()
    return save_figure(figure, path)
