"""Procedural FLAIR-like brain slices with one lesion each: ubc's embedded default data (no download).

Each synthetic patient is a short axial stack through a brain (skull-stripped as in BraTS: dark background,
brain parenchyma with a brighter cortical rim, dark CSF-suppressed ventricles, a smooth bias field, Rician-like
noise) holding one irregular lesion whose cross-section grows and shrinks along the stack. The two classes
differ in appearance only - their sizes and places are drawn from the same ranges, so a model must look:

- ``ring`` (HGG-like): oedema halo, an enhancing bright rim of varying strength, a dark necrotic core;
- ``diffuse`` (LGG-like): one homogeneous hyperintense lesion with a soft edge.

The mask is the whole lesion (for ``ring``: halo, rim and core), as BraTS' union of tumour labels.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("diffuse", "ring")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    return np.meshgrid(coords, coords, indexing="ij")


def _smooth_texture(y: np.ndarray, x: np.ndarray, rng: np.random.Generator, waves: int = 6) -> np.ndarray:
    texture = np.zeros_like(x)
    for _ in range(waves):
        fy, fx = rng.uniform(1.5, 6.0, size=2)
        texture += np.cos(fy * np.pi * y + rng.uniform(0, 2 * np.pi)) * np.cos(
            fx * np.pi * x + rng.uniform(0, 2 * np.pi)
        )
    return texture / waves


def brain_patient(label: int, slices: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(slices, size, size) float32 intensities in about [0, 1] and a uint8 {0, 1} lesion mask."""
    rng = np.random.default_rng(seed)
    y, x = _grid(size)
    ry, rx = rng.uniform(0.8, 0.92), rng.uniform(0.68, 0.8)
    brain = (y / ry) ** 2 + (x / rx) ** 2
    base = 0.42 + 0.05 * _smooth_texture(y, x, rng)
    cortex = np.clip((brain - 0.72) / 0.2, 0, 1) * 0.12  # grey matter is a little brighter in FLAIR
    bias = 1 + 0.15 * (rng.uniform(-1, 1) * x + rng.uniform(-1, 1) * y)
    # the lesion: centre off the midline, a 3-D radius, an irregular outline
    angle = rng.uniform(0, 2 * np.pi)
    distance = rng.uniform(0.2, 0.45)
    cy, cx = distance * np.sin(angle) * ry, distance * np.cos(angle) * rx
    radius = rng.uniform(0.16, 0.32)
    harmonics = [(j, rng.uniform(0.0, 0.12), rng.uniform(0, 2 * np.pi)) for j in (2, 3, 5)]
    theta = np.arctan2(y - cy, x - cx)
    outline = 1 + sum(a * np.cos(j * theta + phase) for j, a, phase in harmonics)
    contrast = rng.uniform(0.22, 0.42)
    core_ratio, rim_width, rim = rng.uniform(0.4, 0.65), rng.uniform(0.1, 0.2), rng.uniform(0.1, 0.4)
    noise_level = rng.uniform(0.02, 0.05)
    along = np.linspace(-1.15, 1.15, slices) + rng.uniform(-0.1, 0.1)
    images = np.empty((slices, size, size), dtype=np.float32)
    masks = np.zeros((slices, size, size), dtype=np.uint8)
    for k, t in enumerate(along):
        image = np.where(brain <= 1, base + cortex, 0.0).astype(np.float32)
        ventricle = 0.09 * (1 - abs(t) / 2)
        for side in (-1, 1):  # dark, CSF-suppressed lateral ventricles
            image[((y + 0.05) / (2.2 * ventricle + 0.02)) ** 2 + ((x - side * 0.1) / ventricle) ** 2 <= 1] = (
                0.12
            )
        section = radius * np.sqrt(max(0.0, 1 - t * t))
        if section > 0.02:
            d = np.sqrt((y - cy) ** 2 + (x - cx) ** 2) / (section * outline)
            lesion = (d <= 1) & (brain <= 1)
            if label == 1:  # ring: halo, enhancing rim, necrotic core
                halo = contrast * 0.6 * np.clip((1 - d) / 0.25, 0, 1)
                ring = rim * np.exp(-(((d - core_ratio) / rim_width) ** 2))
                image = np.where(lesion, image + halo + ring, image)
                image = np.where(lesion & (d < core_ratio - rim_width), image - 0.3 * contrast - 0.1, image)
            else:  # diffuse: homogeneous with a soft edge and faint texture
                fill = contrast * np.clip((1 - d) / 0.3, 0, 1) * (1 + 0.15 * _smooth_texture(y, x, rng, 3))
                image = np.where(lesion, image + fill, image)
            masks[k] = lesion
        noisy = np.abs(image * bias + rng.normal(0, noise_level, image.shape))  # magnitude images: Rician
        images[k] = noisy.astype(np.float32)
    return images, masks
