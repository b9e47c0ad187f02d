"""`medkit run gan-aug metrics`: FID, Improved Precision & Recall and Density & Coverage of a checkpoint against
the real images, overall and per class, on a named feature extractor."""

from __future__ import annotations

from typing import Any

from medkit import RecipeContext, UsageError

from ..config import MetricsRecipeConfig
from ..data import load_real
from ..evaluation import GenerativeEvaluator
from ..sampling import load_generator
from .generate import checkpoint_of


def metrics(ctx: RecipeContext) -> dict[str, Any]:
    cfg: MetricsRecipeConfig = ctx.config
    checkpoint = checkpoint_of(cfg.checkpoint)
    generator, meta = load_generator(checkpoint)
    train, val = load_real(cfg.data_options, cfg.data, generator.resolution, cfg.seed)
    real = train if cfg.split == "train" else val
    if list(real.class_names) != list(meta["class_names"]):
        raise UsageError(
            f"{checkpoint} generates classes {meta['class_names']} but the real images have {list(real.class_names)}; "
            "compare against the data the generator was trained on"
        )
    evaluator = GenerativeEvaluator(real, cfg.metrics, ctx.device)
    figures = evaluator.report(generator, truncation=cfg.truncation)
    return {"checkpoint": str(checkpoint), "real": f"{real.source} ({cfg.split})", **figures}
