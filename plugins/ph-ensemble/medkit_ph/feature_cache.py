"""The H5 feature cache: features of one feature set under one pipeline, one row per image, keyed by content.

One file per (feature set, pipeline) in the user cache (``medkit/ph-ensemble/features``)::

    /            attrs: key (JSON: format, feature set, pipeline, weights version, library versions)
    /hashes      (N,) the sha256 of each image's decoded pixels (so a renamed file is still found)
    /features    (N, D) float32

A file whose key differs from the run's (other weights, another pipeline, another timm) is never read: the
run says what differs, computes afresh and replaces the file. Files are replaced atomically.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from medkit.atomic import atomic_path
from medkit.user_cache import cache_folder

from .extractors import FeatureSetSpec
from .pipelines import Pipeline

FORMAT = 1


def cache_dir() -> Path:
    return cache_folder("ph-ensemble", "features")


def cache_key(spec: FeatureSetSpec, pipeline: Pipeline, weights: str) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "format": FORMAT,
        "feature_set": asdict(spec),
        "pipeline": json.loads(pipeline.describe()),
        "weights": weights,
        "libraries": {name: version(name) for name in ("torch", "torchvision", "timm")},
    }


def cache_path(folder: Path, spec: FeatureSetSpec, pipeline: Pipeline) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec.name)
    return Path(folder) / f"{safe}-{pipeline.name}.h5"


def _differences(stored: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(stored) | set(wanted))
    out: list[str] = []
    for key in keys:
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} ({a!r} in the cache, {b!r} now)")
    return out


def read_cache(path: Path, key: dict[str, Any]) -> tuple[dict[str, np.ndarray], str]:
    """The cached rows by image hash, and a note (empty, or why the file was not used)."""
    import h5py

    if not path.is_file():
        return {}, ""
    try:
        with h5py.File(path, "r") as handle:
            stored = json.loads(handle.attrs.get("key", "{}"))
            if stored != key:
                diff = "; ".join(_differences(stored, key)) or "unreadable key"
                return (
                    {},
                    f"feature cache {path} was written for another extractor version ({diff}): not used",
                )
            hashes = [h.decode() for h in handle["hashes"][:]]
            rows = handle["features"][:]
    except (OSError, KeyError, ValueError) as err:
        return {}, f"feature cache {path} cannot be read ({err}): not used"
    return dict(zip(hashes, rows, strict=True)), ""


def write_cache(path: Path, key: dict[str, Any], rows: dict[str, np.ndarray]) -> None:
    import h5py

    hashes = sorted(rows)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs["key"] = json.dumps(key, sort_keys=True)
        handle.create_dataset("hashes", data=np.array([h.encode() for h in hashes], dtype="S64"))
        handle.create_dataset(
            "features", data=np.stack([rows[h] for h in hashes]).astype(np.float32), compression="gzip"
        )
