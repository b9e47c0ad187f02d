"""A second chest-CT phantom generator, for checking ct-seg's defaults on data they were not tuned on.

It shares nothing with `medkit_ct_seg.phantoms` but the class order (0 background, 1 left lung, 2 right lung,
3 trachea and main bronchi) and the LPS layout (x towards the patient's left, y towards posterior). What it adds
are the confounders real CT has and the embedded phantoms lack:
- air-filled structures that are not airway: intrapulmonary bronchi (labelled lung, as LUNA16's masks keep
  them), an oesophagus with an air lumen behind the trachea (background), and bowel gas below the diaphragm;
- bean-shaped lungs with a medial notch, a patient table under the body, streaky spatially correlated noise and
  a per-volume intensity offset (scanner calibration);
- a trachea that drifts, narrows and is slightly oval.

`write_folder` stores volumes as NIfTI in `images/` and `masks/` with the same file names, as users bring them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LEFT_LUNG, RIGHT_LUNG, AIRWAY = 1, 2, 3


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _superellipse(x: np.ndarray, y: np.ndarray, rx: float, ry: float, power: float) -> np.ndarray:
    return np.abs(x / rx) ** power + np.abs(y / ry) ** power <= 1.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], std: float) -> np.ndarray:
    """Noise correlated over a few pixels and streaky along x, as reconstruction kernels make it."""
    white = rng.normal(0.0, 1.0, size=shape)
    kernel = np.array([0.25, 0.5, 1.0, 0.5, 0.25])
    streaky = np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="same"), 1, white)
    smooth = np.apply_along_axis(lambda col: np.convolve(col, kernel[1:4], mode="same"), 0, streaky)
    return (smooth / smooth.std() * std).astype(np.float32)


def _lung(x: np.ndarray, y: np.ndarray, side: float, scale: float, grow: float) -> np.ndarray:
    """A bean: an ellipse with a medial notch (the hilum), ``side`` -1 for the right lung, +1 for the left."""
    cx = side * 0.38
    body = _ellipse(x, y, cx, 0.02, 0.25 * scale * grow + 0.02, 0.46 * scale * grow + 0.02)
    notch = _ellipse(x, y, side * 0.12, -0.05, 0.08 * grow + 0.01, 0.16 * grow + 0.01)
    return body & ~notch


def _airway(x: np.ndarray, y: np.ndarray, t: float, carina: float, drift: float) -> np.ndarray:
    """Trachea (oval, drifting, narrowing) to the carina, then main bronchi that enter the lungs."""
    cx = drift * np.sin(3.0 * t)
    if t < carina:
        radius = 0.05 - 0.012 * t / carina
        return _ellipse(x, y, cx, -0.25, radius * 1.15, radius)
    spread = (t - carina) * 1.4
    if spread > 0.38:
        return np.zeros_like(x, dtype=bool)
    right = _ellipse(x, y, cx - spread, -0.23, 0.035, 0.032)
    left = _ellipse(x, y, cx + spread * 0.85, -0.23, 0.03, 0.028)
    return right | left


def phantom_b(slices: int = 40, size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One (slices, size, size) int16 HU volume and its uint8 mask, drawn from ``seed``."""
    rng = np.random.default_rng(10_000 + seed)
    coords = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    body_rx, body_ry, power = rng.uniform(0.78, 0.92), rng.uniform(0.55, 0.68), rng.uniform(2.2, 3.5)
    lung_top, lung_bottom = rng.uniform(0.03, 0.12), rng.uniform(0.78, 0.9)
    carina, drift = rng.uniform(0.3, 0.45), rng.uniform(0.0, 0.05)
    scales = {RIGHT_LUNG: rng.uniform(1.02, 1.12), LEFT_LUNG: rng.uniform(0.86, 0.97)}
    offset = rng.normal(0.0, 25.0)  # per-scanner calibration offset in HU
    bronchi = [
        (rng.uniform(-0.6, 0.6), rng.uniform(-0.35, 0.35), rng.uniform(0.015, 0.03)) for _ in range(14)
    ]
    image = np.empty((slices, size, size), dtype=np.int16)
    mask = np.zeros((slices, size, size), dtype=np.uint8)
    for k in range(slices):
        t = k / max(slices - 1, 1)
        hu = np.full((size, size), -1000.0, dtype=np.float32)
        hu[(y > body_ry + 0.12) & (y < body_ry + 0.18)] = 300.0  # the patient table
        body = _superellipse(x, y - 0.02, body_rx, body_ry, power)
        hu[body] = -90.0
        hu[_superellipse(x, y - 0.02, body_rx - 0.07, body_ry - 0.07, power)] = 45.0
        labels = np.zeros((size, size), dtype=np.uint8)
        if lung_top < t < lung_bottom:
            grow = np.sin(np.pi * (t - lung_top) / (lung_bottom - lung_top)) ** 0.5
            for label, side in ((RIGHT_LUNG, -1.0), (LEFT_LUNG, 1.0)):
                lung = _lung(x, y, side, scales[label], grow) & body
                labels[lung] = label
                hu[lung] = -820.0 + 40.0 * np.sin(9 * x[lung] + 7 * y[lung])  # parenchyma texture
            in_lung = labels > 0
            for bx, by, radius in bronchi:  # air inside the lungs that is lung, not airway
                hu[_ellipse(x, y, bx, by + 0.1 * t, radius, radius) & in_lung] = -990.0
        elif t >= lung_bottom:
            for gx, gy in ((-0.3, 0.1), (0.25, 0.25)):  # bowel gas below the diaphragm
                hu[_ellipse(x, y, gx, gy, 0.08, 0.05) & body] = -980.0
        hu[_ellipse(x, y, 0.06, -0.1, 0.05, 0.035) & body] = 30.0  # oesophagus wall
        hu[_ellipse(x, y, 0.06, -0.1, 0.02, 0.012) & body] = -980.0  # its air lumen (background)
        airway = _airway(x, y, t, carina, drift) & body
        labels[airway] = AIRWAY
        hu[airway] = -1000.0
        hu[_ellipse(x, y, 0.0, 0.48, 0.1, 0.09) & body] = 650.0  # vertebra
        hu += offset + _smooth_noise(rng, (size, size), 28.0)
        image[k] = np.clip(hu, -1024, 3071).astype(np.int16)
        mask[k] = labels
    return image, mask


def write_nifti(array: np.ndarray, path: Path, spacing: tuple[float, float, float]) -> None:
    """An LPS (z, y, x) array as NIfTI through SimpleITK, so that it reads back in the same orientation."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))  # ITK orders spacing x, y, z
    sitk.WriteImage(image, str(path), useCompression=True)


def write_folder(folder: Path, volumes: list[tuple[np.ndarray, np.ndarray]], spacing=(2.0, 0.8, 0.8)) -> Path:
    """``folder/images/caseNNN.nii.gz`` and ``folder/masks/caseNNN.nii.gz``; returns ``folder``."""
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i, (image, mask) in enumerate(volumes):
        write_nifti(image, folder / "images" / f"case{i:03d}.nii.gz", spacing)
        write_nifti(mask, folder / "masks" / f"case{i:03d}.nii.gz", spacing)
    return folder
