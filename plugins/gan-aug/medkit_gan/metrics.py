"""Generative metrics on extracted features: FID, Improved Precision & Recall, Density & Coverage.

- FID (Heusel et al. 2017): Frechet distance between Gaussians fitted to real and generated features.
- Improved Precision & Recall (Kynkaanniemi et al. 2019): each set's manifold is the union of balls around its
  samples with radius the distance to the k-th nearest neighbour (k = 3); precision is the share of generated
  samples inside the real manifold, recall the share of real samples inside the generated one.
- Density & Coverage (Naeem et al. 2020, k = 5): density counts how many real balls hold each generated sample
  (divided by k, so it may exceed 1); coverage is the share of real balls that hold at least one generated sample.

Values depend on the feature extractor, so every result names it. The ``prdc`` package computes all four with
one k; the paper uses k = 3 for P/R and k = 5 for D/C, so both are options here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
from scipy import linalg

from medkit import RunError, UsageError

if TYPE_CHECKING:
    from .features import FeatureExtractor

CHUNK_ENTRIES = 1 << 22  # distances held at once (32 MB in float64), so 10k x 10k never needs 800 MB
FID_EPS = 1e-6


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), the FID formula."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise UsageError(
            f"Frechet distance needs means and covariances of one dimension; got means {mu1.shape} and "
            f"{mu2.shape}, covariances {sigma1.shape} and {sigma2.shape}"
        )
    with warnings.catch_warnings():
        # fewer samples than dimensions make the product singular; scipy warns, the result is checked below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            # the usual fallback: offset both diagonals slightly
            offset = np.eye(len(mu1)) * FID_EPS
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # the square root of a product of covariances is real; a tiny imaginary part is rounding error
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise RunError(
                f"FID: the matrix square root has an imaginary part of {np.abs(covmean.imag).max():.3g}; the "
                "covariances are numerically broken (features not finite, or far too few samples)"
            )
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _joint_span(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """An orthonormal basis (D, r) of a subspace holding both sets' centred features and the difference of their
    means. Both covariances and the mean difference live in it, so FID computed on the features projected onto
    it is the same number, with r x r matrices instead of D x D (seconds per square root at D = 2048)."""
    mu_real, mu_fake = real.mean(axis=0), fake.mean(axis=0)
    spanning = np.concatenate([real - mu_real, fake - mu_fake, (mu_real - mu_fake)[None]])
    return np.linalg.qr(spanning.T)[0]


def fid(real_feats: np.ndarray, fake_feats: np.ndarray) -> float:
    """FID between two feature sets (N, D) and (M, D), each with at least 2 samples (unbiased covariances)."""
    _check_features(real_feats, fake_feats)
    for what, feats in (("real", real_feats), ("generated", fake_feats)):
        if len(feats) < 2:
            raise UsageError(f"FID needs at least 2 {what} samples (a covariance); got {len(feats)}")
    real, fake = np.asarray(real_feats, np.float64), np.asarray(fake_feats, np.float64)
    if len(real) + len(fake) + 1 < real.shape[1]:  # fewer samples than dimensions: work in their span
        basis = _joint_span(real, fake)
        real, fake = real @ basis, fake @ basis
    return frechet_distance(*_gaussian(real), *_gaussian(fake))


def _check_features(real_feats: np.ndarray, fake_feats: np.ndarray) -> None:
    for what, feats in (("real", real_feats), ("generated", fake_feats)):
        if np.ndim(feats) != 2:
            raise UsageError(f"{what} features must be (N, D); got shape {np.shape(feats)}")
    if np.shape(real_feats)[1] != np.shape(fake_feats)[1]:
        raise UsageError(
            f"real and generated features differ in size ({np.shape(real_feats)[1]} vs "
            f"{np.shape(fake_feats)[1]}): extract both with the same extractor"
        )


def _distance_chunks(rows: np.ndarray, cols: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """Euclidean distances from ``rows`` to ``cols``, a block of rows at a time."""
    col_sq = (cols * cols).sum(axis=1)
    step = max(1, CHUNK_ENTRIES // max(1, len(cols)))
    for start in range(0, len(rows), step):
        block = rows[start : start + step]
        sq = (block * block).sum(axis=1)[:, None] + col_sq[None, :] - 2.0 * (block @ cols.T)
        yield slice(start, start + len(block)), np.sqrt(np.maximum(sq, 0.0))


def _knn_radii(feats: np.ndarray, k: int) -> np.ndarray:
    """Distance from each sample to its k-th nearest neighbour within the set (the sample itself, at distance 0,
    is the 0-th), the radius of its ball in the manifold estimate."""
    radii = np.empty(len(feats))
    for rows, dist in _distance_chunks(feats, feats):
        radii[rows] = np.partition(dist, k, axis=1)[:, k]
    return radii


def precision_recall_density_coverage(
    real_feats: np.ndarray, fake_feats: np.ndarray, k_pr: int = 3, k_dc: int = 5
) -> dict[str, float]:
    """Improved Precision & Recall with ``k_pr`` neighbours and Density & Coverage with ``k_dc`` (balls are open:
    a sample on a ball's surface is outside, as in the reference code)."""
    _check_features(real_feats, fake_feats)
    if min(k_pr, k_dc) < 1:
        raise UsageError(
            f"the numbers of nearest neighbours must be at least 1; got k_pr={k_pr}, k_dc={k_dc}"
        )
    for what, feats, k in (("real", real_feats, max(k_pr, k_dc)), ("generated", fake_feats, k_pr)):
        if len(feats) < k + 1:
            raise UsageError(
                f"precision/recall (k={k_pr}) and density/coverage (k={k_dc}) need at least {k + 1} {what} "
                f"samples (k nearest neighbours besides the sample itself); got {len(feats)}"
            )
    real, fake = np.asarray(real_feats, np.float64), np.asarray(fake_feats, np.float64)
    real_pr, real_dc = _knn_radii(real, k_pr), _knn_radii(real, k_dc)
    fake_pr = _knn_radii(fake, k_pr)
    in_real_manifold = np.empty(len(fake), bool)
    real_balls_holding = np.empty(len(fake))
    real_in_fake_manifold = np.zeros(len(real), bool)
    nearest_fake = np.full(len(real), np.inf)
    for rows, dist in _distance_chunks(fake, real):  # dist[i, j]: generated i to real j
        in_real_manifold[rows] = (dist < real_pr[None, :]).any(axis=1)
        real_balls_holding[rows] = (dist < real_dc[None, :]).sum(axis=1)
        real_in_fake_manifold |= (dist < fake_pr[rows, None]).any(axis=0)
        nearest_fake = np.minimum(nearest_fake, dist.min(axis=0))
    return {
        "precision": float(in_real_manifold.mean()),
        "recall": float(real_in_fake_manifold.mean()),
        "density": float(real_balls_holding.mean() / k_dc),
        "coverage": float((nearest_fake < real_dc).mean()),
    }


def _figures(
    real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int
) -> tuple[dict[str, float | None], list[str]]:
    """FID and P/R/D/C of one class; figures its sample counts cannot support are None, with a note."""
    figures: dict[str, float | None] = dict.fromkeys(("fid", "precision", "recall", "density", "coverage"))
    notes = []
    if min(len(real), len(fake)) >= 2:
        figures["fid"] = fid(real, fake)
    else:
        notes.append(
            f"no FID: needs at least 2 real and 2 generated samples, got {len(real)} and {len(fake)}"
        )
    need_real, need_fake = max(k_pr, k_dc) + 1, k_pr + 1
    if len(real) >= need_real and len(fake) >= need_fake:
        figures.update(precision_recall_density_coverage(real, fake, k_pr, k_dc))
    else:
        notes.append(
            f"no precision/recall/density/coverage: needs at least {need_real} real and {need_fake} generated "
            f"samples, got {len(real)} and {len(fake)}"
        )
    return figures, notes


def _check_labels(what: str, labels: np.ndarray, n_images: int, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n_images,):
        raise UsageError(f"{what} labels have shape {labels.shape}; expected one per image, ({n_images},)")
    if n_images and (labels.min() < 0 or labels.max() >= n_classes):
        raise UsageError(f"{what} labels must lie in 0..{n_classes - 1} (one per class name)")
    return labels


def generative_metrics(
    real_images: np.ndarray,
    fake_images: np.ndarray,
    extractor: FeatureExtractor,
    k_pr: int = 3,
    k_dc: int = 5,
    per_class: tuple[np.ndarray, np.ndarray, list[str]] | None = None,
) -> dict:
    """FID, precision, recall, density and coverage of ``fake_images`` against ``real_images`` (uint8
    (N, H, W, 3)) on ``extractor``'s features; with ``per_class`` = (real labels, generated labels, class
    names), the same figures per class under "per_class" (None where a class has too few samples, with notes)."""
    _check_counts(len(real_images), len(fake_images), k_pr, k_dc)
    return metrics_from_features(
        extractor(real_images), extractor(fake_images), extractor.name, k_pr, k_dc, per_class
    )


def _check_counts(n_real: int, n_fake: int, k_pr: int, k_dc: int) -> None:
    need_real, need_fake = max(k_pr, k_dc) + 1, k_pr + 1
    if n_real < need_real or n_fake < need_fake:
        raise UsageError(
            f"generative metrics with k={k_pr} (precision/recall) and k={k_dc} (density/coverage) need at least "
            f"{need_real} real and {need_fake} generated images; got {n_real} and {n_fake}"
        )


def metrics_from_features(
    real: np.ndarray,
    fake: np.ndarray,
    extractor_name: str,
    k_pr: int = 3,
    k_dc: int = 5,
    per_class: tuple[np.ndarray, np.ndarray, list[str]] | None = None,
) -> dict:
    """:func:`generative_metrics` on features already extracted (a training run extracts the real ones once)."""
    _check_counts(len(real), len(fake), k_pr, k_dc)
    if per_class is not None:
        real_labels, fake_labels, class_names = per_class
        real_labels = _check_labels("real", real_labels, len(real), len(class_names))
        fake_labels = _check_labels("generated", fake_labels, len(fake), len(class_names))
    if not (np.isfinite(real).all() and np.isfinite(fake).all()):
        raise RunError(f"the feature extractor {extractor_name} returned non-finite features")
    result: dict = {
        "extractor": extractor_name,
        "k_pr": k_pr,
        "k_dc": k_dc,
        "n_real": len(real),
        "n_fake": len(fake),
        "fid": fid(real, fake),
        **precision_recall_density_coverage(real, fake, k_pr, k_dc),
    }
    if per_class is not None:
        result["per_class"] = {}
        for index, name in enumerate(class_names):
            real_c, fake_c = real[real_labels == index], fake[fake_labels == index]
            figures, notes = _figures(real_c, fake_c, k_pr, k_dc)
            result["per_class"][name] = {
                "n_real": len(real_c),
                "n_fake": len(fake_c),
                **figures,
                "notes": notes,
            }
    return result
