"""The study's statistics as the paper computes them (section 3): each run read at its plateau, the accuracy's 95 %
Wilson interval over the one test set's n images, and the repeats over seeds reported as their spread apart."""

from __future__ import annotations

import math

import pytest

from medkit_ubc.study_report import TrialResult, markdown, summarise


def trial(size: int, seed: int, accuracy: float, dice: float = math.nan, n: int = 100) -> TrialResult:
    figures = {"accuracy": accuracy, "balanced_accuracy": accuracy, "roc_auc": 0.5, "dice": dice}
    return TrialResult(
        "ubc_resnet34", size, seed, f"trials/n{size}-seed{seed}", {**figures, "test_images": n}
    )


def wilson_by_hand(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_the_interval_covers_the_test_sets_n_images_not_seeds_times_n():
    (row,) = summarise([trial(5, 0, 0.80), trial(5, 1, 0.60), trial(5, 2, 0.70)])
    assert row["accuracy"] == pytest.approx(0.70) and row["test_images"] == 100
    # 70 of 100: (0.6042, 0.7811); pooling three seeds as 210 of 300 would give (0.646, 0.749)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.6042, 0.7811), abs=1e-4)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(wilson_by_hand(0.70, 100))
    pooled = wilson_by_hand(0.70, 300)
    assert row["ci_high"] - row["ci_low"] > 1.5 * (pooled[1] - pooled[0])


def test_the_seeds_spread_is_reported_beside_the_interval():
    (row,) = summarise(
        [trial(5, 0, 0.80, dice=0.7), trial(5, 1, 0.60, dice=0.9), trial(5, 2, 0.70, dice=0.8)]
    )
    assert row["seeds"] == 3
    assert row["seed_sd"] == pytest.approx(0.1)  # sample standard deviation of 0.8, 0.6, 0.7
    assert (row["seed_min"], row["seed_max"]) == (0.60, 0.80)
    assert row["dice"] == pytest.approx(0.8) and row["dice_sd"] == pytest.approx(0.1)
    (single,) = summarise([trial(2, 0, 0.55)])
    assert math.isnan(single["seed_sd"]) and single["seed_min"] == single["seed_max"] == 0.55


def test_failed_trials_are_left_out_and_trials_on_other_test_sets_are_refused():
    failed = TrialResult("ubc_resnet34", 5, 1, "trials/n5-seed1", error="boom")
    (row,) = summarise([trial(5, 0, 0.9), failed])
    assert row["seeds"] == 1 and row["accuracy"] == 0.9
    with pytest.raises(ValueError, match=r"test sets of \[100, 120\] images"):
        summarise([trial(5, 0, 0.9), trial(5, 1, 0.8, n=120)])


def test_the_table_says_what_each_interval_covers():
    table = markdown([trial(5, 0, 0.80), trial(5, 1, 0.60)], [])
    assert "Wilson interval over the test set's `test_images`" in table
    assert "spread over seeds" in table
    header = next(line for line in table.splitlines() if line.startswith("| arch"))
    assert all(c in header for c in ("ci_low", "ci_high", "seed_sd", "seed_min", "seed_max", "test_images"))
