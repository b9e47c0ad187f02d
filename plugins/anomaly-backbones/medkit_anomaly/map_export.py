"""Per-image anomaly-map files: each map as ``.npy`` beside its PNG heat-map overlay, and the table listing them.

A map is saved at the model's resolution, float32, exactly as ``model.predict`` returns it: the grid the model
scored (the centre crop of the resized image, ``crop`` x ``crop``), where the fit's pixel threshold is defined.
Resampling it onto the file's own pixels would invent scores outside the crop. The PNG shows that picture beside
the picture under the map. Its colour scale runs from 0 to twice the fit's pixel threshold, so the threshold is
the middle of the scale in every file (as in anomalib's normalised maps, where it is 0.5) and pictures of
different runs compare; a model without a threshold gets each picture's own range instead.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medkit.atomic import atomic_write, atomic_write_text

from .overlays import overlay, save_png

MAPS_DIR = "maps"
TABLE_FILE = "predictions.csv"
# the columns every per-image table has; a recipe may put its own (category, ground truth) in front
TABLE_COLUMNS = ("name", "image", "score", "threshold", "anomalous", "map", "overlay")


@dataclass(frozen=True)
class MapFiles:
    """Where one image's map and overlay went, relative to the run directory (as the table lists them)."""

    map: str
    overlay: str


def colour_scale(anomaly_map: np.ndarray, pixel_threshold: float) -> tuple[float, float]:
    """(low, high) of the heat map: 0 to twice the pixel threshold, or the map's own range without one."""
    if math.isfinite(pixel_threshold) and pixel_threshold > 0:
        return 0.0, 2.0 * pixel_threshold
    return float(anomaly_map.min()), float(anomaly_map.max())


def save_map(path: Path, anomaly_map: np.ndarray) -> None:
    """The map as a float32 ``.npy`` file, written atomically."""
    array = np.asarray(anomaly_map, dtype=np.float32)
    atomic_write(Path(path), lambda handle: np.save(handle, array))


def export_map(
    run_dir: Path,
    name: str,
    anomaly_map: np.ndarray,
    pixel_threshold: float,
    picture: np.ndarray | None = None,
    outline: np.ndarray | None = None,
) -> MapFiles:
    """Write ``maps/<name>.npy`` and, given the ``picture``, ``maps/<name>.png`` (picture | picture under the map,
    ``outline`` in white).

    ``name`` is a relative path without suffix (``line2/img_07``), ``anomaly_map`` an (S, S) map and ``picture``
    the (S, S, 3) uint8 image the model saw. Without a picture the overlay is "" in the table.
    """
    stem = Path(MAPS_DIR) / name
    map_path, png_path = stem.parent / f"{stem.name}.npy", stem.parent / f"{stem.name}.png"
    save_map(run_dir / map_path, anomaly_map)
    if picture is None:
        return MapFiles(map_path.as_posix(), "")
    heat = overlay(picture, anomaly_map, outline, colour_scale(anomaly_map, pixel_threshold))
    save_png(run_dir / png_path, np.concatenate([picture, heat], axis=1))
    return MapFiles(map_path.as_posix(), png_path.as_posix())


def decision(score: float, threshold: float) -> bool | str:
    """Anomalous when the score passes the threshold; "" (no decision) when the model has no threshold."""
    return bool(score > threshold) if math.isfinite(threshold) else ""


def write_table(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = TABLE_COLUMNS) -> None:
    """One CSV row per image, written atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(path), text.getvalue())
