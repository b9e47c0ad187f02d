"""`medkit run anomaly-backbones fit`: one method over one backbone, fitted on each category's normal images and
tested on its test set (image and pixel ROC-AUC, AUPRO, F1, ms per image, fit memory)."""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Subset

from medkit import RecipeContext
from medkit.atomic import atomic_write_text
from medkit.checkpoint import save_checkpoint

from ..data import MVTecCategory, load_category
from ..metrics import CategoryResult, evaluate_category, mean_result
from ..overlays import write_overlays
from .common import PeakMemory, build_extractor, chosen_categories, data_root, preprocess_of

TABLE_FIGURES = ("image_auroc", "pixel_auroc", "aupro", "image_f1", "pixel_f1")


def fit(ctx: RecipeContext) -> dict[str, Any]:
    cfg = ctx.config
    root = data_root(cfg)
    names = chosen_categories(root, list(cfg.categories))
    extractor = build_extractor(cfg, ctx.device)
    done = {r["category"]: r for r in ctx.run.read_metrics()}  # a resumed run keeps finished categories
    rows = []
    for category in names:
        if category not in done:
            record = fit_and_test(ctx, extractor, root, category)
            ctx.run.log_metrics(record)
            done[category] = record
            ctx.console.print(
                f"{category}: image ROC-AUC {record['image_auroc']:.3f}, pixel ROC-AUC {record['pixel_auroc']:.3f}"
            )
        rows.append(done[category])
    return {
        "method": cfg.arch,
        "backbone": cfg.backbone,
        "weights": extractor.weights,
        "weights_variant": extractor.weights_variant,  # the ImageNet variant by name; None: random or a file
        "layers": list(extractor.layers),
        "embedding_dim": int(extractor.embedding_dim),
        "model": rows[0].get("model", {}),
        "data": str(root),
        **results_summary(ctx.run.dir, rows),
        "max/fit_memory_mb": max(r["fit_memory_mb"] for r in rows),
        "total/fit_seconds": round(sum(r["fit_seconds"] for r in rows), 3),
        "categories": {r["category"]: r for r in rows},
    }


def fit_and_test(ctx: RecipeContext, extractor: Any, root: Path, category: str) -> dict[str, Any]:
    cfg = ctx.config
    splits = load_category(root, category, preprocess_of(cfg))
    fit_part, holdout = holdout_split(len(splits["train"]), cfg.holdout, cfg.seed)
    model = ctx.build_model(extractor=extractor, device=ctx.device, **seeded(ctx))
    loader = DataLoader(Subset(splits["train"], fit_part), batch_size=cfg.batch_size)
    with PeakMemory() as memory:
        started = time.perf_counter()
        model.fit(batch["image"] for batch in loader)
        fit_seconds = time.perf_counter() - started
    thresholds = decision_thresholds(model, splits["train"], holdout, cfg.threshold_quantile, cfg.batch_size)
    save_checkpoint(
        ctx.run.dir / "models" / f"{category}.pt",
        {
            "arch": cfg.arch,
            "category": category,
            "layers": list(extractor.layers),
            "model": model.state_dict(),
            "thresholds": thresholds,
        },
    )
    return {
        **test_category(model, splits["test"], category, cfg.batch_size, ctx.run.plots_dir, cfg.overlays),
        "fit_seconds": round(fit_seconds, 3),
        "fit_memory_mb": round(memory.mib, 1),
        "train_images": len(fit_part),
        "thresholds": thresholds,
        "model": model.config,
    }


def test_category(
    model: Any, test: MVTecCategory, category: str, batch_size: int, plots: Path, overlays: int
) -> dict[str, Any]:
    """A fitted model's figures on a category's test split and its ms per image; overlays in plots/<category>."""
    return category_record(test, category, score_split(model, test, batch_size), plots, overlays)


def category_record(
    test: MVTecCategory, category: str, scored: tuple[np.ndarray, ...], plots: Path, overlays: int
) -> dict[str, Any]:
    """The figures of a scored test split (``score_split``'s scores, maps, masks and seconds), with overlays."""
    scores, maps, masks, seconds = scored
    result = evaluate_category(category, test.labels, scores, masks, maps)
    pictures = DisplayedImages(test)
    names = [f"{test.items[i].defect}_{Path(test.items[i].path).stem}" for i in range(len(test))]
    write_overlays(plots / category, pictures, maps, masks, names, list(test.labels), count=overlays)
    return {**result.row(), "ms_per_image": round(1000 * seconds / max(len(test), 1), 2)}


