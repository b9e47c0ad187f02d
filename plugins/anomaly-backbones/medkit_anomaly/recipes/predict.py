"""`medkit run anomaly-backbones predict`: score new images with a model saved by `fit`.

Each image gets its score, a decision (anomalous when the score passes the image threshold that `fit` set from
held-out normal images: the 0.99 quantile of their scores by default) and a PNG of its anomaly map. Without
images it scores the test images of the fitted category, so the command works right after `medkit run
anomaly-backbones`.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medkit import RecipeContext, UsageError
from medkit.atomic import atomic_write_text
from medkit.runs import read_json, stored_config

from ..data import Preprocess, read_rgb
from ..overlays import write_overlays
from .common import fit_run_dir, load_fitted, saved_models

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def predict(ctx: RecipeContext) -> dict[str, Any]:
    cfg = ctx.config
    run_dir = fit_run_dir(cfg.models)
    fitted = stored_config(run_dir)
    path = model_file(run_dir, cfg.category)
    model, state = load_fitted(path, fitted, ctx.device)
    preprocess = Preprocess(resize=fitted["resize"], crop=fitted["crop"])
    files = image_files(cfg, run_dir, state["category"])
    images = torch.stack([preprocess.image(read_rgb(f)) for f in files])
    scores, maps = model.predict(images)
    threshold = state["thresholds"]["image"]
    rows = [
        {
            "image": str(f),
            "score": float(s),
            "anomalous": bool(s > threshold) if not math.isnan(threshold) else "",
        }
        for f, s in zip(files, scores.tolist(), strict=True)
    ]
    write_predictions(ctx.run.dir / "predictions.csv", rows)
    if cfg.overlays:
        pictures = [preprocess.unnormalise(image) for image in images]
        empty = np.zeros(maps.shape, dtype=bool)
        write_overlays(
            ctx.run.plots_dir,
            pictures,
            maps.numpy(),
            empty,
            [f"{i:04d}_{f.stem}" for i, f in enumerate(files)],
            [0] * len(files),
            len(files),
        )
    if math.isnan(threshold):
        ctx.console.print(
            f"{path}: fitted without held-out normal images, so there is no decision threshold; "
            "scores are written, decisions are not (refit with --set holdout=0.1)"
        )
    return {
        "models": str(run_dir),
        "category": state["category"],
        "method": state["arch"],
        "image_threshold": threshold,
        "images": len(rows),
        "anomalous": sum(1 for r in rows if r["anomalous"] is True),
    }


def model_file(run_dir: Path, category: str | None) -> Path:
    by_name = saved_models(run_dir)
    if category is None:
        if len(by_name) > 1:
            raise UsageError(
                f"{run_dir} has models for {', '.join(by_name)}; choose one with --set category=NAME"
            )
        return next(iter(by_name.values()))
    if category not in by_name:
        raise UsageError(f"--set category={category}: {run_dir} has models for {', '.join(by_name)}")
    return by_name[category]


def image_files(cfg: Any, run_dir: Path, category: str) -> list[Path]:
    """--set images, or the images of the --data folder, or the fitted category's own test images."""
    if cfg.images:
        files = [Path(f) for f in cfg.images]
    elif cfg.data is not None:
        files = sorted(p for p in Path(cfg.data).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        root = Path(read_json(run_dir / "summary.json").get("data", ""))
        files = sorted((root / category / "test").glob("*/*.png"))
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UsageError(f"{missing[0]} does not exist ({len(missing)} missing image file(s))")
    if not files:
        raise UsageError("no images to score: pass --data FOLDER or --set images=[a.png,b.png]")
    return files


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, ["image", "score", "anomalous"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
