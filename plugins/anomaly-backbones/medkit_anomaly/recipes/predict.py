"""`medkit run anomaly-backbones predict`: score new images, without ground truth, with a model saved by `fit`.

Each image gets its score, a decision (anomalous when the score passes the image threshold that `fit` set from
held-out normal images: the 0.99 quantile of their scores by default, or ``--set threshold``), its anomaly map as
``maps/<name>.npy`` and a PNG overlay ``maps/<name>.png``; ``predictions.csv`` lists them all. The images are a
plain folder (``--data``, searched recursively), a list (``--set images``), or by default the fitted category's
test images, so the command works right after `medkit run anomaly-backbones`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medkit import RecipeContext, UsageError
from medkit.runs import read_json, stored_config

from ..data import Preprocess, read_rgb
from ..image_folder import check_readable, common_root, folder_images, output_names
from ..map_export import MAPS_DIR, TABLE_FILE, decision, export_map, write_table
from .common import fit_run_and_model, load_fitted, saved_models


def predict(ctx: RecipeContext) -> dict[str, Any]:
    cfg = ctx.config
    run_dir, named_model = fit_run_and_model(cfg.models)
    path = named_model or model_file(run_dir, cfg.category)
    if named_model is not None and cfg.category not in (None, path.stem):
        raise UsageError(f"--set category={cfg.category}, but --set models names the model of {path.stem}")
    fitted = stored_config(run_dir)
    model, state = load_fitted(path, fitted, ctx.device)
    root, files = images_to_score(cfg, run_dir, state["category"])
    check_readable(files)
    image_threshold, pixel_threshold, source = thresholds(state, cfg.threshold)
    scorer = FolderScorer(
        model, Preprocess(resize=fitted["resize"], crop=fitted["crop"]), ctx.run.dir, root, cfg.overlays
    )
    batch_size = cfg.batch_size or fitted["batch_size"]
    rows = []
    for chunk in chunks(list(zip(files, output_names(files, root), strict=True)), batch_size):
        rows += scorer.score(chunk, image_threshold, pixel_threshold)
    write_table(ctx.run.dir / TABLE_FILE, rows)
    anomalous = sum(1 for r in rows if r["anomalous"] is True)
    ctx.console.print(
        f"{len(rows)} images scored, {anomalous} anomalous (threshold {image_threshold:.4g}, {source}); "
        f"table {ctx.run.dir / TABLE_FILE}, maps in {ctx.run.dir / MAPS_DIR}"
    )
    if math.isnan(image_threshold):
        ctx.console.print(
            f"{path}: fitted without held-out normal images, so there is no decision threshold; scores and "
            "maps are written, decisions are not (refit with --set holdout=0.1, or give --set threshold=X)"
        )
    return {
        "models": str(run_dir),
        "model": str(path),
        "category": state["category"],
        "method": state["arch"],
        "backbone": fitted["backbone"],
        "data": str(root),
        "image_threshold": image_threshold,
        "pixel_threshold": pixel_threshold,
        "threshold_source": source,
        "map_size": [fitted["crop"], fitted["crop"]],
        "images": len(rows),
        "anomalous": anomalous,
    }


@dataclass(frozen=True)
class FolderScorer:
    """Scores batches of image files with a fitted model and writes each image's map (and overlay)."""

    model: Any
    preprocess: Preprocess
    run_dir: Path
    root: Path
    overlays: bool

    def score(
        self, named: Sequence[tuple[Path, str]], image_threshold: float, pixel_threshold: float
    ) -> list[dict[str, Any]]:
        """Table rows of ``(file, output name)`` pairs, scored in one forward pass."""
        images = torch.stack([self.preprocess.image(read_rgb(file)) for file, _ in named])
        scores, maps = self.model.predict(images, len(images))
        rows = []
        for (file, name), image, score, anomaly_map in zip(
            named, images, scores.tolist(), maps.numpy(), strict=True
        ):
            picture = self.preprocess.unnormalise(image) if self.overlays else None
            # no ground truth here: the outline is the model's own region, the pixels above the pixel threshold
            region = anomaly_map > pixel_threshold if math.isfinite(pixel_threshold) else None
            files = export_map(self.run_dir, name, anomaly_map, pixel_threshold, picture, region)
            rows.append(
                {
                    "name": file.relative_to(self.root).as_posix(),
                    "image": str(file),
                    "score": score,
                    "threshold": image_threshold,
                    "anomalous": decision(score, image_threshold),
                    "map": files.map,
                    "overlay": files.overlay,
                }
            )
        return rows


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


def images_to_score(cfg: Any, run_dir: Path, category: str) -> tuple[Path, list[Path]]:
    """The folder output names are relative to, and the image files: ``--set images``, ``--data`` (a folder,
    searched recursively, or one image), or the fitted category's own test images."""
    if cfg.images:
        files = [Path(f) for f in cfg.images]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise UsageError(
                f"--set images: {missing[0]} does not exist ({len(missing)} missing image file(s))"
            )
        return common_root(files), [f.resolve() for f in files]
    if cfg.data is not None and Path(cfg.data).is_file():
        return Path(cfg.data).resolve().parent, [Path(cfg.data).resolve()]
    if cfg.data is not None:
        folder = Path(cfg.data).resolve()
        return folder, folder_images(folder)
    data = read_json(run_dir / "summary.json").get("data") if (run_dir / "summary.json").is_file() else None
    test = Path(data or "") / category / "test"
    if data is None or not test.is_dir():
        raise UsageError(f"{run_dir}'s test images ({test}) are not here; give the images with --data FOLDER")
    return test.resolve(), folder_images(test.resolve())


def thresholds(state: dict[str, Any], override: float | None) -> tuple[float, float, str]:
    """The image and pixel thresholds and where the image threshold comes from (recorded in summary.json)."""
    fitted = state.get("thresholds", {})
    pixel = float(fitted.get("pixel", math.nan))
    if override is not None:
        return float(override), pixel, "--set threshold"
    image = float(fitted.get("image", math.nan))
    if math.isnan(image):
        return image, pixel, "none: the fit held out no normal images"
    return (
        image,
        pixel,
        f"fit: the {fitted['quantile']} quantile of {fitted['images']} held-out normal images' scores",
    )


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``size`` items: one batch of images is decoded at a time, so memory stays flat."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