class DisplayedImages(Sequence):
    """A test split's images as the model saw them, decoded only when an overlay asks for one: the overlays
    show a sample, and the scores were already computed from one pass over the split."""

    def __init__(self, split: MVTecCategory) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        return self.split.preprocess.unnormalise(self.split[index]["image"])


def seeded(ctx: RecipeContext) -> dict[str, int]:
    """The run's seed for methods that draw random numbers (PaDiM's channels, PatchCore's coreset, flows)."""
    from ..methods import method_options

    has_seed = "seed" in method_options(ctx.config.arch)
    return {"seed": ctx.config.seed} if has_seed and "seed" not in ctx.config.model else {}


def holdout_split(size: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    """Training indices and held-out normal indices (none when fewer than 10 images: all are needed to fit)."""
    order = np.random.default_rng(seed).permutation(size).tolist()
    held = round(size * share) if size >= 10 else 0
    return sorted(order[held:]), sorted(order[:held])


def decision_thresholds(
    model: Any, train: MVTecCategory, holdout: list[int], quantile: float, batch_size: int
) -> dict[str, float]:
    """Image and pixel thresholds from held-out normal images: the ``quantile`` of their scores. These are what
    `predict` calls anomalous; without held-out images they are undefined (NaN) and `predict` says so."""
    if not holdout:
        return {"image": math.nan, "pixel": math.nan, "quantile": quantile, "images": 0}
    scores, maps, _, _ = score_split(model, Subset(train, holdout), batch_size)
    return {
        "image": float(np.quantile(scores, quantile)),
        "pixel": float(np.quantile(maps, quantile)),
        "quantile": quantile,
        "images": len(holdout),
    }


def score_split(model: Any, dataset: Any, batch_size: int) -> tuple[np.ndarray, ...]:
    """Image scores, maps and masks of a data set, and the seconds spent in the model."""
    scores, maps, masks, seconds = [], [], [], 0.0
    for batch in DataLoader(dataset, batch_size=batch_size):
        started = time.perf_counter()
        image_scores, anomaly_maps = model.predict(batch["image"])
        seconds += time.perf_counter() - started
        scores.append(image_scores.numpy())
        maps.append(anomaly_maps.numpy())
        masks.append(batch["mask"][:, 0].numpy() > 0)
    return np.concatenate(scores), np.concatenate(maps), np.concatenate(masks), seconds


def results_summary(folder: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Write results.csv/md of the categories' records; the summary's means over categories."""
    mean = mean_result([result_of(r) for r in rows]).figures()
    write_tables(folder, rows, mean)
    return {
        **{f"mean/{name}": value for name, value in mean.items()},
        "mean/ms_per_image": round(sum(r["ms_per_image"] for r in rows) / len(rows), 2),
    }


def result_of(record: dict[str, Any]) -> CategoryResult:
    fields = CategoryResult.__dataclass_fields__
    return CategoryResult(**{k: v for k, v in record.items() if k in fields and k != "undefined"})


def write_tables(folder: Path, rows: list[dict[str, Any]], mean: dict[str, float]) -> None:
    """results.csv and results.md: one row per category and the mean, as the thesis' tables."""
    columns = ["category", *TABLE_FIGURES, "fit_seconds", "fit_memory_mb", "ms_per_image", "undefined"]
    table = [*rows, {"category": "mean", **mean}]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(table)
    atomic_write_text(folder / "results.csv", text.getvalue())
    lines = ["| " + " | ".join(columns[:-1]) + " |", "|---" + "|---:" * (len(columns) - 2) + "|"]
    for row in table:
        cells = [format_cell(row.get(c)) for c in columns[:-1]]
        lines.append("| " + " | ".join(cells) + " |")
    atomic_write_text(folder / "results.md", "\n".join(lines) + "\n")


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return "undefined" if math.isnan(value) else f"{value:.3f}"
    return "" if value is None else str(value)
