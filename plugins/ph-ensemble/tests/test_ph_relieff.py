"""Our vectorised ReliefF ranks features exactly as scikit-rebate's ReliefF (10 neighbours) does."""

import numpy as np
import pytest
from skrebate import ReliefF

from medkit_ph.relieff import ReliefFSelector, relieff_scores


def _data(n, d, classes, seed, categorical=False, small_class=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    if small_class:
        y[: n - 6] = rng.integers(1, classes, n - 6)
        y[n - 6 :] = 0  # class 0 has 6 members: fewer than the 10 neighbours asked for
    X = rng.normal(size=(n, d))
    X[:, :3] += y[:, None] * 0.7
    if categorical:
        X[:, 3] = rng.integers(0, 3, n)  # categorical (<= 10 values): scikit-rebate's mixed mode
        X[:, 4] = 1.0
    return X, y


@pytest.mark.parametrize(
    "case",
    [
        dict(n=70, d=30, classes=4, seed=0),
        dict(n=60, d=25, classes=2, seed=1),
        dict(n=80, d=20, classes=4, seed=2, categorical=True),
        dict(n=60, d=20, classes=3, seed=3, small_class=True),
    ],
    ids=["four_classes", "binary", "mixed_feature_kinds", "class_smaller_than_k"],
)
def test_same_scores_and_ranking_as_scikit_rebate(case):
    X, y = _data(**case)
    reference = ReliefF(n_neighbors=10, n_features_to_select=5).fit(X, y)
    ours = relieff_scores(X, y, n_neighbors=10)
    np.testing.assert_allclose(ours, reference.feature_importances_, rtol=1e-9, atol=1e-12)
    assert ReliefFSelector(5, 10).fit(X, y).top_features_.tolist() == reference.top_features_.tolist()


def test_selector_keeps_the_top_features_and_caps_at_the_width():
    X, y = _data(70, 30, 4, 0)
    selector = ReliefFSelector(n_features_to_select=4).fit(X, y)
    assert set(selector.top_features_[:3]) == {0, 1, 2}  # the informative columns rank first
    np.testing.assert_array_equal(selector.transform(X), X[:, selector.top_features_[:4]])
    assert ReliefFSelector(n_features_to_select=250).fit(X, y).transform(X).shape == (70, 30)
