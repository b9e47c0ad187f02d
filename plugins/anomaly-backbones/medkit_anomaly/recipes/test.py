"""`medkit run anomaly-backbones test`: the models a `fit` run saved, tested again on a data set.

Writes the fit run's tables (results.csv, results.md: image and pixel ROC-AUC, AUPRO, F1 per category and their
mean, ms per image) and overlays, for the fit run's own test images or another MVTec-layout folder (``--data``).
On the fit run's data it reproduces the fit run's figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medkit import RecipeContext, UsageError
from medkit.config import resolve_config
from medkit.runs import stored_config

from ..config import FitAnomalyConfig
from ..data import load_category
from .common import chosen_categories, data_root, fit_run_dir, load_fitted, preprocess_of, saved_models
from .fit import results_summary, test_category


def test(ctx: RecipeContext) -> dict[str, Any]:
    cfg = ctx.config
    run_dir = fit_run_dir(cfg.models)
    stored = stored_config(run_dir)
    # the weights are in the saved models: a weights file the fit read need not exist any more
    layer = (f"{run_dir}/config.yaml (the fit run)", {**stored, "weights": "random", "weights_variant": None})
    fitted, _ = resolve_config(FitAnomalyConfig, [layer])
    root = Path(cfg.data) if cfg.data is not None else data_root(fitted)
    models = saved_models(run_dir)
    names = tested_categories(run_dir, models, root, list(cfg.categories))
    batch_size = cfg.batch_size or fitted.batch_size
    rows = []
    for category in names:
        model, _ = load_fitted(models[category], stored, ctx.device)
        test_split = load_category(root, category, preprocess_of(fitted))["test"]
        record = test_category(model, test_split, category, batch_size, ctx.run.plots_dir, cfg.overlays)
        ctx.run.log_metrics(record)
        ctx.console.print(
            f"{category}: image ROC-AUC {record['image_auroc']:.3f}, pixel ROC-AUC {record['pixel_auroc']:.3f}"
        )
        rows.append(record)
    return {
        "models": str(run_dir),
        "method": fitted.arch,
        "backbone": fitted.backbone,
        "weights": stored["weights"],
        "data": str(root),
        **results_summary(ctx.run.dir, rows),
        "categories": {r["category"]: r for r in rows},
    }


def tested_categories(run_dir: Path, models: dict[str, Path], root: Path, wanted: list[str]) -> list[str]:
    """The categories asked for (each needs a model and test images), or every fitted one the data holds."""
    fitted = list(models)
    without_model = [c for c in wanted if c not in fitted]
    if without_model:
        raise UsageError(
            f"--set categories: {run_dir} has no model for {', '.join(without_model)}; "
            f"it has models for {', '.join(fitted)}"
        )
    available = chosen_categories(root, wanted)
    names = [c for c in available if c in fitted]
    if not names:
        raise UsageError(
            f"{root} holds none of the fitted categories ({', '.join(fitted)}); "
            "test on a folder with the same categories, or choose with --set categories"
        )
    return names
