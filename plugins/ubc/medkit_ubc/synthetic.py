"""Procedural FLAIR-like brain slices with one lesion each: ubc's embedded default data (no download).

Each synthetic patient is a short axial stack through a brain (skull-stripped as in BraTS: dark background,
brain parenchyma with a brighter cortical rim, dark CSF-suppressed ventricles, a smooth bias field, Rician-like
noise) holding one irregular lesion whose cross-section grows and shrinks along the stack. The two classes
differ in appearance only - their sizes and places are drawn from the same ranges, so a model must look:

- ``ring`` (HGG-like): oedema halo, an enhancing bright rim of varying strength, a dark necrotic core;
- ``diffuse`` (LGG-like): one homogeneous hyperintense lesion with a soft edge.

The mask is the whole lesion (for ``ring``: halo, rim and core), as BraTS' union of tumour labels.

Every brain also holds one or two small bright structures that are not lesion (not in the mask) - a rimmed
cyst-like ring or a homogeneous bright spot, drawn independently of the class - and a per-patient contrast
curve (gamma), so that a ring or a bright blob somewhere in the image does not by itself tell the class: the
classifier has to judge the lesion's own appearance, and where the lesion is is what the mask teaches (the
paper's reason for the U-Net branch). ``VERSION`` names the generator in the cache key; change it with the
generator.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("diffuse", "ring")
VERSION = 2  # v1: no distractors, no gamma


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


def brain_patient(
    label: int, slices: int, size: int, seed: int, distractors: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(slices, size, size) float32 intensities in about [0, 1] and a uint8 {0, 1} lesion mask.

    ``distractors=False`` leaves out the non-lesion structures and nothing else (the same seed gives the same
    brain, lesion and noise), to show what they add."""
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
    gamma = rng.uniform(0.75, 1.35)
    # distractors: small non-lesion structures on the other side of the brain, of either kind whatever the class
    mimics = []
    for _ in range(rng.integers(1, 3)):
        m_angle = angle + np.pi + rng.uniform(-0.9, 0.9)
        m_distance = rng.uniform(0.25, 0.5)
        mimics.append(
            (
                int(rng.integers(0, 2)),  # 1: a rimmed ring, 0: a homogeneous spot
                m_distance * np.sin(m_angle) * ry,
                m_distance * np.cos(m_angle) * rx,
                rng.uniform(0.06, 0.11),
                rng.uniform(0.15, 0.35),
            )
        )
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
        lesion_now = masks[k] > 0
        for kind, my, mx, m_radius, strength in mimics if distractors else []:
            d = np.sqrt((y - my) ** 2 + (x - mx) ** 2) / (m_radius * (1 - 0.25 * abs(t)))
            if kind == 1:
                bump = strength * np.exp(-(((d - 0.7) / 0.2) ** 2)) - 0.12 * (d < 0.45)
            else:
                bump = strength * np.clip((1 - d) / 0.3, 0, 1)
            image = np.where((brain <= 1) & ~lesion_now, image + bump, image)
        image = np.clip(image, 0, None) ** gamma
        noisy = np.abs(image * bias + rng.normal(0, noise_level, image.shape))  # magnitude images: Rician
        images[k] = noisy.astype(np.float32)
    return images, masks
