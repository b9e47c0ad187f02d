"""`medkit run ct-seg train`: slice-wise training through the core slice cache and paper 002's sampler."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from medkit import RecipeContext, UsageError
from medkit.cache.sampler import ResidentSliceDataset
from medkit.cache.selection import CachedSlices, labelled_slices
from medkit.checkpoint import load_checkpoint, save_checkpoint
from medkit.trainer import trainer_from_config

from ..augment import SliceTransform
from ..data import CLASS_NAMES, open_cache
from ..decision import attach_offset, choose_shares, collect_logits, weight_offset
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


# training slices the decision's shares are chosen on (evenly spaced when there are more)
CALIBRATION_SLICES = 512


def calibration_batches(cache: Any, volumes: list[int], label_map: dict[int, int], cfg: Any) -> DataLoader:
    """Up to CALIBRATION_SLICES labelled training slices, resized as in training but never augmented."""
    labelled = labelled_slices(cache)
    keys = [(v, s) for v in volumes for s in labelled.get(v, [])]
    kept = [keys[i] for i in np.linspace(0, len(keys) - 1, min(len(keys), CALIBRATION_SLICES)).astype(int)]
    chosen: dict[int, list[int]] = {}
    for v, s in kept:
        chosen.setdefault(v, []).append(s)
    transform = SliceTransform(cfg.image_size, None, label_map)
    return DataLoader(
        CachedSlices(cache, chosen, class_names=CLASS_NAMES, transform=transform), batch_size=16
    )


@torch.inference_mode()
def score_model(model: Any, batches: DataLoader, scorer: Any, device: Any) -> dict[str, float]:
    """The figures of ``model``'s own decisions (its offset included: eval mode) on ``batches``."""
    model.eval()
    for batch in batches:
        scorer.update(model(batch["image"].to(device)).float().cpu(), batch["mask"])
    return scorer.compute()


def adjust_best_decision(
    ctx: RecipeContext,
    model: Any,
    weights: Any,
    training: tuple[Any, list[int], dict[int, int]],
    val_set: Any,
    summary: dict[str, Any],
) -> None:
    """Give best.pt the shares of the class weights' bias to remove (decision.py): ``logit_adjustment`` for every
    class, or per class the shares whose decisions score best on the training slices; re-score the validation
    slices with them."""
    cfg, scorer = ctx.config, lambda: PaperSegmentationScorer(CLASS_NAMES)
    state = load_checkpoint(ctx.run.best_checkpoint)
    model.load_state_dict(state["model"])
    attach_offset(model, torch.zeros(len(weights)))
    if cfg.logit_adjustment is None:
        batches = calibration_batches(*training, cfg)
        logits, masks = collect_logits(model, batches, ctx.device)
        shares, trace = choose_shares(logits, masks, weights, scorer, CLASS_NAMES)
        report = {"chosen_on": f"{len(masks)} training slices", "training_mean_dice": trace}
    else:
        shares, report = [cfg.logit_adjustment] * len(weights), {"chosen_on": "the logit_adjustment option"}
    attach_offset(model, weight_offset(weights, shares))
    summary["best_val_weighted_decision"] = dict(summary["best_val"])
    summary["best_val"].update(score_model(model, DataLoader(val_set, batch_size=16), scorer(), ctx.device))
    save_checkpoint(ctx.run.best_checkpoint, {**state, "model": model.state_dict()})
    summary["class_weights"] = dict(zip(CLASS_NAMES, map(float, weights), strict=True))
    summary["logit_adjustment"] = {"shares": dict(zip(CLASS_NAMES[1:], shares[1:], strict=True)), **report}


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
    weights = getattr(loss, "weights", None)
    if weights is not None:  # a zero offset while training; best.pt gets its share after (decision.py)
        attach_offset(model, torch.zeros(len(weights)))
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
    if weights is not None and ctx.run.is_main:
        adjust_best_decision(ctx, model, weights, (cache, train_ids, label_map), val_set, summary)
    summary.update({f"best_val/{k}": v for k, v in summary["best_val"].items() if k.startswith("dice/")})
    summary.update(
        parameters=model.num_parameters(),
        train_volumes=len(train_ids),
        val_volumes=len(validation.volumes),
        val_slices=len(val_set),
        sampler=dict(train_set.stats.__getstate__()),
    )
    return summary
