"""The train recipe: embedded shapes (or --data), a split, the core GradientTrainer, per-class Dice."""

from __future__ import annotations

import torch.nn.functional as F

from medkit import RecipeContext, SegmentationScorer
from medkit.data import train_val_split
from medkit.trainer import trainer_from_config


def train(ctx: RecipeContext) -> dict:
    cfg = ctx.config
    if cfg.data is None:
        dataset = ctx.dataset_entry().load()(samples=cfg.samples, image_size=cfg.image_size, seed=cfg.seed)
    else:
        dataset = ctx.dataset_entry("npz_folder").load()(cfg.data)
    train_set, val_set = train_val_split(dataset, cfg.val_fraction, cfg.seed)
    model = ctx.build_model(in_channels=dataset.in_channels, num_classes=len(dataset.class_names))
    trainer = trainer_from_config(
        cfg,
        ctx.device,
        loss=lambda logits, batch: F.cross_entropy(logits, batch["mask"]),
        make_scorers=lambda: [SegmentationScorer(dataset.class_names)],
        console=ctx.console,
    )
    summary = trainer.fit(model, train_set, val_set, ctx.run)
    summary["parameters"] = model.num_parameters()
    summary["train_samples"], summary["val_samples"] = len(train_set), len(val_set)
    return summary
