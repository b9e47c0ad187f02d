"""Pin every thread pool of a benchmark's process to one count, so that the libraries it compares get equal cores.

The pools: torch's intra-op and inter-op threads, FAISS's OpenMP threads and, through threadpoolctl, every BLAS
(OpenBLAS, MKL) and OpenMP runtime loaded in the process - numpy's, scikit-learn's, torch's and FAISS's copies
of libgomp each keep their own count. threadpoolctl reaches only libraries already loaded, so a benchmark imports
the libraries of every side it compares first and pins after; the environment variables cover what loads later.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or taskset may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pin_threads(threads: int) -> dict[str, Any]:
    """Pin the pools of the libraries loaded now to ``threads`` and return the counts in force (for the results).

    Call it once, early: torch refuses a new inter-op count after its inter-op pool has started. Raises when a
    pool does not take the count, so a result never claims a pinning that did not happen.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(threads)
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)
    faiss.omp_set_num_threads(threads)
    threadpool_limits(limits=threads)  # not as a context manager: the limits hold for the rest of the process
    if "cv2" in sys.modules:  # anomalib loads OpenCV, which has a pool of its own
        sys.modules["cv2"].setNumThreads(threads)
    return check_pinned(threads)


def check_pinned(threads: int) -> dict[str, Any]:
    """The pools' counts (:func:`pinned_threads`), or a RuntimeError naming each pool not at ``threads``.

    Called again after a measurement, it also covers the libraries loaded after pinning.
    """
    pinned = pinned_threads()
    counts = {"torch intra-op": pinned["torch_intra_op"], "torch inter-op": pinned["torch_inter_op"]}
    counts["FAISS OpenMP"] = pinned["faiss_omp"]
    counts.update({f"{p['api']} in {p['library']}": p["threads"] for p in pinned["pools"]})
    unpinned = {name: count for name, count in counts.items() if count != threads}
    if unpinned:
        raise RuntimeError(f"thread pools not at {threads}: {unpinned}")
    return pinned


def pinned_threads() -> dict[str, Any]:
    """Each pool's thread count now: torch's two pools, FAISS's OpenMP, and every pool threadpoolctl finds."""
    import faiss
    import torch
    from threadpoolctl import threadpool_info

    pools = [
        {"api": pool["internal_api"], "library": Path(pool["filepath"]).name, "threads": pool["num_threads"]}
        for pool in threadpool_info()
    ]
    return {
        "torch_intra_op": torch.get_num_threads(),
        "torch_inter_op": torch.get_num_interop_threads(),
        "faiss_omp": faiss.omp_get_max_threads(),
        "pools": pools,
    }
