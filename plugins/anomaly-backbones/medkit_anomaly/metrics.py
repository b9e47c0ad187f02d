"""The figures of the anomaly-detection study: image and pixel ROC-AUC, AUPRO up to FPR 0.3, best F1.

All curves come from one sort of the scores: after sorting in descending order, the counts of positives and
negatives above each distinct threshold are cumulative sums, and so is the per-region overlap (PRO): a pixel
of ground-truth region r adds ``1 / (regions * |r|)`` to the mean overlap once the threshold passes its score.
The pixel figures of a category therefore sort its pixels once and keep the scores as float32: with every
score distinct (the longest curves) they peak near 42 bytes per pixel, where scikit-learn's ``roc_auc_score``
alone needs about 70.

A figure that a category cannot define (ROC-AUC without anomalous test images, AUPRO without ground-truth
regions) is NaN, with the reason in ``CategoryResult.undefined``; means over categories leave it out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np

from medkit import Scorer

MAX_FPR = 0.3  # AUPRO integrates up to a false-positive rate of 30 % (Bergmann et al., MVTec AD)
FIGURES = ("image_auroc", "pixel_auroc", "aupro", "image_f1", "pixel_f1")


@dataclass(frozen=True)
class Curve:
    """Cumulative sums above each distinct threshold, thresholds in descending order."""

    thresholds: np.ndarray
    positives: np.ndarray  # how many positives score >= threshold
    negatives: np.ndarray
    overlap: np.ndarray | None = None  # mean per-region overlap at the threshold (PRO)


class Regions(NamedTuple):
    """Ground-truth regions: a region number per pixel (0 normal) and each region's weight in the mean overlap."""

    ids: np.ndarray
    weight: np.ndarray


def ranked_curve(targets: np.ndarray, scores: np.ndarray, regions: Regions | None = None) -> Curve:
    """Sort ``scores`` once and count, at each distinct threshold, the targets at or above it.

    With ``regions``, the weights of the region pixels at or above each threshold are summed too: the PRO.
    Intermediate arrays are released as soon as they are used, so the peak stays at a few numbers per pixel.
    """
    order = np.argsort(scores, kind="stable")[::-1]
    ranked = scores[order]
    last = np.empty(ranked.size, dtype=bool)  # the end of each run of equal scores
    np.not_equal(ranked[1:], ranked[:-1], out=last[:-1])
    last[-1] = True
    thresholds = ranked[last]
    del ranked
    overlap = None
    if regions is not None:
        gained = regions.weight[regions.ids[order]]
        overlap = np.cumsum(gained, out=gained)[last]
        del gained
    positives = np.cumsum(targets[order], dtype=np.int64)[last]
    del order
    negatives = np.flatnonzero(last)
    negatives += 1
    negatives -= positives
    return Curve(thresholds, positives, negatives, overlap)


def roc_auc(curve: Curve) -> float:
    """Trapezoids under the ROC curve from the origin, summed exactly in integer counts.

    Twice a trapezoid's area in counts is ``steps[i] * (positives[i] + positives[i - 1])``; the two dot products
    read ``positives`` through views, so the only new array is ``steps``.
    """
    negatives, positives = curve.negatives, curve.positives
    steps = np.empty_like(negatives)
    steps[0] = negatives[0]
    np.subtract(negatives[1:], negatives[:-1], out=steps[1:])
    twice = int(np.dot(steps, positives)) + int(np.dot(steps[1:], positives[:-1]))
    return twice / (2.0 * int(positives[-1]) * int(negatives[-1]))


def best_f1(curve: Curve) -> tuple[float, float]:
    """The highest F1 over thresholds ("score >= threshold is anomalous") and its threshold."""
    f1 = np.add(curve.positives, curve.negatives, dtype=np.float64)  # predicted positives
    f1 += curve.positives[-1]  # + actual positives = 2 TP + FP + FN
    np.divide(curve.positives, f1, out=f1)
    best = int(np.argmax(f1))
    return 2.0 * float(f1[best]), float(curve.thresholds[best])


