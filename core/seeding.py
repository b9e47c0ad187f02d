"""Deterministic seeding and capture/restore of every global random state (for exact resume).

The states are stored as plain lists of ints, not tensors: ``torch.load(map_location=device)`` moves every
tensor of a checkpoint onto the training device, and a random state must be restored from CPU bytes whatever
the device (``torch.set_rng_state`` refuses a CUDA tensor). Checkpoints written with tensor states still load.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s global random streams under torchrun: rank 0 keeps ``seed``, the others
    get their own, so that dropout and augmentation drawn from the global generators differ between ranks."""
    return seed if rank == 0 else (seed * 1_000_003 + rank * 7_919) % 2**63


def _byte_list(state: torch.Tensor) -> list[int]:
    return state.detach().cpu().to(torch.uint8).tolist()


def cpu_byte_tensor(state: Any) -> torch.Tensor:
    """A random state as a CPU ``uint8`` tensor, from a list of ints or from a tensor on any device."""
    if torch.is_tensor(state):
        return state.detach().to("cpu", torch.uint8)
    return torch.tensor(list(state), dtype=torch.uint8)


def rng_state() -> dict[str, Any]:
    """The global random states as plain values, storable in a weights-only checkpoint and device-agnostic."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "kind": kind,
            "keys": keys.astype(np.int64).tolist(),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": _byte_list(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_byte_list(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured; every tensor is read back through the CPU."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].detach().cpu().numpy() if torch.is_tensor(n["keys"]) else np.asarray(n["keys"])
    np.random.set_state((n["kind"], keys.astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(cpu_byte_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cpu_byte_tensor(s) for s in state["cuda"]])
