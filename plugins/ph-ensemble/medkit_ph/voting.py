"""Hard-vote ensemble search over base classifiers' predictions, vectorised (report section 8, spec).

``P`` is an (m, n) matrix of class indices: row i holds base classifier i's predictions for n samples. A vote
counts one-hot predictions and takes the arg-max, so a tie goes to the smallest label, as in the authors' code.
Candidates are ranked by accuracy (stable: ties keep the grid's order). The searches:

- ``best_single``: the most accurate classifier;
- ``top_k``: the majority of the k best, for k = 2..m, the best k kept (cumulative vote counts: one pass);
- ``semi_greedy``: the best ensemble of ``triplet_size`` among the ``n_top`` best (every combination at once,
  in chunks: C(90, 3) = 117,480 triplets over a fold in well under a second), then forward addition from all
  classifiers of whichever raises vote accuracy most, while the gain exceeds ``tolerance``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

CHUNK_CELLS = 1 << 23  # vote counts held at once while scoring combinations (int16: 16 MiB)


@dataclass(frozen=True)
class Choice:
    """An ensemble: indices of its members (rows of P) and its vote accuracy on the labels it was chosen on."""

    strategy: str
    members: tuple[int, ...]
    accuracy: float


def one_hot(P: np.ndarray, n_classes: int) -> np.ndarray:
    """(m, n) class indices -> (m, n, C) int16 votes."""
    return (P[..., None] == np.arange(n_classes)).astype(np.int16)


def vote(P: np.ndarray, n_classes: int) -> np.ndarray:
    """Majority of the rows of ``P`` per sample; ties to the smallest label."""
    return one_hot(P, n_classes).sum(axis=0).argmax(axis=-1)


def accuracies(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (y == P).mean(axis=-1)


def ranking(P: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rows of ``P`` from most to least accurate; equal accuracies keep their order."""
    return np.argsort(-accuracies(P, y), kind="stable")


def best_single(P: np.ndarray, y: np.ndarray) -> Choice:
    best = int(ranking(P, y)[0])
    return Choice("best_single", (best,), float(accuracies(P[best], y)))


def best_top_k(P: np.ndarray, y: np.ndarray, n_classes: int) -> Choice:
    """The majority of the top k for the best k in 2..m (k = 1 when m = 1)."""
    order = ranking(P, y)
    counts = np.cumsum(one_hot(P[order], n_classes), axis=0)  # (m, n, C): votes of the top k, every k
    acc = (counts.argmax(axis=-1) == y).mean(axis=-1)
    start = 1 if len(order) > 1 else 0
    k = start + int(np.argmax(acc[start:]))
    return Choice("top_k", tuple(int(i) for i in order[: k + 1]), float(acc[k]))


def best_combination(
    P: np.ndarray, y: np.ndarray, candidates: np.ndarray, size: int, n_classes: int
) -> Choice:
    """The most accurate vote of ``size`` rows among ``candidates`` (ties: the first in combination order)."""
    size = min(size, len(candidates))
    votes = one_hot(P[candidates], n_classes)
    combos = np.array(list(combinations(range(len(candidates)), size)), dtype=np.int32)
    chunk = max(1, CHUNK_CELLS // (votes.shape[1] * n_classes))
    best_acc, best_index = -1.0, 0
    for start in range(0, len(combos), chunk):
        part = combos[start : start + chunk]
        counts = votes[part[:, 0]].copy()
        for column in range(1, size):
            counts += votes[part[:, column]]
        acc = (counts.argmax(axis=-1) == y).mean(axis=-1)
        i = int(np.argmax(acc))
        if acc[i] > best_acc:
            best_acc, best_index = float(acc[i]), start + i
    members = tuple(int(candidates[j]) for j in combos[best_index])
    return Choice("semi_greedy", members, best_acc)


def forward_addition(P: np.ndarray, y: np.ndarray, start: Choice, n_classes: int, tolerance: float) -> Choice:
    """Add, one at a time, the classifier whose vote raises accuracy most, while it rises by > ``tolerance``.
    Candidates are scanned in ranking order (ties: the better-ranked one); a member is not added twice."""
    order = ranking(P, y)
    votes = one_hot(P[order], n_classes)
    members = list(start.members)
    counts = one_hot(P[members], n_classes).sum(axis=0)
    accuracy = start.accuracy
    available = ~np.isin(order, members)
    while available.any():
        trial = (counts[None] + votes).argmax(axis=-1)
        acc = np.where(available, (trial == y).mean(axis=-1), -1.0)
        best = int(np.argmax(acc))
        if acc[best] - accuracy <= tolerance:
            break
        members.append(int(order[best]))
        counts = counts + votes[best]
        accuracy = float(acc[best])
        available[best] = False
    return Choice(start.strategy, tuple(members), accuracy)


def semi_greedy(
    P: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    n_top: int = 90,
    triplet_size: int = 3,
    tolerance: float = 1e-7,
) -> Choice:
    top = ranking(P, y)[:n_top]
    return forward_addition(P, y, best_combination(P, y, top, triplet_size, n_classes), n_classes, tolerance)


def search(
    P: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    strategies: Sequence[str] = ("best_single", "top_k", "semi_greedy"),
    n_top: int = 90,
    triplet_size: int = 3,
    tolerance: float = 1e-7,
) -> dict[str, Choice]:
    """Each strategy's ensemble chosen on labels ``y``; ``best`` is the most accurate (ties: listed order)."""
    found: dict[str, Choice] = {}
    for strategy in strategies:
        if strategy == "best_single":
            found[strategy] = best_single(P, y)
        elif strategy == "top_k":
            found[strategy] = best_top_k(P, y, n_classes)
        elif strategy == "semi_greedy":
            found[strategy] = semi_greedy(P, y, n_classes, n_top, triplet_size, tolerance)
        else:
            raise ValueError(f"unknown ensemble strategy {strategy!r}")
    found["best"] = max(found.values(), key=lambda c: c.accuracy)  # max keeps the first of equals
    return found
