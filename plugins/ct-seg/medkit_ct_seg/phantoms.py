"""Procedural chest-CT phantoms: the embedded default data of ct-seg (no download, the same on every machine).

Each phantom is an axial stack in LPS order (x towards the patient's left) with Hounsfield values as in
LUNA16: air -1000, lung parenchyma about -850 with vessels, fat -100, soft tissue and heart 40, bone 700,
Gaussian noise. Shapes change smoothly from slice to slice. Labels follow the report and LUNA16: 0 background,
1 left lung, 2 right lung (the larger, three lobes), 3 trachea and main bronchi - small, as in real CT (about
0.1 % of pixels).
"""

from __future__ import annotations

import numpy as np

LEFT_LUNG, RIGHT_LUNG, AIRWAY = 1, 2, 3  # the report's class order and LUNA16's mask values 3, 4, 5


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def phantom(slices: int = 48, size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One (slices, size, size) int16 HU volume and its uint8 label mask."""
    rng = np.random.default_rng(seed)
    coords = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    y, x = np.meshgrid(coords, coords, indexing="ij")  # y towards posterior, x towards the patient's left
    body_rx, body_ry = rng.uniform(0.82, 0.94), rng.uniform(0.58, 0.7)
    lung_top, lung_bottom = (
        rng.uniform(0.05, 0.15),
        rng.uniform(0.88, 0.97),
    )  # fractions of the stack (apex..base)
    carina = rng.uniform(0.32, 0.42)
    right_scale, left_scale = rng.uniform(1.0, 1.12), rng.uniform(0.82, 0.95)  # the right lung is the larger
    heart_side = rng.uniform(0.08, 0.16)
    vessels = rng.uniform(-0.8, 0.8, size=(40, 2)), rng.uniform(0.015, 0.035, size=40)
    noise = rng.normal(0.0, 20.0, size=(slices, size, size)).astype(np.float32)
    image = np.empty((slices, size, size), dtype=np.int16)
    mask = np.zeros((slices, size, size), dtype=np.uint8)
    for k in range(slices):
        t = k / max(slices - 1, 1)  # 0 at the apex (top), 1 at the base
        hu = np.full((size, size), -1000.0, dtype=np.float32)
        body = _ellipse(x, y, 0.0, 0.02, body_rx, body_ry)
        hu[body] = -100.0  # subcutaneous fat
        hu[_ellipse(x, y, 0.0, 0.02, body_rx - 0.06, body_ry - 0.06)] = 40.0  # muscle and mediastinum
        labels = np.zeros((size, size), dtype=np.uint8)
        if lung_top < t < lung_bottom:
            grow = np.sin(np.pi * (t - lung_top) / (lung_bottom - lung_top)) ** 0.6  # small apex, wide base
            for label, cx, scale in ((RIGHT_LUNG, -0.4, right_scale), (LEFT_LUNG, 0.4, left_scale)):
                lung = _ellipse(
                    x, y, cx * (0.9 + 0.1 * grow), 0.0, 0.26 * scale * grow + 0.02, 0.44 * scale * grow + 0.02
                )
                if label == LEFT_LUNG and t > 0.45:  # the heart indents the left lung towards the base
                    lung &= ~_ellipse(x, y, heart_side + 0.05, -0.2, 0.28 * (t - 0.3), 0.3)
                labels[lung & body] = label
                hu[lung & body] = -850.0
            if t > 0.45:
                hu[_ellipse(x, y, heart_side, -0.2, 0.3 * (t - 0.3) + 0.05, 0.3)] = 45.0
        airway = _airway(x, y, t, carina)
        labels[airway & body] = AIRWAY
        hu[airway & body] = -1000.0
        in_lung = (labels == RIGHT_LUNG) | (labels == LEFT_LUNG)
        for (vx, vy), radius in zip(
            *vessels, strict=True
        ):  # vessels run through the lungs (lung masks keep them)
            hu[_ellipse(x, y, vx, vy * 0.5, radius, radius) & in_lung] = 40.0
        hu[_ellipse(x, y, 0.0, 0.5, 0.09, 0.08) & body] = 700.0  # vertebra
        image[k] = np.clip(hu + noise[k], -1024, 3071).astype(np.int16)
        mask[k] = labels
    return image, mask


def _airway(x: np.ndarray, y: np.ndarray, t: float, carina: float) -> np.ndarray:
    """The trachea down to the carina, then two main bronchi running out and down into the lungs."""
    radius = 0.043  # about 0.1 % of all pixels, LUNA16's trachea share (spec, Task)
    if t < carina:
        return _ellipse(x, y, 0.0, -0.22, radius, radius)
    spread = (t - carina) * 1.6
    if spread > 0.45:  # the bronchi have entered the lungs and end there
        return np.zeros_like(x, dtype=bool)
    right = _ellipse(x, y, -spread, -0.2, radius * 0.85, radius * 0.85)
    left = _ellipse(x, y, spread * 0.8, -0.2, radius * 0.75, radius * 0.75)
    return right | left
