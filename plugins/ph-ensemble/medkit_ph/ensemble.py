"""The feature ensemble of report section 8 as a scikit-learn classifier, with every choice made honestly.

``fit`` chooses the ensemble on out-of-fold predictions of inner StratifiedKFold splits of the data it is
given (never on labels it is later scored on), then refits the chosen members on all of it. It therefore works
inside a Pipeline and under ``cross_val_score``; cross-validating it is the ``nested`` evaluation. The
``faithful`` evaluation (choices on the validation fold's own labels) is in ``evaluation``.

``X`` is the concatenation of the feature sets in key order; ``feature_sets`` names them with their widths,
e.g. ``[("f1", 1920), ("f3", 1280)]`` (default: all columns are one set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .grid import FittedGrid, fit_grid, grid_members
from .voting import search, vote

REDUCTIONS = ("nca", "relieff", "chi2")
CLASSIFIERS = ("knn", "svm")
STRATEGIES = ("best_single", "top_k", "semi_greedy")


class PHEnsembleClassifier(ClassifierMixin, BaseEstimator):
    """Hard-vote ensemble of (feature subset x reduction x classifier) members, chosen on inner folds.

    Parameters follow the authors' code (spec): ``n_features`` 250, ``n_top`` 90 (N_TOP), ``triplet_size`` 3
    (TRIPLET_SIZE), ``tolerance`` 1e-7. ``inner_folds`` splits are used (fewer when the smallest class is
    smaller; at least 2 members per class are needed).
    """

    def __init__(
        self,
        feature_sets: Sequence[tuple[str, int]] | None = None,
        reductions: Sequence[str] = REDUCTIONS,
        classifiers: Sequence[str] = CLASSIFIERS,
        n_features: int = 250,
        strategies: Sequence[str] = STRATEGIES,
        n_top: int = 90,
        triplet_size: int = 3,
        tolerance: float = 1e-7,
        inner_folds: int = 5,
        random_state: int = 42,
    ) -> None:
        self.feature_sets = feature_sets
        self.reductions = reductions
        self.classifiers = classifiers
        self.n_features = n_features
        self.strategies = strategies
        self.n_top = n_top
        self.triplet_size = triplet_size
        self.tolerance = tolerance
        self.inner_folds = inner_folds
        self.random_state = random_state

    def _blocks(self, X: np.ndarray) -> dict[str, np.ndarray]:
        sets = list(self.feature_sets) if self.feature_sets is not None else [("X", X.shape[1])]
        widths = [int(w) for _, w in sets]
        if sum(widths) != X.shape[1]:
            raise ValueError(
                f"feature_sets {[(n, w) for n, w in sets]} cover {sum(widths)} columns, but X has {X.shape[1]}"
            )
        edges = np.cumsum([0, *widths])
        return {name: X[:, a:b] for (name, _), a, b in zip(sets, edges[:-1], edges[1:], strict=True)}

    def fit(self, X: Any, y: Any, full_grid: FittedGrid | None = None) -> PHEnsembleClassifier:
        """Choose the ensemble on inner folds of (X, y), then fit its members on all of (X, y).

        ``full_grid``: every member already fitted on this same (X, y) (the faithful evaluation fits it
        anyway); the chosen members are then taken from it instead of being fitted again.
        """
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least two classes in y, got {len(self.classes_)} class "
                f"({self.classes_.tolist()})"
            )
        smallest = int(np.bincount(encoded).min())
        if smallest < 2:
            raise ValueError(
                "choosing the ensemble needs inner cross-validation: every class needs at least 2 samples, "
                f"the smallest has {smallest}"
            )
        self.inner_folds_ = min(self.inner_folds, smallest)
        blocks = self._blocks(X)
        members = grid_members(list(blocks), self.reductions, self.classifiers)
        oof = np.full((len(members), len(y)), -1, dtype=np.int64)
        self.notes_: set[str] = set()
        self.seconds_: dict[str, float] = {}
        splits = StratifiedKFold(self.inner_folds_, shuffle=True, random_state=self.random_state)
        for train, test in splits.split(X, encoded):
            grid = fit_grid(blocks, encoded[train], members, self.n_features, rows=train)
            oof[:, test] = grid.predict(blocks, rows=test)
            self._account(grid)
        found = search(
            oof, encoded, len(self.classes_), self.strategies, self.n_top, self.triplet_size, self.tolerance
        )
        self.choices_ = {name: choice for name, choice in found.items() if name != "best"}
        self.strategy_ = found["best"].strategy
        self.selection_accuracy_ = found["best"].accuracy
        self.members_ = [members[i] for i in found["best"].members]
        if full_grid is not None:
            self.grid_ = full_grid.subgrid(self.members_)
        else:
            self.grid_ = fit_grid(blocks, encoded, self.members_, self.n_features)
            self._account(self.grid_)
        return self

    def _account(self, grid: FittedGrid) -> None:
        self.notes_ |= grid.notes
        for stage, seconds in grid.seconds.items():
            self.seconds_[stage] = self.seconds_.get(stage, 0.0) + seconds

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        votes = self.grid_.predict(self._blocks(X))
        return self.classes_[vote(votes, len(self.classes_))]
