"""SPADE's kNN on FAISS against scikit-learn's exact NearestNeighbors, on the same features (issue 6).

Banks of 10^4, 10^5 and 10^6 float32 vectors of dimension 256 (random, clustered like patch features: a mixture of
Gaussians) and 500 queries; k = 1 (SPADE's kappa) and k = 10. Both libraries search exactly; the script checks
that they return the same neighbours and times search (the index build is reported apart). Each pair runs in
one process, one after the other, so machine noise hits both alike; best of two repeats.

    .venv/bin/python benchmarks/anomaly_knn.py [--sizes 10000 100000 1000000]

Writes benchmarks/results/anomaly_knn.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DIM, QUERIES = 256, 500


def clustered(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    labels = rng.integers(0, len(centres), size=n)
    return (centres[labels] + rng.normal(0, 0.3, size=(n, DIM))).astype(np.float32)


def best_of(repeats: int, run: Any) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def compare(size: int, k: int, repeats: int) -> dict[str, Any]:
    from sklearn.neighbors import NearestNeighbors

    from medkit_anomaly.knn import NearestNeighbours

    rng = np.random.default_rng(1024)
    centres = rng.normal(0, 1, size=(64, DIM))
    bank, queries = clustered(size, rng, centres), clustered(QUERIES, rng, centres)
    started = time.perf_counter()
    index = NearestNeighbours().add(bank)
    faiss_build = time.perf_counter() - started
    started = time.perf_counter()
    reference = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(bank)
    sklearn_build = time.perf_counter() - started
    faiss_s, (faiss_dist, faiss_idx) = best_of(repeats, lambda: index.search(queries, k))
    sklearn_s, (sk_dist, sk_idx) = best_of(repeats, lambda: reference.kneighbors(queries))
    return {
        "bank": size,
        "k": k,
        "faiss_search_s": faiss_s,
        "sklearn_search_s": sklearn_s,
        "speedup": sklearn_s / faiss_s,
        "faiss_build_s": faiss_build,
        "sklearn_build_s": sklearn_build,
        "same_neighbours": float((faiss_idx == sk_idx).mean()),
        "max_distance_difference": float(np.abs(faiss_dist - sk_dist).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "anomaly_knn.json")
    args = parser.parse_args()
    rows = [compare(size, k, args.repeats) for size in args.sizes for k in (1, 10)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dim": DIM, "queries": QUERIES, "rows": rows}, indent=2) + "\n")
    print("| bank | k | FAISS search s | sklearn search s | speed-up | same neighbours | max distance diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['bank']:,} | {r['k']} | {r['faiss_search_s']:.3f} | {r['sklearn_search_s']:.3f} | "
            f"{r['speedup']:.1f}x | {r['same_neighbours']:.4f} | {r['max_distance_difference']:.2e} |"
        )


if __name__ == "__main__":
    main()
