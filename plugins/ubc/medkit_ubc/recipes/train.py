"""`medkit run ubc train`: a classifier, or a Unet-boosted classifier, on slices with lesion masks (paper 003)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medkit import RecipeContext, UsageError
from medkit.scorers import wilson_interval
from medkit.trainer import trainer_from_config

from ..data import load_slices
from ..losses import UbcLoss
from ..metrics import UbcScorer
from ..slices import NO_LABEL, Slices, SliceSet, per_class_subset, split_by_patient

PLATEAU_FIGURES = ("accuracy", "balanced_accuracy", "roc_auc", "dice")


def check_model_shape(options: dict[str, Any], classes: int) -> None:
    for key, needed in (("in_channels", 1), ("num_classes", classes)):
        if key in options and options[key] != needed:
            raise UsageError(
                f"model.{key}={options[key]}: ubc trains on single-channel slices with {classes} classes, so {key} "
                f"must be {needed}; drop --set model.{key}"
            )


def plateau(records: list[dict[str, Any]], last: int, test_size: int) -> dict[str, float]:
    """Test figures averaged over the last ``last`` evaluations (paper: read at the plateau, mean of 5), with the
    Wilson interval of that mean accuracy over the test images."""
    tail = records[-last:]
    figures = {}
    for name in PLATEAU_FIGURES:
        values = [r[f"val/{name}"] for r in tail if f"val/{name}" in r]
        if values:
            figures[name] = float(np.nanmean(values))
    if "accuracy" in figures and test_size:
        low, high = wilson_interval(round(figures["accuracy"] * test_size), test_size)
        figures.update(accuracy_ci_low=low, accuracy_ci_high=high)
    return figures


def describe_split(slices: Slices, indices: list[int]) -> dict[str, Any]:
    labels = slices.labels[indices]
    counts = {name: int((labels == c).sum()) for c, name in enumerate(slices.class_names)}
    return {
        "images": len(indices),
        "per_class": counts,
        "unlabelled": int((labels == NO_LABEL).sum()),
        "without_mask": int((~slices.has_mask[indices]).sum()),
        "patients": len(set(slices.patients[indices])),
        "patient_ids": sorted(map(str, set(slices.patients[indices]))),  # which patients decide the table
    }


def epoch_indices(indices: list[int], min_images: int) -> list[int]:
    """``indices`` repeated as whole passes until there are at least ``min_images`` (the trainer shuffles them
    each epoch): every image is seen equally often, and a tiny subset takes as many optimiser steps per epoch as
    a larger one."""
    if not indices or min_images <= len(indices):
        return list(indices)
    return list(indices) * -(-min_images // len(indices))


def train(ctx: RecipeContext) -> dict[str, Any]:
    cfg = ctx.config
    slices = load_slices(cfg)
    check_model_shape(cfg.model, len(slices.class_names))
    train_ids, test_ids = split_by_patient(
        slices, cfg.val_fraction, cfg.seed if cfg.split_seed is None else cfg.split_seed
    )
    if cfg.per_class is not None:
        train_ids = per_class_subset(slices, train_ids, cfg.per_class, cfg.seed)
    model = ctx.build_model(in_channels=1, num_classes=len(slices.class_names))
    trainer = trainer_from_config(
        cfg,
        ctx.device,
        loss=UbcLoss(cfg.alpha, cfg.deep_weight, cfg.dice_formula),
        make_scorers=lambda: [UbcScorer(slices.class_names)],
        console=ctx.console,
        target_key=None,  # the loss and the scorer need label, mask and has_mask together
    )
    epoch_ids = epoch_indices(train_ids, cfg.min_epoch_images)
    summary = trainer.fit(model, SliceSet(slices, epoch_ids), SliceSet(slices, test_ids), ctx.run)
    records = ctx.run.read_metrics()
    summary.update(
        arch=cfg.arch,
        parameters=model.num_parameters(),
        parts=model.parts(),
        classes=list(slices.class_names),
        train=describe_split(slices, train_ids),
        epoch_images=len(epoch_ids),
        test=describe_split(slices, test_ids),
        plateau=plateau(records, cfg.plateau, len(test_ids)),
        seconds=round(sum(r.get("seconds", 0.0) for r in records), 1),
    )
    return summary
