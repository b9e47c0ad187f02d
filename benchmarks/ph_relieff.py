"""ph-ensemble's vectorised ReliefF against scikit-rebate's ReliefF, side by side (issue 8, "Speed").

The matrix of the paper's widest case: 726 training slices (nine tenths of 807) x 9,216 features (all six
feature sets concatenated), four classes, 10 neighbours - random features with a class signal in a few
columns. Both run in this process one after the other, single-threaded (scikit-rebate's n_jobs=1); the script
checks that the two rank the features the same. scikit-rebate takes many minutes at full width:
``--reference-features 1024`` times it on the first 1,024 columns only (its cost grows linearly with the width,
so the JSON then also holds the linear extrapolation, marked as such).

    nice -n 10 .venv/bin/python benchmarks/ph_relieff.py [--reference-features 1024]

Writes benchmarks/results/ph_relieff.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

HERE = Path(__file__).resolve().parent
N, D, CLASSES, K = 726, 9216, 4, 10
WALL: list[float] = []


def matrix(n: int, d: int, seed: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % CLASSES
    X = rng.normal(size=(n, d))
    X[:, :40] += y[:, None] * rng.uniform(0.1, 0.6, size=40)
    return X, y


def timed(run: Any) -> tuple[float, Any]:
    """CPU seconds of this (single-threaded) process: on a shared machine the wall clock also counts the time
    other people's jobs held the cores; both are recorded in the JSON."""
    started, wall = time.process_time(), time.perf_counter()
    result = run()
    WALL.append(time.perf_counter() - wall)
    return time.process_time() - started, result


def main() -> None:
    from skrebate import ReliefF

    from medkit_ph.relieff import relieff_scores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-features", type=int, default=D, help="columns scikit-rebate is timed on")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ph_relieff.json")
    args = parser.parse_args()
    X, y = matrix(N, D)
    width = min(args.reference_features, D)
    ours_full_s, _ours_full = timed(lambda: relieff_scores(X, y, K))
    ours_s, ours = timed(lambda: relieff_scores(X[:, :width], y, K))
    ref_s, reference = timed(
        lambda: ReliefF(n_neighbors=K, n_features_to_select=250, n_jobs=1).fit(X[:, :width], y)
    )
    same_ranking = bool((np.argsort(ours)[::-1] == reference.top_features_).all())
    extrapolated = ref_s * D / width
    result = {
        "samples": N,
        "features": D,
        "classes": CLASSES,
        "neighbours": K,
        "threads": 1,
        "ours_s": ours_full_s,
        "reference_width": width,
        "ours_at_reference_width_s": ours_s,
        "skrebate_at_reference_width_s": ref_s,
        "speedup_at_reference_width": ref_s / ours_s,
        "skrebate_s": ref_s if width == D else None,
        "skrebate_s_extrapolated_linearly": None if width == D else extrapolated,
        "speedup_full_width": (ref_s if width == D else extrapolated) / ours_full_s,
        "same_ranking": same_ranking,
        "max_score_difference": float(np.abs(ours - reference.feature_importances_).max()),
        "clock": "CPU seconds (process_time, one thread); wall seconds in wall_s",
        "wall_s": {
            "ours": WALL[0],
            "ours_at_reference_width": WALL[1],
            "skrebate_at_reference_width": WALL[2],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    label = "measured" if width == D else f"extrapolated from {width} columns"
    print(
        f"ReliefF on {N} x {D}: ours {ours_full_s:.2f} s; scikit-rebate {result['speedup_full_width'] * ours_full_s:.1f} s "
        f"({label}); speed-up {result['speedup_full_width']:.0f}x; at {width} columns {ref_s:.1f} s vs "
        f"{ours_s:.2f} s ({result['speedup_at_reference_width']:.0f}x); same ranking: {same_ranking}"
    )


if __name__ == "__main__":
    main()
