"""The generative Scorer: FID, Improved Precision & Recall and Density & Coverage as a core `Scorer`, so any
medkit code that scores batches can score generated images against real ones."""

from __future__ import annotations

from typing import Any

import numpy as np

from medkit import Scorer

from .features import build_extractor
from .metrics import metrics_from_features


class GenerativeScorer(Scorer):
    """``update(generated, real)`` with uint8 (N, H, W, 3) batches; ``compute()`` gives fid, precision, recall,
    density and coverage on the extractor's features (k = 3 for P/R and 5 for D/C, the paper's)."""

    name = "generative"
    greater_is_better = False  # the headline, FID, falls as the generator improves

    def __init__(
        self, extractor: str = "lite0", weights: str | None = None, k_pr: int = 3, k_dc: int = 5
    ) -> None:
        super().__init__()
        self.extractor = build_extractor(extractor, weights)
        self.k_pr, self.k_dc = k_pr, k_dc

    def update(self, prediction: Any, target: Any) -> None:
        self.accumulate("fake", self.extractor(np.asarray(prediction)).tolist())
        self.accumulate("real", self.extractor(np.asarray(target)).tolist())

    def compute(self) -> dict[str, float]:
        figures = metrics_from_features(
            np.asarray(self.state["real"]),
            np.asarray(self.state["fake"]),
            self.extractor.name,
            self.k_pr,
            self.k_dc,
        )
        return {k: float(figures[k]) for k in ("fid", "precision", "recall", "density", "coverage")}
