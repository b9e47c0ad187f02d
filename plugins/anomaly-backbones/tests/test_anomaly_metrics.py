"""The study's figures: ROC-AUC and F1 as scikit-learn computes them, PRO as its definition, undefined cases."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from scipy.ndimage import label
from sklearn.metrics import precision_recall_curve, roc_auc_score

from medkit_anomaly.metrics import (
    AnomalyScorer,
    evaluate_category,
    image_figures,
    mean_result,
    pixel_figures,
)
from medkit_anomaly.overlays import outline, sample_indices, write_overlays


def noisy_maps(count: int = 12, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Masks with a few rectangles, and maps that score them a little higher, rounded so that scores tie."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), dtype=bool)
    for index in range(count // 2):
        for _ in range(rng.integers(1, 3)):
            top, left = rng.integers(0, size - 8, size=2)
            masks[index, top : top + rng.integers(2, 8), left : left + rng.integers(2, 8)] = True
    maps = np.round(rng.normal(size=masks.shape) + 1.5 * masks, 1).astype(np.float32)
    return masks, maps


def sklearn_best_f1(targets: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(targets, scores)
    return float(np.max(2 * precision * recall / np.maximum(precision + recall, 1e-12)))


def brute_force_aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3) -> float:
    """PRO straight from its definition: for every threshold, the mean overlap of each region, and the FPR."""
    regions = []
    for mask, anomaly_map in zip(masks, maps, strict=True):
        labelled, count = label(mask, structure=np.ones((3, 3)))
        regions += [(labelled == r, anomaly_map) for r in range(1, count + 1)]
    normal = maps[~masks]
    points = [(0.0, 0.0)]
    for threshold in np.unique(maps)[::-1]:
        overlap = np.mean([(region_map[region] >= threshold).mean() for region, region_map in regions])
        points.append(((normal >= threshold).mean(), overlap))
    area, (fpr0, pro0) = 0.0, points[0]
    for fpr1, pro1 in points[1:]:
        if fpr1 > max_fpr:
            pro_at_limit = pro0 + (pro1 - pro0) * (max_fpr - fpr0) / (fpr1 - fpr0)
            return (area + (max_fpr - fpr0) * (pro0 + pro_at_limit) / 2) / max_fpr
        area += (fpr1 - fpr0) * (pro0 + pro1) / 2
        fpr0, pro0 = fpr1, pro1
    return area / max_fpr


def test_image_auroc_and_best_f1_equal_scikit_learns():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)
    scores = np.round(rng.normal(size=60) + labels, 1)
    figures, undefined = image_figures(labels, scores)
    assert not undefined
    assert figures["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert figures["image_f1"] == pytest.approx(sklearn_best_f1(labels, scores), abs=1e-12)
    predicted = scores >= figures["image_threshold"]
    assert 2 * (predicted & (labels == 1)).sum() / (predicted.sum() + labels.sum()) == pytest.approx(
        figures["image_f1"]
    )


def test_pixel_auroc_over_all_test_pixels_and_pixel_f1_equal_scikit_learns():
    masks, maps = noisy_maps()
    figures, _ = pixel_figures(masks, maps)
    assert figures["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)
    assert figures["pixel_f1"] == pytest.approx(sklearn_best_f1(masks.ravel(), maps.ravel()), abs=1e-9)


def test_pro_of_a_perfect_map_is_1_and_of_a_constant_map_the_chance_level():
    masks, _ = noisy_maps()
    assert pixel_figures(masks, masks.astype(np.float32))[0]["aupro"] == pytest.approx(1.0)
    # a map that ranks nothing jumps from (0, 0) to (1, 1): the area up to 0.3 is 0.3^2 / 2, i.e. 0.15 of 0.3
    assert pixel_figures(masks, np.zeros(masks.shape, np.float32))[0]["aupro"] == pytest.approx(0.15)


def test_aupro_equals_a_brute_force_computation_from_the_definition():
    masks, maps = noisy_maps(count=6, size=16, seed=4)
    masks[0, 2:4, 2:4] = masks[0, 4:6, 4:6] = True  # touching corners: one 8-connected region
    assert pixel_figures(masks, maps)[0]["aupro"] == pytest.approx(brute_force_aupro(masks, maps), abs=1e-12)


def test_a_small_defect_counts_as_much_as_a_large_one_in_pro():
    masks = np.zeros((2, 20, 20), dtype=bool)
    masks[0, 1:3, 1:3] = True  # 4 pixels, found
    masks[1, 2:18, 2:18] = True  # 256 pixels, missed
    maps = masks.astype(np.float32) * np.array([1.0, 0.0])[:, None, None]
    aupro = pixel_figures(masks, maps)[0]["aupro"]
    # half the regions are found at FPR 0; the missed one adds only at the chance level above that
    assert aupro == pytest.approx(0.5 + 0.5 * 0.15, abs=1e-9)


def test_aupro_equals_anomalibs():
    pytest.importorskip("anomalib", reason="anomalib is the optional test oracle for AUPRO")
    import torch
    from anomalib.metrics.aupro import _AUPRO

    masks, maps = noisy_maps(count=10, size=48, seed=2)
    oracle = _AUPRO(fpr_limit=0.3)
    oracle.update(torch.from_numpy(maps), torch.from_numpy(masks.astype(np.int64)))
    assert pixel_figures(masks, maps)[0]["aupro"] == pytest.approx(float(oracle.compute()), abs=1e-4)


def test_a_category_without_defects_reports_auroc_undefined():
    good = evaluate_category("clean", [0, 0, 0], [0.1, 0.5, 0.2], np.zeros((3, 8, 8)), np.ones((3, 8, 8)))
    assert math.isnan(good.image_auroc) and math.isnan(good.pixel_auroc) and math.isnan(good.aupro)
    assert "no anomalous test images" in good.undefined["image_auroc"]
    assert "no anomalous pixels" in good.undefined["aupro"]
    masks, maps = noisy_maps()
    labels = masks.any(axis=(1, 2)).astype(int)
    scored = evaluate_category("parts", labels, maps.max(axis=(1, 2)), masks, maps)
    mean = mean_result([scored, good])
    assert mean.image_auroc == scored.image_auroc and mean.images == scored.images + 3
    assert mean.undefined["image_auroc"] == "left out of the mean (undefined): clean"
    assert "image_auroc: no anomalous test images" in good.row()["undefined"]


def test_the_scorer_over_batches_equals_one_evaluation():
    masks, maps = noisy_maps()
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = maps.max(axis=(1, 2))
    scorer = AnomalyScorer("parts")
    for start in range(0, len(masks), 5):
        batch = slice(start, start + 5)
        scorer.update(
            {"score": scores[batch], "map": maps[batch]}, {"label": labels[batch], "mask": masks[batch, None]}
        )
    assert scorer.compute() == evaluate_category("parts", labels, scores, masks, maps).figures()


def test_maps_of_another_size_than_the_masks_are_refused_naming_both():
    with pytest.raises(ValueError, match=r"maps have shape \(2, 7, 7\) but masks \(2, 8, 8\)"):
        pixel_figures(np.ones((2, 8, 8)), np.ones((2, 7, 7)))


def peak_bytes(compute) -> int:
    tracemalloc.start()
    compute()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_all_pixel_figures_need_less_memory_than_scikit_learns_roc_auc_alone():
    rng = np.random.default_rng(0)
    masks = np.zeros((20, 224, 224), dtype=bool)
    masks[::2, 50:90, 60:80] = True
    maps = rng.random(masks.shape, dtype=np.float32)  # all scores distinct: the longest curves
    ours = peak_bytes(lambda: pixel_figures(masks, maps))
    sklearn = peak_bytes(lambda: roc_auc_score(masks.ravel(), maps.ravel()))
    assert ours < sklearn and ours / masks.size < 48, f"{ours / masks.size:.1f} bytes per pixel"


def test_overlays_show_the_image_beside_its_heat_map_with_the_ground_truth_outlined(tmp_path):
    masks, maps = noisy_maps(count=8)
    images = [np.full((32, 32, 3), 128, np.uint8)] * 8
    labels = masks.any(axis=(1, 2)).astype(int)
    paths = write_overlays(tmp_path, images, maps, masks, [f"img{i}" for i in range(8)], labels, count=4)
    assert len(paths) == 4 and {int(labels[int(p.stem[3:])]) for p in paths} == {0, 1}
    from PIL import Image

    anomalous = next(p for p in paths if labels[int(p.stem[3:])])
    panel = np.asarray(Image.open(anomalous))
    assert panel.shape == (32, 64, 3) and np.array_equal(panel[:, :32], images[0])
    contour = outline(masks[int(anomalous.stem[3:])])
    assert (panel[:, 32:][contour] == 255).all()
    assert sample_indices(labels, 4) == sample_indices(labels, 4)
