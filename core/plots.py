"""Training-curve pictures (PNG), drawn with matplotlib's non-interactive backend."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .atomic import atomic_path

MAX_PANELS = 6


def curve_names(records: list[dict[str, Any]]) -> list[str]:
    """Figures logged under ``train/`` or ``val/``: loss, then means and accuracies, then per-class figures."""
    names = {key.split("/", 1)[1] for r in records for key in r if key.startswith(("train/", "val/"))}
    names.discard("samples")

    def priority(name: str) -> tuple[int, str]:
        if name == "loss":
            return 0, name
        if name.startswith("mean_") or "accuracy" in name:
            return 1, name
        return 2, name

    return sorted(names, key=priority)[:MAX_PANELS]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend, imported on first use (it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: Path, dpi: int = 100) -> Path:
    """Write a matplotlib figure to ``path`` as PNG, atomically, and close it."""
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(figure)
    return Path(path)


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """One panel per figure, train and validation over epochs; written atomically to ``path``."""
    plt = pyplot()
    names = curve_names(records)
    columns = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(records)]
    for axis, name in zip(axes.flat, names, strict=False):
        for split, style in (("train", "-"), ("val", "--")):
            values = [r.get(f"{split}/{name}", math.nan) for r in records]
            if any(not math.isnan(v) for v in values):
                axis.plot(epochs, values, style, marker="o", markersize=3, label=split)
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, path)
