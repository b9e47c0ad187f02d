"""Procedural FLAIR-like brain slices with one lesion each: ubc's embedded default data (no download).

Each synthetic patient is a short axial stack through a brain (skull-stripped as in BraTS: dark background,
brain parenchyma with a brighter cortical rim, dark CSF-suppressed ventricles, a smooth bias field, Rician-like
noise) holding one irregular lesion whose cross-section grows and shrinks along the stack. The class is decided
by the lesion, as tumour grade is in BraTS (paper 003, section 3: LGG vs HGG on FLAIR):

- ``diffuse`` (LGG-like): a homogeneous hyperintense lesion with a soft edge and faint texture;
- ``ring`` (HGG-like): a heterogeneous lesion - bright oedema around an enhancing rim and a necrotic core darker
  than brain; the core's share of the radius (0.3-0.6), its darkness and the rim's brightness vary per patient, so
  some lesions show their grade faintly.

Sizes and places are drawn from the same ranges in both classes (a test checks their mean areas agree), so no
shortcut is left outside the lesion. Every brain also holds one or two small homogeneous bright spots that are
not lesion (not in the mask), alike in both classes: a bright blob does not tell the class, and the dark
ventricles are a dark structure in every brain, so "something dark" does not either - only a dark core *inside*
the lesion does. Where the lesion is is what the mask teaches (the paper's reason for the U-Net branch).
``VERSION`` names the generator in the cache key; change it with the generator.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ("diffuse", "ring")
# v1: no distractors; v2: ring-shaped distractors in both classes, a faint rim and a per-patient gamma 0.75-1.35
# (the class hid in texture: `medkit run ubc` ended at test accuracy 0.54); v3: the class is the lesion's
# structure (a dark necrotic core inside a bright rim vs homogeneous), distractors are homogeneous spots only
VERSION = 3


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

    ``distractors=False`` leaves out the non-lesion spots and nothing else (the same seed gives the same
    brain, lesion and noise), to show what they add."""
    rng = np.random.default_rng(seed)
    # the class's own textures come from a second stream, so that the same seed gives the same brain, lesion
    # outline, spots and noise in both classes: the images of one seed differ inside the mask only
    lesion_rng = np.random.default_rng([seed, 1])
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
    radius = rng.uniform(0.18, 0.32)
    harmonics = [(j, rng.uniform(0.0, 0.12), rng.uniform(0, 2 * np.pi)) for j in (2, 3, 5)]
    theta = np.arctan2(y - cy, x - cx)
    outline = 1 + sum(a * np.cos(j * theta + phase) for j, a, phase in harmonics)
    contrast = rng.uniform(0.25, 0.4)
    # how far the lesion shows its grade: the core's share of the radius, how dark it is, how bright the rim
    core_ratio, core_level, rim = rng.uniform(0.3, 0.6), rng.uniform(0.12, 0.3), rng.uniform(0.05, 0.25)
    noise_level = rng.uniform(0.02, 0.05)
    gamma = rng.uniform(0.85, 1.15)
    # distractors: small homogeneous spots on the other side of the brain, alike in both classes
    spots = []
    for _ in range(rng.integers(1, 3)):
        s_angle = angle + np.pi + rng.uniform(-0.9, 0.9)
        s_distance = rng.uniform(0.25, 0.5)
        spots.append(
            (
                s_distance * np.sin(s_angle) * ry,
                s_distance * np.cos(s_angle) * rx,
                rng.uniform(0.06, 0.11),
                rng.uniform(0.2, 0.35),
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
            if label == 1:  # ring: oedema, a thick enhancing rim, a necrotic core as dark as CSF
                oedema = contrast * np.clip((1 - d) / 0.25, 0, 1)
                ring = rim * np.exp(-(((d - core_ratio - 0.12) / 0.14) ** 2))
                image = np.where(lesion, image + oedema + ring, image)
                core = core_level + 0.04 * _smooth_texture(y, x, lesion_rng, 2)
                image = np.where(lesion & (d < core_ratio), core, image)
            else:  # diffuse: homogeneous with a soft edge and faint texture
                fill = (
                    contrast * np.clip((1 - d) / 0.3, 0, 1) * (1 + 0.3 * _smooth_texture(y, x, lesion_rng, 3))
                )
                image = np.where(lesion, image + fill, image)
            masks[k] = lesion
        lesion_now = masks[k] > 0
        for my, mx, s_radius, strength in spots if distractors else []:
            d = np.sqrt((y - my) ** 2 + (x - mx) ** 2) / (s_radius * (1 - 0.25 * abs(t)))
            bump = strength * np.clip((1 - d) / 0.3, 0, 1)
            image = np.where((brain <= 1) & ~lesion_now, image + bump, image)
        image = np.clip(image, 0, None) ** gamma
        noisy = np.abs(image * bias + rng.normal(0, noise_level, image.shape))  # magnitude images: Rician
        images[k] = noisy.astype(np.float32)
    return images, masks
