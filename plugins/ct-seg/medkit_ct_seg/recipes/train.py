"""`medkit run ct-seg train`: slice-wise training through the core slice cache and paper 002's sampler."""

from __future__ import annotations

from typing import Any

import numpy as np

from medkit import RecipeContext, UsageError
from medkit.cache.sampler import ResidentSliceDataset
from medkit.cache.selection import labelled_slices
from medkit.trainer import trainer_from_config

from ..augment import SliceTransform
from ..data import CLASS_NAMES, open_cache
from ..losses import LOSSES, class_weights_from_counts
from ..metrics import PaperSegmentationScorer, ranking_figures
from ..validation import split_train_validation, validation_set


def make_loss(
    name: str,
    cache: Any,
    volumes: list[int],
    label_map: dict[int, int],
    power: float = 1.0,
    slices: dict[int, list[int]] | None = None,
) -> Any:
    """The named loss; weighted_ce's weights come from the pixels of the slices training draws from (``slices``
    per volume, default every slice), so unlabelled slices the sampler never draws do not dilute them."""
    if name != "weighted_ce":
        return LOSSES[name]()
    counts = np.zeros(len(CLASS_NAMES))
    for v in volumes:  # pixel counts per class from the stored per-slice areas: no mask is read
        areas = cache.mask_area(v)
        area = (areas if slices is None else areas[slices.get(v, [])]).sum(axis=0)
        for value, pixels in enumerate(area):
            label = label_map.get(value, 0) if label_map else value
            if label < len(counts):
                counts[label] += pixels
    return LOSSES[name](class_weights_from_counts(counts, power))


def drawn_slices(cache: Any, cfg: Any) -> dict[int, list[int]] | None:
    """The slices training draws from per volume (``sampler.slices``); None: every slice."""
    return labelled_slices(cache) if cfg.sampler.slices == "labelled" else None


def training_set(cache: Any, cfg: Any, volumes: list[int], label_map: dict[int, int]) -> ResidentSliceDataset:
    """Training slices through paper 002's limited-RAM sampler, augmented."""
    return ResidentSliceDataset(
        cache,
        cfg.sampler.samples_per_epoch,
        method=cfg.sampler.method,
        resident=cfg.sampler.resident,
        uses=cfg.sampler.uses,
        budget_bytes=cfg.sampler.budget_mb * 2**20,
        volumes=volumes,
        slices=drawn_slices(cache, cfg),
        seed=cfg.seed,
        transform=SliceTransform(cfg.image_size, cfg.augment, label_map),
    )


def check_model_shape(options: dict[str, Any]) -> None:
    """CT slices have one channel and the task four classes; a model built otherwise could not train on them."""
    for key, needed in (("in_channels", 1), ("num_classes", len(CLASS_NAMES))):
        if key in options and options[key] != needed:
            raise UsageError(
                f"model.{key}={options[key]}: ct-seg trains on single-channel CT slices with {len(CLASS_NAMES)} "
                f"classes ({', '.join(CLASS_NAMES)}), so {key} must be {needed}; drop --set model.{key}"
            )


def train(ctx: RecipeContext) -> dict[str, Any]:
    cfg = ctx.config
    check_model_shape(cfg.model)
    cache, label_map = open_cache(cfg.data, cfg)
    train_ids, validation = split_train_validation(cache, label_map, cfg)
    model = ctx.build_model(in_channels=1, num_classes=len(CLASS_NAMES))
    train_set = training_set(cache, cfg, train_ids, label_map)
    val_set = validation_set(validation, cfg)
    loss = make_loss(cfg.loss, cache, train_ids, label_map, cfg.class_weight_power, drawn_slices(cache, cfg))
    trainer = trainer_from_config(
        cfg,
        ctx.device,
        loss=lambda logits, batch: loss(logits, batch["mask"]),
        make_scorers=lambda: [PaperSegmentationScorer(CLASS_NAMES)],
        console=ctx.console,
    )
    summary = trainer.fit(model, train_set, val_set, ctx.run)
    records = ctx.run.read_metrics()
    summary["ranking"] = ranking_figures([r.get(cfg.monitor, float("nan")) for r in records])
    best = next((r for r in records if r["epoch"] == summary["best_epoch"]), {})
    # the held-out volumes' figures at the epoch best.pt was saved: what a user of the checkpoint gets
    summary["best_val"] = {k.removeprefix("val/"): v for k, v in best.items() if k.startswith("val/")}
    # the headline figures as top-level numbers, so `medkit run` prints them
    summary.update({f"best_val/{k}": v for k, v in summary["best_val"].items() if k.startswith("dice/")})
    summary.update(
        parameters=model.num_parameters(),
        train_volumes=len(train_ids),
        val_volumes=len(validation.volumes),
        val_slices=len(val_set),
        sampler=dict(train_set.stats.__getstate__()),
    )
    return summary
