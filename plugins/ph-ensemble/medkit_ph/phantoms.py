"""Procedural axial CT slices at the level of the pulmonary trunk, in four pulmonary-hypertension grades.

The grade is carried by anatomy, as on real scans: the pulmonary trunk widens with mean pulmonary artery
pressure, and radiologists read it relative to the ascending aorta (a PA:AA ratio above 1 suggests PH). Each
grade draws its ratio from a normal distribution (means 0.84, 0.97, 1.10, 1.24; sd 0.045), so neighbouring grades
overlap a little; the aorta's own size, the body, the lungs, the pose and the noise vary independently, so no
single absolute size or intensity gives the grade away. Slices are rendered in HU and windowed for the
mediastinum (W 500, L 90) to 8-bit, the way exported PNG slices usually look.

Layout (radiological convention: the patient's right on the image's left, anterior up): body with a fat rim,
two lungs with vessels, the spine and sternum, and in the mediastinum the ascending aorta, the pulmonary trunk
with its right and left branches, the descending aorta and the superior vena cava.
"""

from __future__ import annotations

import numpy as np

GRADE_RATIOS = (0.8, 1.0, 1.2, 1.4)
RATIO_SD = 0.05
WINDOW = (-160.0, 340.0)


def _ellipse(gx: np.ndarray, gy: np.ndarray, cx: float, cy: float, ax: float, ay: float, angle: float = 0.0):
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = gx - cx, gy - cy
    u, v = (c * dx + s * dy) / ax, (-s * dx + c * dy) / ay
    return u * u + v * v <= 1.0


def pa_ratio(grade: int, rng: np.random.Generator) -> float:
    return float(rng.normal(GRADE_RATIOS[grade], RATIO_SD))


def ct_slice(grade: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One slice (size x size uint8) of ``grade`` (0..3) and its PA:AA diameter ratio."""
    from scipy.ndimage import gaussian_filter

    ratio = pa_ratio(grade, rng)
    # pose: a small rotation, scale and shift of the whole patient
    angle, scale = np.deg2rad(rng.uniform(-4, 4)), rng.uniform(0.95, 1.05)
    shift = rng.uniform(-0.04, 0.04, size=2)
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(axis, axis)
    c, s = np.cos(angle), np.sin(angle)
    gx = (c * (x - shift[0]) + s * (y - shift[1])) / scale
    gy = (-s * (x - shift[0]) + c * (y - shift[1])) / scale

    hu = np.full((size, size), -1000.0)
    body_a, body_b = rng.uniform(0.8, 0.9), rng.uniform(0.58, 0.68)
    hu[_ellipse(gx, gy, 0, 0.05, body_a, body_b)] = -100.0  # subcutaneous fat
    fat = rng.uniform(0.04, 0.09)
    hu[_ellipse(gx, gy, 0, 0.05, body_a - fat, body_b - fat)] = 45.0  # muscle and mediastinum
    for side in (-1, 1):
        lung = _ellipse(
            gx, gy, side * 0.43, 0.0, rng.uniform(0.27, 0.32), rng.uniform(0.4, 0.46), side * 0.15
        )
        hu[lung] = -860.0
        for _ in range(rng.integers(12, 22)):  # vessels in the lung
            vx, vy = side * 0.43 + rng.uniform(-0.22, 0.22), rng.uniform(-0.35, 0.35)
            hu[lung & _ellipse(gx, gy, vx, vy, *(rng.uniform(0.008, 0.025, size=2)))] = rng.uniform(-50, 120)
    hu[_ellipse(gx, gy, 0, 0.5, 0.11, 0.09)] = 650.0  # vertebral body
    hu[_ellipse(gx, gy, 0, 0.5, 0.08, 0.065)] = 250.0
    hu[_ellipse(gx, gy, 0, 0.63, 0.035, 0.03)] = 10.0  # spinal canal
    hu[_ellipse(gx, gy, 0, -0.5, 0.07, 0.03)] = 500.0  # sternum

    contrast = rng.uniform(210, 240)
    r_ao = rng.uniform(0.085, 0.095)  # ascending aorta radius
    r_pa = ratio * r_ao
    pa_x, pa_y = 0.06 + r_pa * 0.6, -0.2
    # pulmonary trunk and its branches: the right one passes behind the ascending aorta
    hu[_ellipse(gx, gy, pa_x - 0.16, -0.06, 0.2, r_pa * 0.55, -0.35)] = contrast * 0.97
    hu[_ellipse(gx, gy, pa_x + 0.1, -0.04, 0.14, r_pa * 0.5, 0.9)] = contrast * 0.97
    hu[_ellipse(gx, gy, pa_x, pa_y, r_pa, r_pa * rng.uniform(0.92, 1.05))] = contrast * 0.97
    hu[_ellipse(gx, gy, -0.13, -0.16, r_ao, r_ao * rng.uniform(0.95, 1.05))] = contrast
    r_da = r_ao * rng.uniform(0.7, 0.85)
    hu[_ellipse(gx, gy, 0.14, 0.33, r_da, r_da)] = contrast * 0.98  # descending aorta
    hu[_ellipse(gx, gy, -0.25, -0.1, 0.045, 0.04)] = contrast * rng.uniform(0.6, 1.2)  # superior vena cava

    hu = gaussian_filter(hu, sigma=size / 256) + rng.normal(0, rng.uniform(10, 20), size=hu.shape)
    low, high = WINDOW
    return (np.clip((hu - low) / (high - low), 0, 1) * 255).round().astype(np.uint8), ratio


def class_counts(total: int, grades: int = 4) -> list[int]:
    """``total`` images shared out over the grades as evenly as possible."""
    return [total // grades + (1 if g < total % grades else 0) for g in range(grades)]
