"""The GAN stopping rule of paper 001: stop when FID, Improved P&R and Density & Coverage stop improving.

An evaluation improves when any of its figures beats that figure's best so far (lower is better for FID and
KID, higher for precision, recall, density, coverage and anything else). After ``patience`` evaluations in a
row without improvement, training stops. Separately, the evaluation with the lowest FID is the one kept as the
best checkpoint (the generator a user should sample from); without FID, the last improving evaluation is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

LOWER_IS_BETTER = frozenset({"fid", "kid"})


def is_better(name: str, value: float, best: float) -> bool:
    return value < best if name.lower() in LOWER_IS_BETTER else value > best


@dataclass
class Verdict:
    improved: list[str]  # the figures that beat their best so far
    keep_as_best: bool  # this evaluation's generator should become checkpoints/best.pt
    stop: bool


@dataclass
class StoppingRule:
    patience: int | None = None
    best: dict[str, float] = field(default_factory=dict)
    best_images: dict[str, int] = field(default_factory=dict)
    best_checkpoint_images: int | None = None
    bad_evaluations: int = 0
    evaluations: int = 0

    def observe(self, figures: dict[str, float], images: int) -> Verdict:
        """Record one evaluation made after ``images`` images; non-finite figures are ignored."""
        finite = {k: float(v) for k, v in figures.items() if isinstance(v, int | float) and math.isfinite(v)}
        improved = [k for k, v in finite.items() if k not in self.best or is_better(k, v, self.best[k])]
        for name in improved:
            self.best[name], self.best_images[name] = finite[name], images
        self.evaluations += 1
        self.bad_evaluations = 0 if improved else self.bad_evaluations + 1
        keep = "fid" in improved if "fid" in finite else bool(improved)
        if keep:
            self.best_checkpoint_images = images
        stop = self.patience is not None and self.bad_evaluations >= self.patience
        return Verdict(improved, keep, stop)

    def reason(self) -> str:
        """Why training stopped, for the summary and the log."""
        figures = ", ".join(
            f"{k} {self.best[k]:.4g} at {self.best_images[k]} images" for k in sorted(self.best)
        )
        return (
            f"no figure improved in {self.bad_evaluations} evaluations in a row "
            f"(patience {self.patience}); best so far: {figures or 'none'}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": dict(self.best),
            "best_images": dict(self.best_images),
            "best_checkpoint_images": self.best_checkpoint_images,
            "bad_evaluations": self.bad_evaluations,
            "evaluations": self.evaluations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = dict(state["best"])
        self.best_images = dict(state["best_images"])
        self.best_checkpoint_images = state["best_checkpoint_images"]
        self.bad_evaluations = int(state["bad_evaluations"])
        self.evaluations = int(state["evaluations"])
