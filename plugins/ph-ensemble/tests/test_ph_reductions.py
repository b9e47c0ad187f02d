"""The reductions of report section 8: the row-space NCA is scikit-learn's NCA, only faster; sizes are capped
and said so; Chi2 copes with negative features."""

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier, NeighborhoodComponentsAnalysis

from medkit_ph.reductions import PositiveChi2, RowSpaceNCA, make_reduction


def _wide(n=60, d=400, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    X = rng.normal(size=(n + 20, d))
    X[:, :10] += np.r_[y, np.arange(20) % 4][:, None] * 0.6
    return X[:n], y, X[n:]


@pytest.mark.parametrize("components", [50, 3], ids=["pca_start", "lda_start"])
def test_row_space_nca_transforms_like_scikit_learn_nca(components):
    X, y, new = _wide()
    # 50 >= 0.8 * min(n, d): scikit-learn's PCA start then uses the exact (full) SVD, as ours does
    reference = NeighborhoodComponentsAnalysis(
        n_components=components, max_iter=300, tol=1e-4, random_state=42
    )
    expected = reference.fit(X, y).transform(new)
    ours = RowSpaceNCA(n_components=components).fit(X, y)
    assert ours.basis_.shape == (400, 60)  # fitted in 60 dimensions, not 400
    # the same optimisation in other coordinates: equal up to floating-point round-off along L-BFGS's path
    np.testing.assert_allclose(ours.transform(new), expected, rtol=0, atol=1e-3 * np.abs(expected).max())
    nearest = KNeighborsClassifier(1, metric="cityblock")
    assert (
        nearest.fit(ours.transform(X), y).predict(ours.transform(new)).tolist()
        == nearest.fit(reference.transform(X), y).predict(expected).tolist()
    )


def test_nca_components_are_capped_by_the_training_samples_and_the_run_says_so():
    X, y, _ = _wide(n=40, d=100)
    pipeline, note = make_reduction("nca", 250, n_train=40, n_feat=100)
    assert "keeps 39 components" in note and "40 training samples" in note
    assert pipeline.fit(X, y).transform(X).shape == (40, 39)
    _, relieff_note = make_reduction("relieff", 250, n_train=40, n_feat=100)
    assert "keeps all 100 columns" in relieff_note


def test_chi2_rescales_negative_features_into_its_positive_domain():
    X, y, new = _wide(n=40, d=30)
    chosen = PositiveChi2(k=5).fit(X, y)
    assert chosen.scaler_ is not None and chosen.transform(new).shape == (20, 5)
    assert PositiveChi2(k=5).fit(np.abs(X), y).scaler_ is None
