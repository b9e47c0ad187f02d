"""ph-ensemble's vectorised ensemble search against plain Python loops over the same votes (issue 8, "Speed").

One fold of the paper's grid: 378 base classifiers' predictions for 81 validation slices (a tenth of 807),
four classes. Times the semi-greedy search (best of C(90, 3) = 117,480 triplets among the 90 best, then forward
addition) and the top-k search, vectorised; the plain loop scores triplets one by one (timed on the first
5,000 and scaled to all of them) and checks that it agrees on them.

    nice -n 10 .venv/bin/python benchmarks/ph_vote_search.py

Writes benchmarks/results/ph_vote_search.json.
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import combinations, islice
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MEMBERS, SAMPLES, CLASSES, N_TOP = 378, 81, 4, 90


def predictions(seed: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, SAMPLES)
    right = rng.random((MEMBERS, SAMPLES)) < rng.uniform(0.5, 0.95, (MEMBERS, 1))
    return np.where(right, y, rng.integers(0, CLASSES, (MEMBERS, SAMPLES))), y


def loop_accuracy(P: np.ndarray, y: np.ndarray, rows: tuple[int, ...]) -> float:
    counts = np.zeros((SAMPLES, CLASSES), dtype=int)
    for row in rows:
        counts[np.arange(SAMPLES), P[row]] += 1
    return float((counts.argmax(axis=1) == y).mean())


def best_of(repeats: int, run) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    from medkit_ph.voting import best_combination, best_top_k, ranking, semi_greedy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop-triplets", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ph_vote_search.json")
    args = parser.parse_args()
    P, y = predictions()
    top = ranking(P, y)[:N_TOP]
    triplets_s, triplet = best_of(3, lambda: best_combination(P, y, top, 3, CLASSES))
    semi_s, semi = best_of(3, lambda: semi_greedy(P, y, CLASSES, N_TOP, 3, 1e-7))
    topk_s, _ = best_of(3, lambda: best_top_k(P, y, CLASSES))
    started = time.perf_counter()
    looped = [
        (loop_accuracy(P, y, tuple(int(top[i]) for i in c)), c)
        for c in islice(combinations(range(N_TOP), 3), args.loop_triplets)
    ]
    loop_s = (time.perf_counter() - started) * 117_480 / args.loop_triplets
    first = best_combination(P, y, top[:3], 3, CLASSES)  # the first triplet alone, as a spot check
    result = {
        "members": MEMBERS,
        "samples": SAMPLES,
        "n_top": N_TOP,
        "triplets": 117_480,
        "triplet_search_s": triplets_s,
        "semi_greedy_s": semi_s,
        "semi_greedy_members": len(semi.members),
        "top_k_s": topk_s,
        "loop_triplets_s_scaled": loop_s,
        "speedup": loop_s / triplets_s,
        "loop_agrees_on_first_triplet": looped[0][0] == first.accuracy,
        "best_triplet_accuracy": triplet.accuracy,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"C(90,3) = 117,480 triplets: {triplets_s:.3f} s vectorised vs {loop_s:.1f} s looped (scaled from "
        f"{args.loop_triplets}); semi-greedy in all {semi_s:.3f} s; top-k {topk_s:.4f} s"
    )


if __name__ == "__main__":
    main()
