"""The three reductions to 250 features of report section 8, each fitted on the training part only (spec).

- ``nca``: StandardScaler, then NeighborhoodComponentsAnalysis(n_components=min(250, n_feat, n_train - 1),
  max_iter 300, tol 1e-4, random_state 42) - a projection, not a selection.
- ``relieff``: StandardScaler, then the 250 features of highest ReliefF score (10 neighbours).
- ``chi2``: MinMaxScaler to (1e-6, 1) when the training part has negatives, then SelectKBest(chi2, 250).

``RowSpaceNCA`` is scikit-learn's NCA made fast for wide inputs (9,216 features, 726 samples): NCA's gradient
is A X^T M X, so a transformation A that starts in the row space of the training matrix X (the PCA start does)
stays there. Writing X = Z Q^T with Q an orthonormal basis of that space (rank r <= n), NCA on Z (n x r) with
start A0 Q follows the same L-BFGS path, and A = C Q^T. Each iteration then costs n^2 c instead of n d c.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_selection import SelectKBest, chi2
from sklearn.neighbors import NeighborhoodComponentsAnalysis
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from .relieff import ReliefFSelector

NCA_MAX_ITER, NCA_TOL, NCA_SEED = 300, 1e-4, 42


class RowSpaceNCA(TransformerMixin, BaseEstimator):
    """scikit-learn's NCA fitted in the row space of the training matrix (same result, see module doc)."""

    def __init__(
        self,
        n_components: int = 250,
        max_iter: int = NCA_MAX_ITER,
        tol: float = NCA_TOL,
        random_state: int = NCA_SEED,
    ) -> None:
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> RowSpaceNCA:
        X, y = validate_data(self, X, y)
        n, d = X.shape
        self.n_components_ = min(self.n_components, d, n - 1)
        nca = NeighborhoodComponentsAnalysis(
            n_components=self.n_components_,
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
        )
        if d <= n:  # nothing to gain: scikit-learn's NCA as it is
            self.basis_, self.residual_ = None, None
            self.nca_ = nca.fit(X, y)
            return self
        self.basis_ = row_space_basis(X)
        Z = X @ self.basis_
        start = initial_transformation(X, Z, self.basis_, y, self.n_components_)
        inside = start @ self.basis_
        # the start's part outside the row space gets no gradient: it stays as it is (none for a PCA start)
        residual = start - inside @ self.basis_.T
        self.residual_ = residual if np.abs(residual).max() > 1e-9 * np.abs(start).max() else None
        nca.set_params(init=inside)
        self.nca_ = nca.fit(Z, y)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        if self.basis_ is None:
            return self.nca_.transform(X)
        projected = self.nca_.transform(X @ self.basis_)
        return projected if self.residual_ is None else projected + X @ self.residual_.T


def row_space_basis(X: np.ndarray) -> np.ndarray:
    """(d, r) orthonormal basis of the row space of a wide X, from the eigenvectors of the Gram matrix X X^T
    (n^2 d operations; a QR of X^T costs twice that and runs slower in LAPACK). Directions whose singular
    value is below 1e-7 of the largest carry no data and are left out."""
    eigenvalues, u = np.linalg.eigh(X @ X.T)
    keep = eigenvalues > eigenvalues.max() * 1e-14
    singular = np.sqrt(eigenvalues[keep])
    return (X.T @ u[:, keep]) / singular


def initial_transformation(X: np.ndarray, Z: np.ndarray, basis: np.ndarray, y: np.ndarray, n_components: int):
    """scikit-learn NCA's ``init="auto"`` start for ``X = Z basis^T``: LDA, PCA or identity by its rules.

    The PCA is exact (the components of scikit-learn's full-SVD solver, signs by its ``svd_flip`` rule),
    computed in the row space: the principal axes of the centred Z times basis^T are those of the centred X.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    n_samples, n_features = X.shape
    if n_components <= min(n_features, len(np.unique(y)) - 1):
        return LinearDiscriminantAnalysis(n_components=n_components).fit(X, y).scalings_.T[:n_components]
    if n_components < min(n_features, n_samples):
        centred = Z - Z.mean(axis=0)
        _, w = np.linalg.eigh(centred.T @ centred)
        components = w[:, ::-1][:, :n_components].T @ basis.T
        signs = np.sign(components[np.arange(n_components), np.abs(components).argmax(axis=1)])
        return components * signs[:, None]
    return np.eye(n_components, n_features)


class PositiveChi2(TransformerMixin, BaseEstimator):
    """SelectKBest(chi2, k) after a MinMaxScaler to (1e-6, 1) when the training part has negative values."""

    def __init__(self, k: int = 250) -> None:
        self.k = k

    def fit(self, X: np.ndarray, y: np.ndarray) -> PositiveChi2:
        X, y = validate_data(self, X, y)
        self.scaler_ = MinMaxScaler(feature_range=(1e-6, 1)).fit(X) if (X < 0).any() else None
        self.select_ = SelectKBest(chi2, k=min(self.k, X.shape[1])).fit(self._scaled(X), y)
        return self

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return X if self.scaler_ is None else self.scaler_.transform(X)

    def transform(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return self.select_.transform(self._scaled(X))


def make_reduction(name: str, n_features: int, n_train: int, n_feat: int) -> tuple[Pipeline, str]:
    """The reduction ``name`` and a note when it keeps fewer than ``n_features`` (empty otherwise)."""
    note = ""
    if name == "nca":
        if n_train - 1 < min(n_features, n_feat):
            note = f"NCA keeps {n_train - 1} components, not {n_features}: {n_train} training samples allow n - 1"
        elif n_feat < n_features:
            note = f"NCA keeps {n_feat} components, not {n_features}: a subset has only {n_feat} columns"
        return make_pipeline(StandardScaler(), RowSpaceNCA(n_components=n_features)), note
    if n_feat < n_features:
        note = f"{name} keeps all {n_feat} columns of a subset that has fewer than {n_features}"
    if name == "relieff":
        return make_pipeline(
            StandardScaler(), ReliefFSelector(n_features_to_select=n_features, n_neighbors=10)
        ), note
    if name == "chi2":
        return make_pipeline(PositiveChi2(k=n_features)), note
    raise ValueError(f"unknown reduction {name!r}")


def make_classifier(name: str) -> Any:
    """1-NN with the Manhattan metric, or a polynomial SVM (degree 3, C 1) on standardised inputs."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    if name == "knn":
        return KNeighborsClassifier(n_neighbors=1, metric="cityblock")
    if name == "svm":
        return make_pipeline(StandardScaler(), SVC(kernel="poly", degree=3, C=1.0))
    raise ValueError(f"unknown classifier {name!r}")
