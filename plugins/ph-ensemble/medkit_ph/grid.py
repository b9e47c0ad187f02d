"""The grid of base classifiers: every non-empty subset of the feature sets x reduction x classifier (spec).

With the paper's six sets that is 63 x 3 x 2 = 378 classifiers per fold and pipeline. A reduction is fitted
once per (subset, reduction) and shared by both classifiers; everything is fitted on the training part only.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from .reductions import make_classifier, make_reduction

Blocks = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Member:
    """One base classifier: a feature subset (in key order), a reduction and a classifier."""

    subset: tuple[str, ...]
    reduction: str
    classifier: str

    @property
    def name(self) -> str:
        return f"{'+'.join(self.subset)}/{self.reduction}/{self.classifier}"


def subsets(names: Sequence[str]) -> list[tuple[str, ...]]:
    """All 2^k - 1 non-empty subsets, by size, each in the given (key) order."""
    return [combo for size in range(1, len(names) + 1) for combo in combinations(names, size)]


def grid_members(names: Sequence[str], reductions: Sequence[str], classifiers: Sequence[str]) -> list[Member]:
    return [Member(s, r, c) for s in subsets(names) for r in reductions for c in classifiers]


def stack(blocks: Blocks, subset: Sequence[str], rows: Any = slice(None)) -> np.ndarray:
    return np.hstack([np.asarray(blocks[name])[rows] for name in subset]).astype(np.float64)


@dataclass
class FittedGrid:
    """Fitted reductions and classifiers of some members; ``seconds`` by stage, ``notes`` on capped sizes."""

    members: list[Member]
    reductions: dict[tuple[tuple[str, ...], str], Any] = field(default_factory=dict)
    classifiers: dict[Member, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    notes: set[str] = field(default_factory=set)

    def predict(self, blocks: Blocks, rows: Any = slice(None)) -> np.ndarray:
        """(members, samples) class indices."""
        reduced: dict[tuple[tuple[str, ...], str], np.ndarray] = {}
        out = []
        for member in self.members:
            key = (member.subset, member.reduction)
            if key not in reduced:
                started = time.perf_counter()
                reduced[key] = self.reductions[key].transform(stack(blocks, member.subset, rows))
                self.seconds[member.reduction] += time.perf_counter() - started
            started = time.perf_counter()
            out.append(self.classifiers[member].predict(reduced[key]))
            self.seconds[member.classifier] += time.perf_counter() - started
        return np.array(out, dtype=np.int64).reshape(len(self.members), -1)

    def subgrid(self, members: Sequence[Member]) -> FittedGrid:
        """The fitted models of ``members`` only (they share this grid's reductions)."""
        keys = {(m.subset, m.reduction) for m in members}
        return FittedGrid(
            list(members),
            {k: v for k, v in self.reductions.items() if k in keys},
            {m: self.classifiers[m] for m in members},
        )


def fit_grid(
    blocks: Blocks, y: np.ndarray, members: Sequence[Member], n_features: int, rows: Any = slice(None)
):
    """Fit every member on ``blocks[rows]`` with labels ``y`` (class indices)."""
    grid = FittedGrid(list(members))
    by_reduction: dict[tuple[tuple[str, ...], str], list[Member]] = defaultdict(list)
    for member in members:
        by_reduction[(member.subset, member.reduction)].append(member)
    for (subset, reduction), group in by_reduction.items():
        X = stack(blocks, subset, rows)
        started = time.perf_counter()
        transform, note = make_reduction(reduction, n_features, X.shape[0], X.shape[1])
        reduced = transform.fit_transform(X, y)
        grid.seconds[reduction] += time.perf_counter() - started
        grid.reductions[(subset, reduction)] = transform
        if note:
            grid.notes.add(note)
        for member in group:
            started = time.perf_counter()
            grid.classifiers[member] = make_classifier(member.classifier).fit(reduced, y)
            grid.seconds[member.classifier] += time.perf_counter() - started
    return grid
