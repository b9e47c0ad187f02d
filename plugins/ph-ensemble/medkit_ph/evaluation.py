"""The two evaluations of the ensemble, fold by fold, folds and pipelines in parallel (joblib).

- ``faithful``: the authors' protocol exactly (spec "Protocol"): StratifiedKFold(10, shuffle, 42); per fold all
  base classifiers are fitted on the training part and every choice (single model, k, triplet, additions) is
  made on the validation fold's own labels; the fold's figure is the best ensemble's accuracy on that same
  fold, and of the two pipelines the one with the higher mean is kept. Optimistic by construction.
- ``nested``: per outer fold, ``PHEnsembleClassifier`` chooses members (and the pipeline) on inner folds of the
  training part only and is then scored on the untouched validation fold: the unbiased figure.

Both run in the same task per (pipeline, fold), so the nested refit reuses the faithful grid's models.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ensemble import PHEnsembleClassifier
from .grid import fit_grid, grid_members
from .voting import search, vote


@dataclass(frozen=True)
class SearchSettings:
    """What the grid and the ensemble search are: the recipe's options, passed to every task."""

    reductions: tuple[str, ...]
    classifiers: tuple[str, ...]
    n_features: int
    strategies: tuple[str, ...]
    n_top: int
    triplet_size: int
    tolerance: float
    inner_folds: int
    seed: int


@dataclass
class FoldOutcome:
    """One (pipeline, fold) task's results."""

    pipeline: str
    fold: int
    test: np.ndarray
    faithful: dict[str, Any] | None = None
    nested: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: set[str] = field(default_factory=set)


def run_fold(
    blocks: Mapping[str, np.ndarray],
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    settings: SearchSettings,
    modes: Sequence[str],
    pipeline: str,
    fold: int,
    n_classes: int,
) -> FoldOutcome:
    """Fit the grid on ``train``; choose on ``test``'s labels (faithful) and on inner folds (nested)."""
    outcome = FoldOutcome(pipeline, fold, test)
    names = list(blocks)
    members = grid_members(names, settings.reductions, settings.classifiers)
    grid = None
    if "faithful" in modes:
        grid = fit_grid(blocks, y[train], members, settings.n_features, rows=train)
        P = grid.predict(blocks, rows=test)
        started = time.perf_counter()
        found = search(
            P,
            y[test],
            n_classes,
            settings.strategies,
            settings.n_top,
            settings.triplet_size,
            settings.tolerance,
        )
        outcome.seconds["search"] = time.perf_counter() - started
        best = found["best"]
        outcome.faithful = {
            "accuracy": best.accuracy,
            "strategy": best.strategy,
            "members": [members[i].name for i in best.members],
            "by_strategy": {name: c.accuracy for name, c in found.items() if name != "best"},
            "predicted": vote(P[list(best.members)], n_classes),
        }
        outcome.notes |= grid.notes
        for stage, seconds in grid.seconds.items():
            outcome.seconds[stage] = outcome.seconds.get(stage, 0.0) + seconds
    if "nested" in modes:
        X = np.hstack([blocks[name] for name in names])
        estimator = PHEnsembleClassifier(
            feature_sets=[(name, blocks[name].shape[1]) for name in names],
            reductions=settings.reductions,
            classifiers=settings.classifiers,
            n_features=settings.n_features,
            strategies=settings.strategies,
            n_top=settings.n_top,
            triplet_size=settings.triplet_size,
            tolerance=settings.tolerance,
            inner_folds=settings.inner_folds,
            random_state=settings.seed,
        )
        started = time.perf_counter()
        estimator.fit(X[train], y[train], full_grid=grid)
        predicted = estimator.predict(X[test])
        nested_seconds = time.perf_counter() - started
        outcome.nested = {
            "accuracy": float((predicted == y[test]).mean()),
            "selection_accuracy": estimator.selection_accuracy_,
            "strategy": estimator.strategy_,
            "members": [m.name for m in estimator.members_],
            "inner_folds": estimator.inner_folds_,
            "predicted": predicted,
        }
        outcome.notes |= estimator.notes_
        outcome.seconds["nested, all (inner folds, search, refit)"] = nested_seconds
        for stage, seconds in estimator.seconds_.items():
            outcome.seconds[f"nested: {stage}"] = seconds
    return outcome


def run_folds(
    features: Mapping[str, Mapping[str, np.ndarray]],
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    settings: SearchSettings,
    modes: Sequence[str],
    n_classes: int,
    jobs: int,
    progress: Callable[[FoldOutcome], None] = lambda _: None,
) -> list[FoldOutcome]:
    """Every (pipeline, fold) task, ``jobs`` at a time; ``progress`` is called as each one finishes."""
    from joblib import Parallel, delayed

    tasks = [
        delayed(run_fold)(blocks, y, train, test, settings, modes, pipeline, fold, n_classes)
        for pipeline, blocks in features.items()
        for fold, (train, test) in enumerate(splits)
    ]
    outcomes = []
    for outcome in Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks):
        progress(outcome)
        outcomes.append(outcome)
    return sorted(outcomes, key=lambda o: (list(features).index(o.pipeline), o.fold))
