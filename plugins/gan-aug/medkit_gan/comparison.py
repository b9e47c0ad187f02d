"""Does the synthetic data help? Paper 001's classifier comparison run on one generator's images: the training
sets real, synthetic only and real + synthetic, each classifier trained `runs` times, scored on the real
validation set, written as the paper's tables 1-2 (Markdown and CSV)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import ClassifyConfig
from .imageset import ImageSet
from .protocol import run_protocol, summarise, write_tables


def training_sets(real: ImageSet, synthetic: ImageSet, settings: list[str]) -> dict[str, ImageSet]:
    """The named training sets the comparison trains on."""
    sets = {"real": real, "synthetic": synthetic}
    if "real+synthetic" in settings:
        sets["real+synthetic"] = ImageSet.concatenate([real, synthetic])
    return {name: sets[name] for name in settings}


def synthetic_per_class(real: ImageSet, options: ClassifyConfig) -> int:
    """Paper's BACH protocol: as many synthetic images as real ones, balanced over classes; by default the
    largest real class's count per class."""
    if options.synthetic_per_class is not None:
        return options.synthetic_per_class
    return max(real.counts().values())


def compare(
    real: ImageSet,
    val: ImageSet,
    synthetic: ImageSet,
    options: ClassifyConfig,
    out_dir: Path,
    *,
    device: str,
    seed: int,
    title: str,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the comparison into ``out_dir`` (resumable run by run) and return its summary per (set, classifier),
    plus the verdict of the first classifier: whether adding synthetic data raised accuracy and balanced
    accuracy over real data alone."""
    rows = run_protocol(
        training_sets(real, synthetic, list(options.settings)),
        val,
        options.archs,
        options.runs,
        out_dir=out_dir,
        epochs=options.epochs,
        batch_size=options.batch_size,
        lr=options.lr,
        weights=options.weights,
        seed=seed,
        device=device,
        # every setting takes the same number of steps: a bigger set must not win by training longer
        images_per_epoch=options.images_per_epoch or len(real),
        progress=progress,
    )
    write_tables(rows, out_dir, title)
    summary = summarise(rows)
    return {"table": str(Path(out_dir) / "classify.md"), "summary": summary, "verdict": verdict(summary)}


def verdict(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """Per classifier, the change in mean accuracy and balanced accuracy of each synthetic setting over real."""
    by_key = {(row["set"], row["arch"]): row for row in summary}
    result: dict[str, Any] = {}
    for (name, arch), row in by_key.items():
        base = by_key.get(("real", arch))
        if name == "real" or base is None:
            continue
        result[f"{name}/{arch}"] = {
            "accuracy_gain": row["accuracy_mean"] - base["accuracy_mean"],
            "balanced_accuracy_gain": row["balanced_accuracy_mean"] - base["balanced_accuracy_mean"],
        }
    return result
