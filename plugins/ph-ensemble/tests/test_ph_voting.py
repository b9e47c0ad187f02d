"""The vectorised vote searches find what the plain loops find; ties go to the smallest label."""

from itertools import combinations

import numpy as np

from medkit_ph.voting import best_combination, best_top_k, forward_addition, search, vote


def _predictions(m=30, n=40, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    right = rng.random((m, n)) < rng.uniform(0.3, 0.8, (m, 1))
    P = np.where(right, y, rng.integers(0, classes, (m, n)))
    return P, y


def _loop_vote(rows, classes):
    counts = np.zeros((rows.shape[1], classes), int)
    for row in rows:
        counts[np.arange(rows.shape[1]), row] += 1
    return np.array([max(range(classes), key=lambda c: (r[c], -c)) for r in counts])


def test_a_tied_vote_goes_to_the_smallest_label():
    P = np.array([[3, 1], [1, 2], [2, 3], [0, 0]])
    assert vote(P, 4).tolist() == [0, 0]
    assert vote(np.array([[2], [1]]), 4).tolist() == [1]


def test_best_triplet_is_the_one_an_exhaustive_loop_finds():
    P, y = _predictions()
    top = np.arange(20)
    choice = best_combination(P, y, top, 3, 4)
    best = max(
        ((float((_loop_vote(P[list(c)], 4) == y).mean()), c) for c in combinations(range(20), 3)),
        key=lambda t: t[0],
    )
    assert choice.accuracy == best[0]
    assert float((_loop_vote(P[list(choice.members)], 4) == y).mean()) == best[0]


def test_top_k_scores_every_k_like_a_loop():
    P, y = _predictions(seed=1)
    choice = best_top_k(P, y, 4)
    order = np.argsort(-(y == P).mean(axis=1), kind="stable")
    loop = [float((_loop_vote(P[order[:k]], 4) == y).mean()) for k in range(2, len(P) + 1)]
    assert choice.accuracy == max(loop)
    assert len(choice.members) == 2 + loop.index(max(loop))


def test_forward_addition_adds_only_what_raises_accuracy():
    P, y = _predictions(seed=2)
    start = best_combination(P, y, np.arange(10), 3, 4)
    grown = forward_addition(P, y, start, 4, tolerance=1e-7)
    assert grown.accuracy >= start.accuracy
    assert len(set(grown.members)) == len(grown.members)
    accuracy = start.accuracy
    for k in range(4, len(grown.members) + 1):  # each addition raised the vote's accuracy
        now = float((vote(P[list(grown.members[:k])], 4) == y).mean())
        assert now > accuracy
        accuracy = now


def test_search_reports_each_strategy_and_the_best_of_them():
    P, y = _predictions(seed=3)
    found = search(P, y, 4, n_top=12)
    assert set(found) == {"best_single", "top_k", "semi_greedy", "best"}
    assert found["best"].accuracy == max(c.accuracy for c in found.values())
