"""The ensemble is a scikit-learn classifier: it clones, works in a Pipeline and under cross_val_score, and
chooses its members without the labels it is scored on - unlike the faithful protocol, which is optimistic."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from medkit_ph.ensemble import PHEnsembleClassifier
from medkit_ph.evaluation import SearchSettings, run_fold

SMALL = dict(reductions=("relieff", "chi2"), n_features=6, n_top=6, inner_folds=3)


def _data(n=60, informative=0.9, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, 24))
    X[:, :4] += y[:, None] * informative
    return X, y


@parametrize_with_checks(
    # every reduction and classifier of the grid, at a width scikit-learn's small check data sets have
    [PHEnsembleClassifier(n_features=5, n_top=10, inner_folds=2)]
)
def test_it_passes_scikit_learns_estimator_checks(estimator, check):
    check(estimator)


def test_it_clones_fits_and_predicts_like_any_classifier():
    X, y = _data()
    estimator = PHEnsembleClassifier(feature_sets=[("a", 12), ("b", 12)], **SMALL)
    assert clone(estimator).get_params() == estimator.get_params()
    estimator.fit(X, np.array(["none", "mild", "severe"])[y])
    assert set(estimator.predict(X)) <= {"none", "mild", "severe"}
    assert estimator.strategy_ in ("best_single", "top_k", "semi_greedy")
    assert all(m.name.count("/") == 2 for m in estimator.members_)
    assert estimator.score(X, np.array(["none", "mild", "severe"])[y]) > 0.6


def test_it_works_in_a_pipeline_under_cross_val_score_and_learns_the_signal():
    X, y = _data(n=90)
    model = make_pipeline(
        FunctionTransformer(), PHEnsembleClassifier(feature_sets=[("a", 12), ("b", 12)], **SMALL)
    )
    scores = cross_val_score(model, X, y, cv=StratifiedKFold(3, shuffle=True, random_state=0))
    assert scores.mean() > 0.6  # chance is 1/3


def test_feature_sets_must_cover_the_columns():
    X, y = _data()
    with pytest.raises(ValueError, match="cover 20 columns, but X has 24"):
        PHEnsembleClassifier(feature_sets=[("a", 10), ("b", 10)], **SMALL).fit(X, y)


def test_on_labels_without_signal_faithful_selection_is_optimistic_and_nested_is_not():
    X, y = _data(n=60, informative=0.0, seed=4)
    y = np.random.default_rng(5).permutation(y)
    blocks = {"a": X[:, :12], "b": X[:, 12:]}
    settings = SearchSettings(
        ("relieff", "chi2"), ("knn", "svm"), 6, ("best_single", "top_k", "semi_greedy"), 12, 3, 1e-7, 3, 42
    )
    faithful, nested = [], []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=42).split(X, y):
        outcome = run_fold(blocks, y, train, test, settings, ["faithful", "nested"], "standard", 0, 3)
        faithful.append(outcome.faithful["accuracy"])
        nested.append(outcome.nested["accuracy"])
    # choosing among 18 classifiers and their votes on the fold's own 12 labels finds "signal" in noise;
    # choosing on inner folds stays near chance (1/3)
    assert np.mean(faithful) > 0.55
    assert np.mean(nested) < 0.45


def test_folds_in_parallel_processes_give_what_one_process_gives():
    from medkit_ph.evaluation import run_folds

    X, y = _data(n=45)
    features = {"standard": {"a": X[:, :12], "b": X[:, 12:]}}
    settings = SearchSettings(("chi2",), ("knn",), 6, ("best_single", "top_k"), 6, 3, 1e-7, 2, 42)
    splits = list(StratifiedKFold(3, shuffle=True, random_state=42).split(X, y))
    finished = []
    parallel = run_folds(features, y, splits, settings, ["faithful"], 3, jobs=2, progress=finished.append)
    serial = run_folds(features, y, splits, settings, ["faithful"], 3, jobs=1)
    assert len(finished) == 3  # the progress callback saw every task
    assert [o.faithful["accuracy"] for o in parallel] == [o.faithful["accuracy"] for o in serial]
    assert [o.fold for o in parallel] == [0, 1, 2]
