"""Drawing images from a trained generator: which labels, how many, with fixed seeds, and the per-class grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medkit import UsageError
from medkit.checkpoint import load_checkpoint

from .generator import Generator
from .imageset import ImageSet, from_tensor_range
from .transfer import rebuild_networks


def balanced_labels(per_class: int, num_classes: int) -> np.ndarray:
    """``per_class`` labels of every class, class by class."""
    if per_class < 1:
        raise UsageError(f"per_class={per_class}: generate at least one image per class")
    return np.repeat(np.arange(num_classes, dtype=np.int64), per_class)


def fill_labels(
    counts: Mapping[str, int], targets: Mapping[str, int], class_names: Sequence[str]
) -> np.ndarray:
    """Labels of what each class lacks to reach its target count (a class at or above its target gets none):
    synthetic images that even out an imbalanced set, paper 001's use on PATH-DT-MSU."""
    unknown = sorted(set(targets) - set(class_names))
    if unknown:
        raise UsageError(
            f"fill_to names unknown class(es) {unknown}; the classes are {', '.join(class_names)}"
        )
    missing = [max(0, int(targets.get(name, 0)) - int(counts.get(name, 0))) for name in class_names]
    if not sum(missing):
        raise UsageError(
            f"fill_to {dict(targets)}: every class already has that many real images ({dict(counts)})"
        )
    return np.repeat(np.arange(len(class_names), dtype=np.int64), missing)


@torch.inference_mode()
def generate_images(
    generator: Generator,
    labels: np.ndarray,
    *,
    seed: int = 0,
    truncation: float = 1.0,
    batch_size: int = 64,
    device: str = "cpu",
) -> np.ndarray:
    """uint8 (N, H, W, 3) images of the given classes; the same seed gives the same images on one device.

    The latents come from a seeded CPU generator; the noise inputs are drawn per image too (StyleGAN2's "random"
    noise mode) under a seeded, forked global generator. Its "const" mode would stamp one fixed noise pattern on
    every image: the same speckles in the same places, visible and costly in recall on a briefly trained model."""
    generator = generator.to(device).eval()
    latents = torch.Generator().manual_seed(seed)
    out = []
    with torch.random.fork_rng(devices=[torch.device(device)] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(labels), batch_size):
            c = torch.as_tensor(labels[start : start + batch_size], device=device)
            z = torch.randn(len(c), generator.z_dim, generator=latents).to(device)
            images = generator(z, c, truncation_psi=truncation, noise_mode="random")
            out.append(from_tensor_range(images.float().cpu().numpy()))
    if not out:
        return np.zeros((0, generator.resolution, generator.resolution, 3), dtype=np.uint8)
    return np.concatenate(out)


def synthetic_set(
    generator: Generator,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    seed: int,
    truncation: float = 1.0,
    batch_size: int = 64,
    device: str = "cpu",
    source: str = "synthetic",
) -> ImageSet:
    images = generate_images(
        generator, labels, seed=seed, truncation=truncation, batch_size=batch_size, device=device
    )
    return ImageSet(images, labels, tuple(class_names), source=source)


def load_generator(path: Path, use_ema: bool = True) -> tuple[Generator, dict[str, Any]]:
    """The generator of a gan-aug checkpoint (its EMA by default, as StyleGAN2 samples) and the checkpoint's
    metadata (class names, data source, images seen)."""
    state = load_checkpoint(Path(path))
    generator, _ = rebuild_networks(state, source=str(path), ema=use_ema)
    meta = dict(state.get("meta") or {})
    meta.setdefault("images_seen", state.get("images_seen"))
    names = meta.get("class_names") or [f"class{i}" for i in range(generator.num_classes)]
    meta["class_names"] = list(names)
    return generator.eval(), meta


def first_per_class(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of the first ``count`` images of every class (what a grid shows)."""
    return np.concatenate([np.flatnonzero(labels == c)[:count] for c in np.unique(labels)])


def save_grids(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], folder: Path, columns: int = 8
) -> list[Path]:
    """One PNG per class: that class's images in rows of ``columns`` (the sample grids a person looks at)."""
    from PIL import Image

    from medkit.atomic import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for c, name in enumerate(class_names):
        tiles = images[labels == c]
        if not len(tiles):
            continue
        rows = -(-len(tiles) // columns)
        h, w = tiles.shape[1:3]
        canvas = np.full((rows * (h + 2) + 2, columns * (w + 2) + 2, 3), 255, dtype=np.uint8)
        for i, tile in enumerate(tiles):
            r, k = divmod(i, columns)
            canvas[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + k * (w + 2) : 2 + k * (w + 2) + w] = tile
        scale = max(1, 256 // max(h, w))
        picture = Image.fromarray(canvas).resize(
            (canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST
        )
        path = folder / f"samples-{name}.png"
        with atomic_path(path) as tmp:
            picture.save(tmp, format="PNG")
        paths.append(path)
    return paths
