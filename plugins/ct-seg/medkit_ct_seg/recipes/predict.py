"""`medkit run ct-seg predict`: a trained checkpoint segments volumes; masks are written as NIfTI, with PNG overlays.

Without ``--data`` it segments freshly generated phantoms (never seen in training) and scores itself against
their masks, so the command works out of the box after `medkit run ct-seg`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medkit import RecipeContext, UsageError
from medkit.cache.readers import read_volume
from medkit.cache.store import Preprocessing
from medkit.checkpoint import load_checkpoint
from medkit.runs import ENV_FILE, read_json, runs_root

from ..data import CLASS_NAMES
from ..phantoms import phantom

UNSEEN_SEED = 987_654  # phantoms drawn from this seed are never among the training phantoms


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
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise UsageError(
            f"checkpoint {path} does not fit {arch} with options {options}: it was trained with another width or "
            f"class count ({str(err).splitlines()[0]})"
        ) from err
    return model.to(ctx.device).eval(), {"arch": arch, "options": options, "epoch": state.get("epoch")}


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


def save_nifti(labels: np.ndarray, spacing: tuple[float, float, float], path: Path) -> None:
    """LPS (Z, Y, X) labels -> a RAS NIfTI (x, y, z) with the volume's spacing."""
    import nibabel as nib

    ras = labels[:, ::-1, ::-1].transpose(2, 1, 0)
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(ras), affine), path)


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


def volumes_to_segment(ctx: RecipeContext) -> list[tuple[str, np.ndarray, tuple[float, float, float], Any]]:
    """(name, raw volume, spacing, ground truth or None) for --data, or for unseen phantoms."""
    cfg = ctx.config
    if cfg.data is None:
        items = []
        for i in range(cfg.phantoms):
            image, mask = phantom(cfg.phantom_slices, cfg.image_size, seed=UNSEEN_SEED + i)
            items.append((f"phantom{i:03d}", image, (2.5, 0.7, 0.7), mask))
        return items
    data = Path(cfg.data)
    from medkit.cache.pairing import find_pairs

    items = []
    for pair in find_pairs([data]):
        volume = read_volume(pair.image)
        items.append((pair.id, volume.array, volume.spacing, None))
    return items


def dice_per_class(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    scores = {}
    for c, name in enumerate(CLASS_NAMES[1:], start=1):
        p, g = labels == c, truth == c
        denominator = p.sum() + g.sum()
        scores[name] = float(2 * (p & g).sum() / denominator) if denominator else 1.0
    return scores


def predict(ctx: RecipeContext) -> dict[str, Any]:
    cfg = ctx.config
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else latest_checkpoint()
    model, info = load_model(ctx, checkpoint)
    preprocessing = (
        Preprocessing("minmax") if cfg.intensity == "minmax" else Preprocessing("window", *cfg.window)
    )
    results: dict[str, Any] = {}
    for name, volume, spacing, truth in volumes_to_segment(ctx):
        labels = segment(model, volume, cfg.image_size, preprocessing, ctx.device)
        mask_path = ctx.run.dir / "predictions" / f"{name}.nii.gz"
        save_nifti(labels, spacing, mask_path)
        entry: dict[str, Any] = {
            "mask": str(mask_path),
            "overlays": save_overlays(volume, labels, ctx.run.dir / "overlays" / name, cfg.overlays),
        }
        if truth is not None:
            entry["dice"] = dice_per_class(labels, truth)
        results[name] = entry
        ctx.console.print(f"{name}: {mask_path}" + (f"  Dice {entry['dice']}" if "dice" in entry else ""))
    summary: dict[str, Any] = {"checkpoint": str(checkpoint), **info, "volumes": results}
    scored = [r["dice"] for r in results.values() if "dice" in r]
    if scored:
        summary["mean_dice"] = {k: float(np.mean([d[k] for d in scored])) for k in scored[0]}
    return summary
