"""Feature extraction, once per image x feature set x pipeline, through the H5 feature cache.

Feature sets read from the same network share one forward pass; a network is built only when some image's
features are missing from the cache. What is returned is what every fold and configuration then reuses.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .extractors import FeatureSetSpec
from .feature_cache import cache_dir, cache_key, cache_path, read_cache, write_cache
from .pipelines import pipeline_for

Say = Callable[[str], None]


@dataclass
class ExtractedFeatures:
    """Features of every image under one pipeline, by feature-set name, and how they were obtained."""

    pipeline: str
    blocks: dict[str, np.ndarray]
    weights: dict[str, str] = field(default_factory=dict)
    random_weights: list[str] = field(default_factory=list)
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def extract(
    images: Sequence[np.ndarray],
    hashes: Sequence[str],
    specs: Sequence[FeatureSetSpec],
    pipeline_name: str,
    weights: str = "pretrained",
    weights_dir: Path | None = None,
    batch_size: int = 16,
    folder: Path | None = None,
    say: Say = print,
) -> ExtractedFeatures:
    """Features of ``images`` (uint8 arrays, any size) for every spec under ``pipeline_name``."""
    import torch

    from . import networks

    started = time.perf_counter()
    folder = folder or cache_dir()
    result = ExtractedFeatures(pipeline_name, {})
    groups: dict[tuple[str, str, str], list[FeatureSetSpec]] = defaultdict(list)
    for spec in specs:
        groups[spec.network_key].append(spec)
    for group in groups.values():
        first = group[0]
        path = networks.locate_weights(first, weights, weights_dir)
        label = networks.weights_label(path)
        pipeline = pipeline_for(first.library, first.network, first.weights, pipeline_name)
        known: dict[str, dict[str, np.ndarray]] = {}
        keys = {spec.name: cache_key(spec, pipeline, label) for spec in group}
        for spec in group:
            rows, note = read_cache(cache_path(folder, spec, pipeline), keys[spec.name])
            if note:
                say(note)
                result.notes.append(note)
            known[spec.name] = rows
        missing = sorted({i for i, h in enumerate(hashes) for s in group if h not in known[s.name]})
        if missing:
            loaded = networks.load_network(first, path)
            reader = networks.TapReader(loaded.model, group)
            say(
                f"extracting {', '.join(s.name for s in group)} ({first.network}, {pipeline_name}) "
                f"for {len(missing)} images"
            )
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                out = reader(torch.stack([pipeline(images[i]) for i in chunk]))
                for spec in group:
                    for row, i in zip(out[spec.name].numpy(), chunk, strict=True):
                        known[spec.name][hashes[i]] = row
            for spec in group:
                write_cache(cache_path(folder, spec, pipeline), keys[spec.name], known[spec.name])
        result.computed += len(missing) * len(group)
        result.cached += (len(hashes) - len(missing)) * len(group)
        for spec in group:
            result.blocks[spec.name] = np.stack([known[spec.name][h] for h in hashes]).astype(np.float32)
            result.weights[spec.name] = label
            if path is None:
                result.random_weights.append(spec.name)
    result.seconds = time.perf_counter() - started
    return result
