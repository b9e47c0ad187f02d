"""`medkit run anomaly-backbones test`: the models a `fit` run saved, tested again on a data set.

Writes the fit run's tables (results.csv, results.md: image and pixel ROC-AUC, AUPRO, F1 per category and their
mean, ms per image) and overlays, for the fit run's own test images or another MVTec-layout folder (``--data``).
On the fit run's data it reproduces the fit run's figures. With ``--set maps=true`` it also writes every test
image's map (.npy and PNG, ground truth outlined) and predictions.csv, as `predict` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medkit import RecipeContext, UsageError
from medkit.config import resolve_config
from medkit.runs import stored_config

from ..config import FitAnomalyConfig
from ..data import MVTecCategory, load_category
from ..image_folder import output_names
from ..map_export import TABLE_COLUMNS, TABLE_FILE, decision, export_map, write_table
from .common import chosen_categories, data_root, fit_run_and_model, load_fitted, preprocess_of, saved_models
from .fit import DisplayedImages, category_record, results_summary, score_split

# a test run's table puts the ground truth in front of the columns `predict` writes
TEST_TABLE_COLUMNS = ("category", "defect", "label", *TABLE_COLUMNS)


def test(ctx: RecipeContext) -> dict[str, Any]:
    cfg = ctx.config
    run_dir, named_model = fit_run_and_model(cfg.models)
    stored = stored_config(run_dir)
    # the weights are in the saved models: a weights file the fit read need not exist any more
    layer = (f"{run_dir}/config.yaml (the fit run)", {**stored, "weights": "random", "weights_variant": None})
    fitted, _ = resolve_config(FitAnomalyConfig, [layer])
    root = Path(cfg.data) if cfg.data is not None else data_root(fitted)
    models = {named_model.stem: named_model} if named_model else saved_models(run_dir)
    names = tested_categories(run_dir, models, root, list(cfg.categories))
    batch_size = cfg.batch_size or fitted.batch_size
    rows, images = [], []
    for category in names:
        model, state = load_fitted(models[category], stored, ctx.device)
        test_split = load_category(root, category, preprocess_of(fitted))["test"]
        scored = score_split(model, test_split, batch_size)
        record = category_record(test_split, category, scored, ctx.run.plots_dir, cfg.overlays)
        if cfg.maps:
            images += export_test_maps(ctx.run.dir, test_split, scored, state["thresholds"])
        ctx.run.log_metrics(record)
        ctx.console.print(
            f"{category}: image ROC-AUC {record['image_auroc']:.3f}, pixel ROC-AUC {record['pixel_auroc']:.3f}"
        )
        rows.append(record)
    if cfg.maps:
        write_table(ctx.run.dir / TABLE_FILE, images, TEST_TABLE_COLUMNS)
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


def export_test_maps(
    run_dir: Path, test: MVTecCategory, scored: tuple[Any, ...], thresholds: dict[str, float]
) -> list[dict[str, Any]]:
    """Every test image's map as ``maps/<category>/<defect>/<stem>``.npy/.png (the ground truth outlined) and its
    table row, decided against the fit's image threshold as `predict` decides."""
    scores, maps, masks, _ = scored
    root = (test.root / test.category / "test").resolve()
    names = output_names([item.path for item in test.items], root)
    pictures = DisplayedImages(test)
    rows = []
    for i, item in enumerate(test.items):
        score = float(scores[i])
        files = export_map(
            run_dir, f"{test.category}/{names[i]}", maps[i], thresholds["pixel"], pictures[i], masks[i]
        )
        rows.append(
            {
                "category": test.category,
                "defect": item.defect,
                "label": item.label,
                "name": f"{test.category}/{Path(item.path).resolve().relative_to(root).as_posix()}",
                "image": str(item.path),
                "score": score,
                "threshold": thresholds["image"],
                "anomalous": decision(score, thresholds["image"]),
                "map": files.map,
                "overlay": files.overlay,
            }
        )
    return rows
