"""ct-seg's validation set: which volumes are held out (a random share of --data, or the authors' own split given
as ``val_data``) and which of their slices each evaluation scores (every labelled one, or the paper's sampler)."""

from __future__ import annotations

from typing import Any, NamedTuple

from medkit import UsageError
from medkit.cache.sampler import ResidentSliceDataset
from medkit.cache.selection import CachedSlices, labelled_slices
from medkit.cache.store import SliceCache

from .augment import SliceTransform
from .data import CLASS_NAMES, open_cache, split_volumes


class Validation(NamedTuple):
    """The volumes scored after every epoch: their cache, their indices in it and the cache's label map."""

    cache: SliceCache
    volumes: list[int]
    label_map: dict[int, int]


def split_train_validation(
    cache: SliceCache, label_map: dict[int, int], cfg: Any
) -> tuple[list[int], Validation]:
    """Training volumes of ``cache`` and the validation volumes: ``val_data``'s when given (then every volume of
    ``cache`` trains, the authors' subset0/subset1 split), else a random ``val_fraction`` of ``cache``'s."""
    if cfg.val_data is None:
        train_ids, val_ids = split_volumes(cache, cfg.val_fraction, cfg.seed)
        return train_ids, Validation(cache, val_ids, label_map)
    val_cache, val_label_map = open_cache(cfg.val_data, cfg)
    check_disjoint(cache, val_cache)
    return list(range(len(cache))), Validation(val_cache, list(range(len(val_cache))), val_label_map)


def check_disjoint(train: SliceCache, val: SliceCache) -> None:
    """A volume in both sets would be scored on slices the model trained on, flattering every figure."""
    shared = sorted({v.id for v in train.volumes} & {v.id for v in val.volumes})
    if shared:
        raise UsageError(
            f"val_data {val.path} and --data {train.path} share {len(shared)} volume(s) (e.g. {shared[0]}); "
            "validation volumes must not be trained on - give val_data a folder without the training volumes"
        )


def validation_set(validation: Validation, cfg: Any) -> CachedSlices | ResidentSliceDataset:
    """The slices each evaluation scores, resized like the training slices but never augmented.

    ``val_sampler.method=resident`` draws them through the paper's limited-RAM sampler (authors: K=3, M=10,
    384 samples). The trainer never tells an evaluation set the epoch, so the draw is seeded once and every
    epoch scores the same slices: epochs stay comparable and best.pt is not picked by a lucky draw. The
    authors' code drew new slices every epoch; that only adds noise to the curve.
    """
    cache, volumes, label_map = validation
    transform = SliceTransform(cfg.image_size, None, label_map)
    labelled = labelled_slices(cache)
    if cfg.val_sampler.method == "labelled":
        chosen = {v: labelled[v] for v in volumes}
        return CachedSlices(cache, chosen, class_names=CLASS_NAMES, transform=transform)
    return ResidentSliceDataset(
        cache,
        cfg.val_sampler.samples,
        method="resident",
        resident=cfg.val_sampler.resident,
        uses=cfg.val_sampler.uses,
        # evaluation starts after the epoch's training draws are done, so it may use the same budget
        budget_bytes=cfg.sampler.budget_mb * 2**20,
        volumes=volumes,
        slices=labelled if cfg.sampler.slices == "labelled" else None,
        seed=cfg.seed,
        transform=transform,
    )
