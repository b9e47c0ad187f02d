"""The transfer study's table: per trial, the generative metrics and what its synthetic images did to the
classifiers (the paper's comparison of scratch, pretrained and frozen-block GANs)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.atomic import atomic_write_text

METRICS = ("fid", "precision", "recall", "density", "coverage")


@dataclass
class TrialResult:
    name: str
    folder: str
    metrics: dict[str, Any] = field(default_factory=dict)
    classify: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def finished(self) -> bool:
        return not self.error

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = {"trial": self.name, "folder": self.folder}
        row.update({name: self.metrics.get(name) for name in METRICS})
        for entry in self.classify.get("summary", []):
            key = f"{entry['set']}/{entry['arch']}"
            row[f"{key} accuracy"] = entry["accuracy_mean"]
            row[f"{key} balanced accuracy"] = entry["balanced_accuracy_mean"]
        row["error"] = self.error
        return row


def _columns(results: Sequence[TrialResult]) -> list[str]:
    columns: list[str] = []
    for result in results:
        columns += [c for c in result.row() if c not in columns]
    columns.remove("error")
    return [*columns, "error"]


def _cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def csv_table(results: Sequence[TrialResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(results), lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow(result.row())
    return buffer.getvalue()


def markdown(results: Sequence[TrialResult]) -> str:
    columns = [c for c in _columns(results) if c != "folder"]
    extractor = next((r.metrics.get("extractor") for r in results if r.metrics.get("extractor")), "none")
    lines = [
        "# Transfer study: GANs from scratch, from the base model, and with frozen blocks",
        "",
        f"Generative metrics of each trial's EMA generator against its training images, features of {extractor}; "
        "classifier figures are means over runs on the real validation set (the trial's `classify/classify.md`).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" if c in ("trial", "error") else "---:" for c in columns) + "|",
    ]
    for result in results:
        row = result.row()
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_tables(folder: Path, results: Sequence[TrialResult]) -> None:
    atomic_write_text(Path(folder) / "study.csv", csv_table(results))
    atomic_write_text(Path(folder) / "study.md", markdown(results))