def pro_auc(curve: Curve, max_fpr: float = MAX_FPR) -> float:
    """Area under PRO over FPR in [0, max_fpr], divided by max_fpr (1 for a perfect map)."""
    if curve.overlap is None:
        raise ValueError("the curve carries no per-region overlap; build it with regions")
    normal = curve.negatives[-1]
    # the first point past max_fpr: the curve is cut there and its last segment interpolated
    end = min(int(np.searchsorted(curve.negatives, max_fpr * normal, side="right")), curve.negatives.size - 1)
    fpr = np.append(0.0, curve.negatives[: end + 1] / normal)
    pro = np.append(0.0, curve.overlap[: end + 1])
    if fpr[-1] > max_fpr:
        share = (max_fpr - fpr[-2]) / (fpr[-1] - fpr[-2])
        fpr[-1], pro[-1] = max_fpr, pro[-2] + share * (pro[-1] - pro[-2])
    return float(np.trapezoid(pro, fpr) / max_fpr)


def label_regions(masks: np.ndarray) -> Regions:
    """8-connected ground-truth regions, numbered across all images; each weighs ``1 / (regions * |region|)``."""
    from scipy.ndimage import label

    ids = np.zeros(masks.shape, dtype=np.int32)
    areas = [np.zeros(1, dtype=np.int64)]  # region 0: the normal pixels
    count = 0
    for index, mask in enumerate(masks):
        numbered, found = label(mask, structure=np.ones((3, 3)), output=np.int32)
        if found:
            ids[index] = np.where(numbered > 0, numbered + count, 0)
            areas.append(np.bincount(numbered.ravel(), minlength=found + 1)[1:])
            count += found
    weight = np.zeros(count + 1)
    weight[1:] = 1.0 / (np.concatenate(areas)[1:] * max(count, 1))
    return Regions(ids.ravel(), weight)


