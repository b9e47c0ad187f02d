"""The figures a gradient run logs, and the check that ``monitor`` names one of them (torch-free: config
validation runs it before a run directory exists)."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import UsageError
from .suggest import did_you_mean

SPLITS = ("train", "val")


def logged_figure_names(scorer_figures: Sequence[str]) -> list[str]:
    """What metrics.jsonl holds per epoch: the learning rate, then loss, sample count and every scorer
    figure of each split."""
    names = ["lr"]
    for split in SPLITS:
        names += [f"{split}/{name}" for name in ("loss", "samples", *scorer_figures)]
    return names


def check_monitor(monitor: str, scorer_figures: Sequence[str] | None) -> None:
    """``monitor`` must be a figure the run logs (a typo would silently disable best.pt and early stopping);
    a UsageError names the closest ones. ``None``: the scorers do not declare their figures, nothing to check."""
    if scorer_figures is None:
        return
    known = logged_figure_names(scorer_figures)
    if monitor in known:
        return
    validation = [name for name in known if name.startswith("val/")]
    raise UsageError(
        f"monitor={monitor!r}: the run logs no figure of that name, so best.pt and early stopping would never "
        f"act.{did_you_mean(monitor, known)} Validation figures: {', '.join(validation)}."
    )
