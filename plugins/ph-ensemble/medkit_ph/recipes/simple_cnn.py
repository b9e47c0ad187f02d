"""`medkit run ph-ensemble simple_cnn`: the appendix SimpleCNN trained from scratch (report section 7)."""

from __future__ import annotations

from typing import Any

from medkit import RecipeContext
from medkit.scorers import ClassificationScorer
from medkit.trainer import trainer_from_config

from ..data import load_data
from ..slices import SliceSet, cross_entropy, split_indices


def simple_cnn(ctx: RecipeContext) -> dict[str, Any]:
    cfg = ctx.config
    data = load_data(cfg.data, cfg.phantoms.count, cfg.phantoms.size, cfg.phantoms.seed, cfg.layout)
    train_ids, val_ids = split_indices(data.labels, cfg.val_fraction, cfg.seed)
    train = SliceSet(data, train_ids, cfg.image_size, cfg.rotate_degrees, cfg.seed)
    val = SliceSet(data, val_ids, cfg.image_size)
    model = ctx.build_model(image_size=cfg.image_size, num_classes=len(data.class_names))
    trainer = trainer_from_config(
        cfg,
        ctx.device,
        cross_entropy,
        lambda: [ClassificationScorer(data.class_names)],
        ctx.console,
        target_key="label",
    )
    summary = trainer.fit(model, train, val, ctx.run)
    return {**summary, "train_images": len(train), "val_images": len(val), "data": data.source}