def _as_array(value: Any) -> np.ndarray:
    """A numpy array from an array, a tensor, or a list of either (stacked)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, list | tuple):
        value = np.stack([_as_array(v) for v in value]) if value else np.zeros(0)
    return np.asarray(value)


def _maps(value: Any, name: str) -> np.ndarray:
    """(N, H, W) from (N, H, W) or (N, 1, H, W)."""
    array = _as_array(value)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W); got {array.shape}")
    return array


def _finite_scores(value: Any, name: str) -> np.ndarray:
    array = _as_array(value).astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values; check the model's scores")
    return array


@dataclass(frozen=True)
class CategoryResult:
    """The study's figures for one category; ``undefined`` maps a NaN figure to the reason it has no value."""

    category: str
    image_auroc: float
    pixel_auroc: float
    aupro: float
    image_f1: float
    pixel_f1: float
    image_threshold: float = math.nan
    pixel_threshold: float = math.nan
    images: int = 0
    anomalous: int = 0
    undefined: dict[str, str] = field(default_factory=dict)

    def figures(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in FIGURES}

    def row(self) -> dict[str, Any]:
        """All fields, for a CSV row; ``undefined`` as one ``figure: reason`` string."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "undefined"}
        return {**row, "undefined": "; ".join(f"{k}: {v}" for k, v in self.undefined.items())}


def image_figures(labels: Any, scores: Any) -> tuple[dict[str, float], dict[str, str]]:
    """Image ROC-AUC, best F1 and its threshold; NaN with a reason when one class is missing."""
    labels = _as_array(labels).ravel().astype(bool)
    scores = _finite_scores(scores, "image scores").ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} image scores; give one score per image")
    missing = (
        "no anomalous test images" if not labels.any() else "no good test images" if labels.all() else ""
    )
    if missing:
        reason = f"{missing}: ROC-AUC and F1 need both kinds"
        nan = {"image_auroc": math.nan, "image_f1": math.nan, "image_threshold": math.nan}
        return nan, {"image_auroc": reason, "image_f1": reason}
    curve = ranked_curve(labels, scores)
    f1, threshold = best_f1(curve)
    return {"image_auroc": roc_auc(curve), "image_f1": f1, "image_threshold": threshold}, {}


def pixel_figures(masks: Any, maps: Any, max_fpr: float = MAX_FPR) -> tuple[dict[str, float], dict[str, str]]:
    """Pixel ROC-AUC over all pixels, AUPRO up to ``max_fpr`` and pixel best F1, from one sort."""
    masks = _maps(masks, "masks") > 0
    maps = _maps(maps, "anomaly maps")
    if masks.shape != maps.shape:
        raise ValueError(
            f"anomaly maps have shape {maps.shape} but masks {masks.shape}; upsample the maps to the mask size"
        )
    scores = _finite_scores(maps, "anomaly maps").ravel()
    anomalous = int(masks.sum())
    if anomalous == 0 or anomalous == masks.size:
        reason = "no anomalous pixels in the masks" if anomalous == 0 else "no normal pixels in the masks"
        nan = {"pixel_auroc": math.nan, "aupro": math.nan, "pixel_f1": math.nan, "pixel_threshold": math.nan}
        return nan, dict.fromkeys(("pixel_auroc", "aupro", "pixel_f1"), reason)
    curve = ranked_curve(masks.ravel(), scores, label_regions(masks))
    f1, threshold = best_f1(curve)
    return {
        "pixel_auroc": roc_auc(curve),
        "aupro": pro_auc(curve, max_fpr),
        "pixel_f1": f1,
        "pixel_threshold": threshold,
    }, {}


def evaluate_category(
    category: str, labels: Any, scores: Any, masks: Any, maps: Any, max_fpr: float = MAX_FPR
) -> CategoryResult:
    """All figures of one category from its test set: labels (N,), image scores (N,), masks and maps (N, H, W)."""
    image, undefined = image_figures(labels, scores)
    pixel, undefined_pixel = pixel_figures(masks, maps, max_fpr)
    labels = _as_array(labels).ravel()
    return CategoryResult(
        category,
        **image,
        **pixel,
        images=int(labels.size),
        anomalous=int((labels > 0).sum()),
        undefined={**undefined, **undefined_pixel},
    )


def mean_result(results: Sequence[CategoryResult]) -> CategoryResult:
    """The mean over categories (a ``"mean"`` row); categories where a figure is undefined are left out of it."""
    means, undefined = {}, {}
    for name in FIGURES:
        values = [getattr(r, name) for r in results if not math.isnan(getattr(r, name))]
        means[name] = float(np.mean(values)) if values else math.nan
        left_out = [r.category for r in results if math.isnan(getattr(r, name))]
        if left_out:
            undefined[name] = f"left out of the mean (undefined): {', '.join(left_out)}"
    return CategoryResult(
        "mean",
        **means,
        images=sum(r.images for r in results),
        anomalous=sum(r.anomalous for r in results),
        undefined=undefined,
    )


class AnomalyScorer(Scorer):
    """The study's figures for one category, accumulated batch by batch.

    ``prediction``: ``{"score": (B,), "map": (B, H, W) or (B, 1, H, W)}``; ``target``: a batch of samples
    with ``label`` (B,) and ``mask`` (B, 1, H, W). Maps are kept as float32 until :meth:`compute`.
    """

    name = "anomaly"

    def __init__(self, category: str = "", max_fpr: float = MAX_FPR) -> None:
        super().__init__()
        self.category = category
        self.max_fpr = max_fpr

    def update(self, prediction: Any, target: Any) -> None:
        self.accumulate("scores", list(_as_array(prediction["score"]).reshape(-1)))
        self.accumulate("labels", list(_as_array(target["label"]).reshape(-1)))
        self.accumulate("maps", list(_maps(prediction["map"], "map").astype(np.float32, copy=False)))
        self.accumulate("masks", list(_maps(target["mask"], "mask") > 0))

    def compute(self) -> dict[str, float]:
        if not self.state:
            return {}
        return self.result().figures()

    def result(self) -> CategoryResult:
        state = self.state
        return evaluate_category(
            self.category, state["labels"], state["scores"], state["masks"], state["maps"], self.max_fpr
        )
