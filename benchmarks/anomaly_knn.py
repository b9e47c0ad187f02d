"""SPADE's nearest-neighbour work, test image by test image, on FAISS and on scikit-learn's exact NearestNeighbors.

For each test image SPADE (sec. 3) searches the K training images nearest to its global feature (in an index
built once, at fit), then for every embedding layer builds a gallery of all spatial feature vectors of those K
images and searches each test position's kappa nearest gallery vectors. The gallery changes with every test image,
so its build is part of the per-image work: the benchmark times gather + index build + search together, per
test image, as SPADE runs them (FAISS through ``medkit_anomaly.knn``, as ``methods/spade.py`` calls it;
scikit-learn brute force as the peer). Both search exactly; the script checks that they return the same
neighbours and distances.

Features are synthetic with the geometry of ResNet-18's layers 1-3 at ``--size`` px (64, 128 and 256 channels at
strides 4, 8, 16: a 56 x 56 grid at 224 px), clustered like patch features (a Gaussian mixture per layer), plus
an offset per image so that images differ as wholes and the image kNN is well defined.

Fair timing: every thread pool (torch, FAISS's OpenMP, each BLAS and OpenMP runtime through threadpoolctl:
``thread_pins``) is pinned to ``--threads``; each K is timed over ``--repeats`` passes (at least 3) over the test
images, the libraries alternating pass by pass and taking turns to go first; a figure is the median over the
passes, with its min and max.

    .venv/bin/python benchmarks/anomaly_knn.py [--ks 10 50] [--train 200] [--test 10] [--size 224] [--threads 1]

Writes benchmarks/results/anomaly_knn.json (per K: seconds per test image of each library with the spread,
the scikit-learn / FAISS ratio with its range, and the agreement of the neighbours).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from thread_pins import available_cores, check_pinned, pin_threads

HERE = Path(__file__).resolve().parent
LAYERS = ((64, 4), (128, 8), (256, 16))  # ResNet-18 layers 1-3: (channels, stride)
CLUSTERS, MIN_REPEATS = 64, 3
LIBRARIES = ("faiss", "sklearn")
# loaded before pinning, so that their thread pools exist to be pinned: scikit-learn's OpenMP runtime, and torch
# and FAISS (through medkit's index)
BOTH_LIBRARIES = ("sklearn.neighbors", "medkit_anomaly.knn", "faiss")


def feature_maps(images: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per layer, (images, positions, channels) float32: a Gaussian mixture per layer plus an offset per image."""
    maps = []
    for channels, stride in LAYERS:
        positions = (size // stride) ** 2
        centres = rng.normal(0, 1, size=(CLUSTERS, channels)).astype(np.float32)
        offsets = rng.normal(0, 0.5, size=(images, 1, channels)).astype(np.float32)
        labels = rng.integers(0, CLUSTERS, size=(images, positions))
        noise = rng.standard_normal((images, positions, channels), dtype=np.float32)
        maps.append(centres[labels] + offsets + 0.3 * noise)
    return maps


def global_features(maps: list[np.ndarray]) -> np.ndarray:
    """A stand-in for SPADE's image descriptor (the network's final pooled feature, 512-d on ResNet-18): the last
    synthetic map, average-pooled (256-d); the image kNN is a small part of the per-image work either way."""
    return maps[-1].mean(axis=1)


def faiss_index(bank: np.ndarray) -> Any:
    from medkit_anomaly.knn import NearestNeighbours

    return NearestNeighbours().add(bank)


def sklearn_index(bank: np.ndarray) -> Any:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(algorithm="brute").fit(bank)


def faiss_search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return index.search(queries, k)


def sklearn_search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return index.kneighbors(queries, n_neighbors=k)


LIBRARY = {"faiss": (faiss_index, faiss_search), "sklearn": (sklearn_index, sklearn_search)}


def score_test_images(
    library: str, image_index: Any, train: list[np.ndarray], test: list[np.ndarray], k: int, kappa: int
) -> dict[str, Any]:
    """SPADE's searches for every test image: seconds per image, the images retrieved and the pixel distances."""
    build, search = LIBRARY[library]
    test_global = global_features(test)
    retrieved, pixel_distances, pixel_neighbours = [], [], []
    started = time.perf_counter()
    for i in range(len(test_global)):
        _, nearest = search(image_index, test_global[i : i + 1], k)
        retrieved.append(nearest[0])
        for train_map, test_map in zip(train, test, strict=True):
            gallery = build(train_map[nearest[0]].reshape(-1, train_map.shape[-1]))
            distances, neighbours = search(gallery, test_map[i], kappa)
            pixel_distances.append(distances.mean(axis=1))
            pixel_neighbours.append(neighbours)
    seconds = (time.perf_counter() - started) / len(test_global)
    return {
        "seconds": seconds,
        "retrieved": np.stack(retrieved),
        "distances": np.concatenate(pixel_distances),
        "neighbours": np.concatenate([n.ravel() for n in pixel_neighbours]),
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def compare(
    k: int, kappa: int, train: list[np.ndarray], test: list[np.ndarray], repeats: int
) -> dict[str, Any]:
    image_indexes = {library: LIBRARY[library][0](global_features(train)) for library in LIBRARIES}
    seconds: dict[str, list[float]] = {library: [] for library in LIBRARIES}
    last: dict[str, dict[str, Any]] = {}
    for repeat in range(repeats):
        # the library that goes first alternates, so that a slow start of the machine hits both alike
        for library in LIBRARIES if repeat % 2 == 0 else LIBRARIES[::-1]:
            last[library] = score_test_images(library, image_indexes[library], train, test, k, kappa)
            seconds[library].append(last[library]["seconds"])
    ratios = [s / f for f, s in zip(seconds["faiss"], seconds["sklearn"], strict=True)]
    faiss_s, sklearn_s = statistics.median(seconds["faiss"]), statistics.median(seconds["sklearn"])
    ours, theirs = last["faiss"], last["sklearn"]
    return {
        "k": k,
        "kappa": kappa,
        "gallery_vectors": [k * m.shape[1] for m in train],
        "faiss_s_per_image": spread(seconds["faiss"]),
        "sklearn_s_per_image": spread(seconds["sklearn"]),
        "sklearn_over_faiss": sklearn_s / faiss_s,
        "sklearn_over_faiss_range": [min(ratios), max(ratios)],
        "same_images_retrieved": float((ours["retrieved"] == theirs["retrieved"]).mean()),
        "same_pixel_neighbours": float((ours["neighbours"] == theirs["neighbours"]).mean()),
        "max_pixel_distance_difference": float(np.abs(ours["distances"] - theirs["distances"]).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 50], help="training images retrieved (K)")
    parser.add_argument("--kappa", type=int, default=1, help="gallery neighbours per test position (paper 1)")
    parser.add_argument("--train", type=int, default=200, help="training images")
    parser.add_argument("--test", type=int, default=10, help="test images scored per pass")
    parser.add_argument("--size", type=int, default=224, help="input size the feature grids correspond to")
    parser.add_argument("--threads", type=int, default=available_cores(), help="every thread pool")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help=f"passes (at least {MIN_REPEATS})")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "anomaly_knn.json")
    args = parser.parse_args()
    if args.repeats < MIN_REPEATS or args.threads < 1 or max(args.ks) > args.train:
        parser.error(f"--repeats must be >= {MIN_REPEATS}, --threads >= 1 and every K at most --train")
    for module in BOTH_LIBRARIES:
        importlib.import_module(module)
    pin_threads(args.threads)
    rng = np.random.default_rng(1024)
    train, test = feature_maps(args.train, args.size, rng), feature_maps(args.test, args.size, rng)
    rows = [compare(k, args.kappa, train, test, args.repeats) for k in args.ks]
    result = {"layers": LAYERS, "size": args.size, "train": args.train, "test": args.test}
    result.update(threads=check_pinned(args.threads), repeats=args.repeats, rows=rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        "| K | gallery vectors per layer | FAISS s / image | scikit-learn s / image | ratio | same neighbours |"
    )
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        f, s, (low, high) = r["faiss_s_per_image"], r["sklearn_s_per_image"], r["sklearn_over_faiss_range"]
        print(
            f"| {r['k']} | {', '.join(f'{n:,}' for n in r['gallery_vectors'])} | {f['median']:.3f} "
            f"({f['min']:.3f}-{f['max']:.3f}) | {s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f}) | "
            f"{r['sklearn_over_faiss']:.1f}x ({low:.1f}-{high:.1f}) | {r['same_pixel_neighbours']:.4f} |"
        )


if __name__ == "__main__":
    main()
