"""Generative metrics of a generator against a fixed real set: the stopping rule's figures during training and
the final report. The real features are extracted once; every evaluation draws the same latents (a fixed seed),
so successive figures differ only by what the generator learnt."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import MetricsConfig
from .features import build_extractor
from .imageset import ImageSet
from .metrics import metrics_from_features
from .sampling import balanced_labels, generate_images

EVALUATION_SEED = 12345  # latents of every evaluation; not the run's seed, so runs with other seeds compare


class GenerativeEvaluator:
    """``evaluator(generator)`` -> FID, precision, recall, density, coverage (and per class with ``per_class``)."""

    def __init__(self, real: ImageSet, options: MetricsConfig, device: str = "cpu") -> None:
        self.real, self.options, self.device = real, options, device
        self.extractor = build_extractor(
            options.extractor, options.weights, device, options.batch_size, options.input_size
        )
        self.real_features = self.extractor(real.images)
        classes = len(real.class_names)
        self.labels = balanced_labels(max(1, -(-options.images // classes)), classes)
        self.eval_labels = balanced_labels(max(1, -(-options.eval_images // classes)), classes)

    @property
    def extractor_name(self) -> str:
        return self.extractor.name

    def report(
        self,
        generator: Any,
        truncation: float = 1.0,
        per_class: bool = True,
        labels: np.ndarray | None = None,
    ) -> dict[str, Any]:
        labels = self.labels if labels is None else labels
        images = generate_images(
            generator, labels, seed=EVALUATION_SEED, truncation=truncation, device=self.device
        )
        return self.report_images(images, labels, per_class)

    def report_images(self, images: np.ndarray, labels: np.ndarray, per_class: bool = True) -> dict[str, Any]:
        """The figures of given generated images (uint8 (N, H, W, 3)) against the real set."""
        fake_features = self.extractor(images)
        classes = (self.real.labels, labels, list(self.real.class_names)) if per_class else None
        return metrics_from_features(
            self.real_features,
            fake_features,
            self.extractor.name,
            self.options.k_pr,
            self.options.k_dc,
            classes,
        )

    def __call__(self, generator: Any) -> dict[str, float]:
        """The stopping rule's figures (overall, plain floats)."""
        figures = self.report(generator, per_class=False, labels=self.eval_labels)
        return {k: float(figures[k]) for k in ("fid", "precision", "recall", "density", "coverage")}
