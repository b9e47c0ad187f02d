"""PNG pictures of anomaly maps: the test image beside the image under its heat map, ground truth outlined.

One colour scale for the whole sample (by default the range of all the maps given), so that pictures of one
category compare: a hot spot means the same score in every file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

CONTOUR = (255, 255, 255)


def outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` that touch a pixel outside it (the ground-truth contour)."""
    from scipy.ndimage import binary_erosion

    mask = mask > 0
    return mask & ~binary_erosion(mask, border_value=0)


def overlay(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    mask: np.ndarray | None = None,
    scale: tuple[float, float] | None = None,
    opacity: float = 0.5,
) -> np.ndarray:
    """``image`` (H, W, 3) uint8 under ``anomaly_map`` (H, W) coloured with 'jet' over ``scale`` (low, high)."""
    import matplotlib

    if image.shape[:2] != anomaly_map.shape:
        raise ValueError(f"image {image.shape[:2]} and anomaly map {anomaly_map.shape} differ in size")
    low, high = scale or (float(anomaly_map.min()), float(anomaly_map.max()))
    unit = np.clip((anomaly_map - low) / max(high - low, 1e-12), 0.0, 1.0)
    heat = matplotlib.colormaps["jet"](unit)[..., :3] * 255.0
    picture = ((1 - opacity) * image + opacity * heat).astype(np.uint8)
    if mask is not None:
        picture[outline(mask)] = CONTOUR
    return picture


def sample_indices(labels: Sequence[int], count: int, seed: int = 1024) -> list[int]:
    """Up to ``count`` indices, half anomalous where there are enough of them, drawn reproducibly."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    anomalous, good = np.flatnonzero(labels > 0), np.flatnonzero(labels == 0)
    take_anomalous = min(anomalous.size, max(count - good.size, (count + 1) // 2))
    take_good = min(good.size, count - take_anomalous)
    chosen = [
        *rng.choice(anomalous, take_anomalous, replace=False),
        *rng.choice(good, take_good, replace=False),
    ]
    return sorted(int(i) for i in chosen)


def write_overlays(
    folder: Path,
    images: Sequence[np.ndarray],
    maps: Sequence[np.ndarray] | np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray,
    names: Sequence[str],
    labels: Sequence[int],
    count: int = 12,
    scale: tuple[float, float] | None = None,
    seed: int = 1024,
) -> list[Path]:
    """Write ``<name>.png`` (image | overlay) for a sample of ``count`` test images; returns the paths.

    ``images`` are (H, W, 3) uint8 pictures as the model saw them (``Preprocess.unnormalise``), ``maps`` and
    ``masks`` (H, W) each, ``names`` file stems (e.g. ``crack_003``), ``labels`` 0 good / 1 anomalous.
    """
    if not len(images) == len(maps) == len(masks) == len(names) == len(labels):
        raise ValueError("images, maps, masks, names and labels must have one entry per test image")
    chosen = sample_indices(labels, count, seed)
    if scale is None and chosen:
        scale = (float(min(np.min(maps[i]) for i in chosen)), float(max(np.max(maps[i]) for i in chosen)))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i in chosen:
        image, anomaly_map = np.asarray(images[i]), np.asarray(maps[i]).squeeze()
        panel = np.concatenate(
            [image, overlay(image, anomaly_map, np.asarray(masks[i]).squeeze(), scale)], axis=1
        )
        path = folder / f"{names[i]}.png"
        save_png(path, panel)
        written.append(path)
    return written


def save_png(path: Path, picture: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 picture as PNG atomically: a killed run leaves no half-written picture."""
    from PIL import Image

    from medkit.atomic import atomic_write

    atomic_write(Path(path), lambda handle: Image.fromarray(picture).save(handle, format="PNG"))
