"""medkit: deep learning on small medical-imaging data sets - the core a plugin builds on.

Light names (interfaces, entries, hook markers, config) import instantly; torch-backed names
(``GradientTrainer``, ``RecipeContext``, scorers) are imported on first use, keeping the CLI fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import RecipeConfig, option
from .entries import (
    ArchitectureEntry,
    AugmenterEntry,
    DatasetEntry,
    LossEntry,
    Recipe,
    ScorerEntry,
    TrainerEntry,
)
from .errors import MedkitError, PluginError, RunError, UsageError
from .hookspecs import hookimpl
from .interfaces import Augmenter, Dataset, Model, Sample, Scorer, Task, Trainer
from .version import API_VERSION, __version__

_LAZY = {
    "GradientTrainer": "medkit.trainer",
    "RecipeContext": "medkit.runner",
    "Run": "medkit.runs",
    "SegmentationScorer": "medkit.scorers",
    "ClassificationScorer": "medkit.scorers",
    "get_plugins": "medkit.plugins",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medkit' has no attribute {name!r}")


__all__ = [
    "API_VERSION",
    "ArchitectureEntry",
    "Augmenter",
    "AugmenterEntry",
    "Dataset",
    "DatasetEntry",
    "LossEntry",
    "MedkitError",
    "Model",
    "PluginError",
    "Recipe",
    "RecipeConfig",
    "RunError",
    "Sample",
    "Scorer",
    "ScorerEntry",
    "Task",
    "Trainer",
    "TrainerEntry",
    "UsageError",
    "__version__",
    "hookimpl",
    "option",
    *_LAZY,
]
