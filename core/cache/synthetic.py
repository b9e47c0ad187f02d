"""Synthetic chest-CT-like volumes with lung and trachea masks: test data and benchmark data that need no download.

Intensities are in Hounsfield units (int16) as in LUNA16: air -1000, lung parenchyma about -850, soft tissue
about 40, bone about 700, with Gaussian noise. Mask classes follow ct-seg: 0 background, 1 and 2 the two
lungs, 3 the trachea.
"""

from __future__ import annotations

import numpy as np


def ct_volume(slices: int, size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An (slices, size, size) int16 HU volume and its uint8 mask; the same seed gives the same volume."""
    rng = np.random.default_rng(seed)
    z = np.linspace(-1.0, 1.0, slices, dtype=np.float32)[:, None, None]
    y = np.linspace(-1.0, 1.0, size, dtype=np.float32)[None, :, None]
    x = np.linspace(-1.0, 1.0, size, dtype=np.float32)[None, None, :]
    body_r = rng.uniform(0.8, 0.92)
    body = (x / body_r) ** 2 + (y / (0.75 * body_r)) ** 2 <= 1.0
    lung_extent = 1.0 - (z / rng.uniform(0.85, 1.0)) ** 2  # lungs taper towards apex and base
    mask = np.zeros((slices, size, size), dtype=np.uint8)
    for label, cx in ((1, -0.38), (2, 0.38)):
        rx, ry = rng.uniform(0.22, 0.3), rng.uniform(0.38, 0.48)
        lung = ((x - cx) / rx) ** 2 + ((y + 0.02) / ry) ** 2 <= np.clip(lung_extent, 0, None)
        mask[lung & body] = label
    trachea = (x**2 + (y + 0.25) ** 2 <= 0.06**2) & (z < rng.uniform(-0.1, 0.2))
    mask[trachea] = 3
    spine = (x**2 + (y - 0.55) ** 2 <= 0.1**2) & np.ones_like(z, dtype=bool)
    hu = np.full(mask.shape, -1000.0, dtype=np.float32)
    hu[np.broadcast_to(body, mask.shape)] = 40.0
    hu[spine & np.broadcast_to(body, mask.shape)] = 700.0
    hu[(mask == 1) | (mask == 2)] = -850.0
    hu[mask == 3] = -1000.0
    hu += rng.normal(0.0, 25.0, size=hu.shape).astype(np.float32)
    return np.clip(hu, -1024, 3071).astype(np.int16), mask
