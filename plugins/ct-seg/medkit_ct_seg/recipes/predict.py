"""`medkit run ct-seg predict`: a trained checkpoint segments volumes; each mask is written as NIfTI in its source
image's geometry (it overlays the scan in a viewer), with PNG overlays, and scored where a mask is given.

Without ``--data`` it segments freshly generated phantoms (never seen in training) and scores itself against
their masks, so the command works out of the box after `medkit run ct-seg`. With ``--data`` masks are found as
training finds them (any layout `--data` accepts: LUNA16, images/ + masks/, nnU-Net, ``<name>_seg`` files);
scans without masks, DICOM series among them, are segmented and not scored.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medkit import RecipeContext, UsageError
from medkit.atomic import atomic_write_text
from medkit.cache.formats import Spacing
from medkit.cache.pairing import Pair, find_layout, find_pairs
from medkit.cache.readers import read_mask, read_volume
from medkit.cache.store import Preprocessing
from medkit.checkpoint import load_checkpoint
from medkit.runs import ENV_FILE, read_json, runs_root

from ..augment import label_lookup
from ..data import CLASS_NAMES, implied_labels
from ..decision import OFFSET_BUFFER, attach_stored_offset
from ..metrics import PaperSegmentationScorer
from ..phantoms import phantom
from ..source_geometry import write_labels_like
from ..volume_metrics import case_figures, mean_over_cases

UNSEEN_SEED = 987_654  # phantoms drawn from this seed are never among the training phantoms
PHANTOM_SPACING = (2.5, 0.7, 0.7)  # (z, y, x) mm, as the training phantoms


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields have no single truth value
class Case:
    """One volume to segment: (Z, Y, X) LPS image as the core reader gives it, its spacing, the file it came
    from (None: a generated phantom) and its mask as classes 0..3 (None: not scored)."""

    name: str
    image: np.ndarray
    spacing: Spacing
    source: Path | None
    truth: np.ndarray | None


def latest_checkpoint() -> Path:
    runs = sorted((runs_root() / "ct-seg").glob("*/checkpoints/best.pt"), key=lambda p: p.stat().st_mtime)
    runs = [p for p in runs if read_json(p.parents[1] / ENV_FILE).get("recipe") == "train"]
    if not runs:
        raise UsageError(
            f"no trained ct-seg model under {runs_root() / 'ct-seg'}; run `medkit run ct-seg` first "
            "or pass --set checkpoint=PATH"
        )
    return runs[-1]


def load_model(ctx: RecipeContext, path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    state = load_checkpoint(path, arch=ctx.config.arch or None)
    arch = state.get("arch") or ctx.config.arch
    options = {**state.get("arch_options", {}), **ctx.config.model}
    model = ctx.plugin.entry("architecture", arch, "--arch").build(
        **{**options, "in_channels": 1, "num_classes": len(CLASS_NAMES)}
    )
    attach_stored_offset(model, state["model"])  # a weighted-loss run's decision offset (decision.py)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise UsageError(
            f"checkpoint {path} does not fit {arch} with options {options}: it was trained with another width or "
            f"class count ({str(err).splitlines()[0]})"
        ) from err
    info = {"arch": arch, "options": options, "epoch": state.get("epoch")}
    if OFFSET_BUFFER in state["model"]:  # subtracted from the logits before the argmax
        info["decision_offset"] = dict(zip(CLASS_NAMES, state["model"][OFFSET_BUFFER].tolist(), strict=True))
    return model.to(ctx.device).eval(), info


@torch.inference_mode()
def segment(
    model: torch.nn.Module,
    volume: np.ndarray,
    size: int,
    preprocessing: Preprocessing,
    device: str,
    batch: int = 16,
) -> np.ndarray:
    """(Z, Y, X) raw volume -> (Z, Y, X) uint8 labels at the volume's own resolution."""
    labels = np.empty(volume.shape, dtype=np.uint8)
    for start in range(0, len(volume), batch):
        slices = torch.from_numpy(preprocessing.apply(volume[start : start + batch]))[:, None]
        resized = F.interpolate(
            slices, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        logits = model(resized.to(device)).float().cpu()
        back = F.interpolate(logits, size=volume.shape[1:], mode="bilinear", align_corners=False)
        labels[start : start + batch] = back.argmax(1).numpy().astype(np.uint8)
    return labels


def save_overlays(volume: np.ndarray, labels: np.ndarray, stem: Path, count: int) -> list[str]:
    """PNG of the slices with the most airway (and lung) predicted: image in grey, classes in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    score = (labels == 3).sum(axis=(1, 2)) * 100 + (labels > 0).sum(axis=(1, 2))
    written = []
    for k in sorted(np.argsort(-score)[:count].tolist()):
        figure, axis = plt.subplots(figsize=(4, 4))
        axis.imshow(volume[k], cmap="gray")
        axis.imshow(
            np.ma.masked_equal(labels[k], 0), cmap="brg", alpha=0.45, vmin=1, vmax=3, interpolation="nearest"
        )
        axis.set_title(f"slice {k}")
        axis.axis("off")
        target = stem.with_name(f"{stem.name}_z{k:03d}.png")
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, dpi=80, bbox_inches="tight")
        plt.close(figure)
        written.append(str(target))
    return written


def cases_to_segment(cfg: Any, note: Callable[[str], None]) -> Iterator[Case]:
    """The volumes under --data (read one at a time), or unseen phantoms without --data; ``note`` hears of
    volumes left out (a DICOM localizer)."""
    if cfg.data is None:
        for i in range(cfg.phantoms):
            image, mask = phantom(cfg.phantom_slices, cfg.image_size, seed=UNSEEN_SEED + i)
            yield Case(f"phantom{i:03d}", image, PHANTOM_SPACING, None, mask)
        return
    pairs, implied = data_pairs(Path(cfg.data), note)
    label_map = dict(cfg.label_map) or implied
    for pair in pairs:
        volume = read_volume(pair.image)
        truth = None if pair.mask is None else as_classes(read_mask(pair.mask, volume), label_map, pair.mask)
        yield Case(pair.id, volume.array, volume.spacing, pair.image, truth)


def data_pairs(data: Path, note: Callable[[str], None]) -> tuple[list[Pair], dict[int, int]]:
    """The volumes of a folder in any layout training reads, with their masks where the layout has them (a
    folder of scans alone is fine: predict serves unlabelled data), and the label map the layout implies; or
    one volume file."""
    if not data.is_dir():
        return find_pairs([data], on_left_out=note), {}
    layout = find_layout(data.resolve(), on_left_out=note)
    return layout.pairs, implied_labels(layout)


def as_classes(mask: np.ndarray, label_map: dict[int, int], path: Path) -> np.ndarray:
    """Stored mask values -> classes 0..3 through ``label_map`` (values it does not list -> 0); without a map
    the values must already be classes."""
    if label_map:
        return label_lookup(label_map).numpy().astype(np.uint8)[mask]
    unexpected = sorted(set(np.unique(mask).tolist()) - set(range(len(CLASS_NAMES))))
    if unexpected:
        raise UsageError(
            f"{path}: mask values {unexpected} are not classes 0..{len(CLASS_NAMES) - 1}; map them with "
            f"--set 'label_map={{{', '.join(f'{v}: 1' for v in unexpected)}}}' (LUNA16: {{3: 1, 4: 2, 5: 3}})"
        )
    return mask


def slice_scorer(labels: np.ndarray, truth: np.ndarray, which: str) -> PaperSegmentationScorer:
    """The report's per-slice figures (section 5) over a case's labelled (or all) slices, at the scan's own
    resolution."""
    scorer = PaperSegmentationScorer(CLASS_NAMES)
    keep = truth.reshape(len(truth), -1).any(axis=1) if which == "labelled" else np.ones(len(truth), bool)
    if keep.any():
        scorer.update(labels[keep], truth[keep])
    return scorer


def flat(figures: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{"dice": {"airway": x}}`` -> ``{"dice/airway": x}``."""
    return {f"{figure}/{name}": value for figure, values in figures.items() for name, value in values.items()}


def write_cases_csv(scored: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    """One row per scored case; NaN (undefined) and inf (a class missing from one side) written as such."""
    rows = [{"case": name, **flat(figures)} for name, figures in scored.items()]
    # every case's columns: a case without labelled slices has no per-slice ones
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def scoring_summary(
    scored: dict[str, dict[str, dict[str, float]]], pooled: PaperSegmentationScorer, csv_path: Path
) -> dict[str, Any]:
    """Means over the cases of the 3D figures, the per-slice figures over every scored slice of every case,
    and the headline numbers `medkit run` prints."""
    write_cases_csv(scored, csv_path)
    means = mean_over_cases([{k: v for k, v in f.items() if k != "slices"} for f in scored.values()])
    slices = pooled.compute()
    headline = {f"mean/{key}": value for key, value in flat(means).items()}
    headline["slices/mean_dice"] = slices.get("mean_dice", math.nan)  # no labelled slice anywhere: undefined
    return {"cases_csv": str(csv_path), "mean": {**means, "slices": slices}, **headline}


def written_outputs(ctx: RecipeContext, case: Case, labels: np.ndarray) -> dict[str, Any]:
    """The case's mask (in its scan's geometry) and its overlays, written into the run directory."""
    mask_path = ctx.run.dir / "predictions" / f"{case.name}.nii.gz"
    write_labels_like(labels, case.source, case.spacing, mask_path)
    overlays = save_overlays(case.image, labels, ctx.run.dir / "overlays" / case.name, ctx.config.overlays)
    return {"mask": str(mask_path), "overlays": overlays}


def predict(ctx: RecipeContext) -> dict[str, Any]:
    cfg = ctx.config
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else latest_checkpoint()
    model, info = load_model(ctx, checkpoint)
    preprocessing = (
        Preprocessing("minmax") if cfg.intensity == "minmax" else Preprocessing("window", *cfg.window)
    )
    volumes: dict[str, Any] = {}
    scored: dict[str, dict[str, dict[str, float]]] = {}
    pooled = PaperSegmentationScorer(CLASS_NAMES)  # every scored slice of every case
    for case in cases_to_segment(cfg, ctx.console.print):
        labels = segment(model, case.image, cfg.image_size, preprocessing, ctx.device)
        volumes[case.name] = written_outputs(ctx, case, labels)
        if case.truth is not None:
            figures = case_figures(labels, case.truth, case.spacing, CLASS_NAMES, cfg.surface_tolerance_mm)
            scorer = slice_scorer(labels, case.truth, cfg.score_slices)
            pooled.merge(scorer.state)
            scored[case.name] = {**figures, "slices": scorer.compute()}
            volumes[case.name].update(scored[case.name])
        dice = f"  Dice {scored[case.name]['dice']}" if case.name in scored else ""
        ctx.console.print(f"{case.name}: {volumes[case.name]['mask']}{dice}")
    summary: dict[str, Any] = {"checkpoint": str(checkpoint), **info, "volumes": volumes}
    if scored:
        summary.update(scoring_summary(scored, pooled, ctx.run.dir / "cases.csv"))
    return summary
