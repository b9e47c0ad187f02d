"""Procedural H&E histology patches in six tissue classes: gan-aug's embedded default data (no download).

The classes are named after PATH-DT-MSU's (paper 001) and differ in texture, as the real ones do:

- ``AT`` adipose tissue: large empty polygonal fat cells with thin pink membranes, a few flat nuclei on them;
- ``BG`` background: bare slide glass, near white, with faint smears and specks of debris;
- ``DYS`` dysplasia: glands - a pale lumen ringed by crowded, radially elongated (pseudostratified) nuclei;
- ``LP`` lamina propria: loose pale-pink stroma crowded with small round dark lymphocyte nuclei;
- ``MM`` muscularis mucosae: dense eosinophilic parallel fibres with sparse cigar-shaped nuclei;
- ``TUM`` tumour: dense sheets of large pleomorphic nuclei with a dark rim, coarse chromatin and nucleoli.

Each class is drawn as two stain-concentration maps (haematoxylin, eosin) on a canvas larger than the patch,
turned by a random angle (and mirrored half the time) and cut to the patch, then rendered by Beer-Lambert
optical-density mixing, rgb = I0 * exp(-(c_H * OD_H + c_E * OD_E)), with the Macenko et al. (2009) reference
H&E stain vectors. Stain vectors, stain amounts and the white level vary per synthetic slide and per image,
so mean colour alone does not tell every class apart; then a random focus blur and sensor noise.

Sizes are fractions of the patch, so every resolution shows the same field of view; the textures are designed
for 32-64 px (16-256 px works: below 32 the small nuclei are a pixel wide, above 64 the shapes look smooth).
Class shares follow PATH-DT-MSU's training set (AT 33,966 of 66,073 patches, DYS 1,002 the rarest; the shares
of BG, LP, MM and TUM are not in the paper and are chosen here), scaled to about 1,000 images; DYS is raised
from 1.5 % to 3 % so that a rare class still has 30 images. All classes are vectorised over the batch (numpy
and scipy.ndimage): about 2,000 images of 64 px in a few seconds on one core.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from medkit import UsageError

from .imageset import ImageSet

CLASS_NAMES = ("AT", "BG", "DYS", "LP", "MM", "TUM")
VERSION = 1  # names the generator in cache keys; change it with the generator
DEFAULT_TRAIN_COUNTS = {"AT": 480, "BG": 150, "DYS": 30, "LP": 120, "MM": 120, "TUM": 100}
DEFAULT_VAL_COUNTS = dict.fromkeys(CLASS_NAMES, 50)
MIN_RESOLUTION, MAX_RESOLUTION = 16, 256

# Macenko et al. 2009 reference stain vectors (optical density per unit concentration, R G B).
STAIN_H = np.array([0.5626, 0.7201, 0.4062])
STAIN_E = np.array([0.2159, 0.8012, 0.5581])
_CHUNK = 128  # images rendered at once: bounds memory at 256 px


class _Canvas:
    """A batch of ``n`` square canvases of ``size`` px, where ``unit`` px is the patch's width."""

    def __init__(self, rng: np.random.Generator, n: int, resolution: int) -> None:
        self.rng, self.n, self.unit = rng, n, float(resolution)
        self.size = int(np.ceil(resolution * np.sqrt(2))) + 2  # any rotation of the patch fits inside
        self.area = (self.size / self.unit) ** 2  # in patch areas

    def uniform(self, low: float, high: float) -> np.ndarray:
        """One value per image, shaped to broadcast over (n, size, size)."""
        return self.rng.uniform(low, high, self.n)[:, None, None].astype(np.float32)

    def points(self, density: np.ndarray | float, weight: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        """Poisson points (``density`` per patch area, per image) as weighted impulses (n, size, size)."""
        counts = self.rng.poisson(np.broadcast_to(np.asarray(density).reshape(-1), (self.n,)) * self.area)
        image = np.repeat(np.arange(self.n), counts)
        flat = self.rng.integers(0, self.size * self.size, image.size) + image * self.size * self.size
        weights = self.rng.uniform(*weight, image.size)
        impulses = np.bincount(flat, weights, minlength=self.n * self.size * self.size)
        return impulses.reshape(self.n, self.size, self.size).astype(np.float32)

    def lattice(self, spacing: np.ndarray, jitter: float, keep: float) -> np.ndarray:
        """Impulses on a jittered square lattice of ``spacing`` (patch fractions, per image), each kept with
        probability ``keep``: packed cells that rarely overlap, unlike Poisson points."""
        flat_all = []
        for i, step in enumerate(np.ravel(spacing) * self.unit):
            ticks = np.arange(step / 2, self.size, step)
            yy, xx = (g.ravel() for g in np.meshgrid(ticks, ticks, indexing="ij"))
            yy, xx = (
                np.clip(g + self.rng.uniform(-jitter, jitter, g.size) * step, 0, self.size - 1)
                for g in (yy, xx)
            )
            chosen = self.rng.random(yy.size) < keep
            flat_all.append(
                i * self.size * self.size + yy[chosen].astype(int) * self.size + xx[chosen].astype(int)
            )
        flat = np.concatenate(flat_all)
        impulses = np.bincount(flat, self.rng.uniform(0.8, 1.3, flat.size), minlength=self.n * self.size**2)
        return impulses.reshape(self.n, self.size, self.size).astype(np.float32)

    def blobs(self, impulses: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
        """Gaussian blobs of the given widths (patch fractions), each peaking at its impulse's weight."""
        sy, sx = sigma_y * self.unit, sigma_x * self.unit
        return ndimage.gaussian_filter(impulses, (0, sy, sx), truncate=3.0) * np.float32(2 * np.pi * sy * sx)

    def field(self, sigma_y: float, sigma_x: float | None = None) -> np.ndarray:
        """Smooth zero-mean, unit-variance noise with correlation lengths ``sigma`` (patch fractions)."""
        sy, sx = sigma_y * self.unit, (sigma_y if sigma_x is None else sigma_x) * self.unit
        # coarse fields are drawn on a grid 4x smaller and zoomed: the filter dominates the cost otherwise
        step = 4 if min(sy, sx) >= 6 else 1
        small = -(-self.size // step)
        noise = self.rng.standard_normal((self.n, small, small), dtype=np.float32)
        noise = ndimage.gaussian_filter(noise, (0, sy / step, sx / step), mode="wrap", truncate=3.0)
        if step > 1:
            noise = ndimage.zoom(noise, (1, step, step), order=1, grid_mode=True, mode="grid-wrap")
            noise = noise[:, : self.size, : self.size]
        return noise / (noise.std() + 1e-6)

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (size, size) in patch units."""
        coords = np.arange(self.size, dtype=np.float32) / self.unit
        return np.meshgrid(coords, coords, indexing="ij")


def _soft(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 below ``low``, 1 above ``high``, linear between: turns Gaussian blobs into solid nuclei."""
    return np.clip((x - low) / (high - low), 0.0, 1.0)


def _adipose(c: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    # Voronoi cells: the membrane is where the two nearest seeds are about equally near
    count = c.rng.poisson(c.uniform(5.0, 12.0)[:, 0, 0] * c.area)
    seeds = c.rng.uniform(0, c.size / c.unit, (c.n, count.max(), 2)).astype(np.float32)
    seeds[np.arange(count.max())[None, :] >= count[:, None]] = 1e3  # unused seeds far away
    y, x = c.grid()
    near = np.full((c.n, c.size, c.size), np.inf, np.float32)  # squared distances to the nearest two seeds
    second = near.copy()
    for k in range(count.max()):
        d = (y - seeds[:, k, 0, None, None]) ** 2 + (x - seeds[:, k, 1, None, None]) ** 2
        second = np.minimum(second, np.maximum(near, d))
        near = np.minimum(near, d)
    gap = (np.sqrt(second) - np.sqrt(near)) + 0.006 * c.field(0.02)  # wrinkled membranes
    width = max(0.7 / c.unit, 0.008)
    membrane = np.exp(-((gap / width) ** 2)) * _soft(c.field(0.06), -1.8, -0.8)  # a few breaks
    flat_nuclei = _soft(c.blobs(c.points(c.uniform(2, 8)), 0.012, 0.012), 0.3, 0.6) * membrane
    c_e = c.uniform(0.45, 0.8) * membrane + 0.02
    c_h = 0.15 * membrane + c.uniform(0.9, 1.5) * flat_nuclei + 0.01
    return c_h, c_e


def _background(c: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    smear = np.clip(c.field(0.25), 0, None) * c.uniform(0.0, 0.12)  # faint protein smear on the glass
    specks = c.blobs(c.points(c.uniform(2, 15), (0.1, 0.6)), 0.01, 0.01)
    dust = c.blobs(c.points(c.uniform(0, 3), (0.1, 0.4)), 0.03, 0.008)  # fibre-like lint
    c_e = 0.02 + smear + 0.6 * specks + 0.3 * dust + 0.01 * c.field(0.01)
    c_h = 0.015 + 0.3 * smear + 0.8 * specks + 0.1 * dust
    return c_h, c_e


def _dysplasia(c: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    y, x = c.grid()
    centre = np.float32(c.size / c.unit / 2)
    rho = np.full((c.n, c.size, c.size), np.inf, np.float32)
    theta = np.zeros_like(rho)
    count = c.rng.integers(1, 4, c.n)
    for g in range(3):
        # glands near the centre, so the patch always shows one; later glands only where count says
        shift = c.rng.uniform(-0.45, 0.45, (2, c.n)).astype(np.float32) * (0.3 if g == 0 else 1.0)
        cy, cx = (shift + centre)[..., None, None]
        radius, aspect, turn = c.uniform(0.18, 0.32), c.uniform(0.65, 1.0), c.uniform(0, np.pi)
        dy, dx = y - cy, x - cx
        u = dy * np.cos(turn) + dx * np.sin(turn)
        v = (-dy * np.sin(turn) + dx * np.cos(turn)) / aspect
        angle = np.arctan2(u, v)
        wobble = (
            1 + 0.08 * np.cos(3 * angle + c.uniform(0, 6.3)) + 0.05 * np.cos(5 * angle + c.uniform(0, 6.3))
        )
        r = np.hypot(u, v) / (radius * wobble)
        nearer = (r < rho) & (g < count)[:, None, None]
        rho, theta = np.where(nearer, r, rho), np.where(nearer, angle, theta)
    band = c.uniform(0.35, 0.5)  # epithelium's share of the gland radius
    epithelium = _soft(rho, 1 - band, 1 - band + 0.05) * (1 - _soft(rho, 1.0, 1.06))
    lumen = 1 - _soft(rho, 1 - band - 0.05, 1 - band)
    # crowded nuclei: one radial stripe per nucleus around the ring, at jittered heights (pseudostratified)
    per_ring = np.round(c.uniform(36, 56))
    jitter = 0.6 * np.sin(7 * theta + c.uniform(0, 6.3)) + 0.4 * np.sin(13 * theta + c.uniform(0, 6.3))
    stripes = _soft(np.cos(per_ring * theta + jitter), -0.2, 0.4)
    height = 1 - band * (0.5 + 0.25 * np.sin(per_ring * theta / 2 + 2 * jitter))
    nuclei = stripes * _soft(0.5 * band - np.abs(rho - height) * 1.4, 0.0, 0.06) * epithelium
    stroma = _soft(c.field(0.03, 0.12), -1.0, 1.5)
    stromal_nuclei = _soft(c.blobs(c.points(12.0), 0.01, 0.03), 0.3, 0.6) * (1 - epithelium) * (1 - lumen)
    outside = (1 - epithelium) * (1 - lumen)
    c_e = outside * (c.uniform(0.25, 0.45) + 0.2 * stroma) + epithelium * c.uniform(0.2, 0.4)
    c_e = c_e + lumen * c.uniform(0.0, 0.15) * _soft(c.field(0.05), 0.0, 1.0)  # pale secretion
    c_h = 1.1 * c.uniform(1.0, 1.5) * nuclei + 0.15 * epithelium + 1.2 * stromal_nuclei + 0.03
    return c_h, c_e


def _lamina_propria(c: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    # loose stroma: short fibres in one local direction (turned later), with clustered lymphocytes
    fibres = _soft(c.field(0.008, 0.05), -0.5, 2.0)
    crowding = _soft(c.field(0.15), -1.5, 1.0)
    lymphocytes = c.points(c.uniform(60, 140)) * (c.rng.random((c.n, c.size, c.size)) < crowding)
    nuclei = _soft(c.blobs(lymphocytes, 0.016, 0.016), 0.3, 0.55)
    plasma = _soft(c.blobs(c.points(c.uniform(2, 10)), 0.02, 0.026), 0.3, 0.6)
    c_e = c.uniform(0.15, 0.35) * (0.5 + fibres) + 0.25 * plasma + 0.1 * nuclei
    c_h = c.uniform(1.3, 1.9) * nuclei + 0.9 * plasma + 0.06
    return c_h, c_e


def _muscle(c: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    fibres = c.field(0.006, 0.2)  # long along x: one fibre direction, turned later
    nuclei = _soft(c.blobs(c.points(c.uniform(12, 30)), 0.011, 0.055), 0.3, 0.55)
    c_e = c.uniform(0.5, 0.8) * (1 + 0.25 * fibres) * (1 - 0.5 * nuclei)
    c_h = c.uniform(1.0, 1.5) * nuclei + 0.05 + 0.02 * fibres
    return c_h, np.clip(c_e, 0.05, None)


def _tumour(c: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    # a packed sheet of large nuclei; pleomorphism: each has one of three sizes and shapes, most a nucleolus
    spacing = c.uniform(0.12, 0.15)
    blob = np.zeros((c.n, c.size, c.size), np.float32)
    nucleoli = np.zeros_like(blob)
    centres = c.lattice(spacing, 0.25, 0.85)
    shape = c.rng.integers(0, 3, centres.shape)
    for k, (sy, sx) in enumerate(((0.03, 0.03), (0.036, 0.026), (0.024, 0.04))):
        blob += c.blobs(centres * (shape == k), sy, sx)
        nucleoli += c.blobs(centres * (shape == k) * (c.rng.random(centres.shape) < 0.7), 0.011, 0.011)
    nucleus = _soft(blob, 0.35, 0.5)
    rim = nucleus - _soft(blob, 0.55, 0.75)  # chromatin clumps along the nuclear membrane
    chromatin = _soft(c.field(0.01), -1.0, 1.5)
    nucleoli = _soft(nucleoli, 0.35, 0.6) * nucleus
    c_h = c.uniform(0.8, 1.2) * (0.45 + 0.7 * rim + 0.4 * chromatin) * nucleus + 0.9 * nucleoli
    c_e = c.uniform(0.25, 0.45) * (1 - 0.5 * nucleus) + 0.6 * nucleoli + 0.08
    return c_h + 0.12, c_e


_CLASSES: dict[str, Callable[[_Canvas], tuple[np.ndarray, np.ndarray]]] = {
    "AT": _adipose,
    "BG": _background,
    "DYS": _dysplasia,
    "LP": _lamina_propria,
    "MM": _muscle,
    "TUM": _tumour,
}


def _turn_and_crop(
    maps: tuple[np.ndarray, ...], resolution: int, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """(n, C, C) canvases -> (n, R, R) patches at a random angle per image (the same for every map of an image),
    mirrored half the time, bilinear."""
    n, size = maps[0].shape[0], maps[0].shape[-1]
    angle = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    mirror = np.where(rng.random(n) < 0.5, -1.0, 1.0)[:, None, None]
    offset = np.arange(resolution) - (resolution - 1) / 2
    oy, ox = np.meshgrid(offset, offset, indexing="ij")
    ox = ox[None] * mirror
    centre = (size - 1) / 2
    coords = np.stack(
        [
            np.broadcast_to(np.arange(n, dtype=np.float64)[:, None, None], (n, resolution, resolution)),
            centre + np.cos(angle) * oy - np.sin(angle) * ox,
            centre + np.sin(angle) * oy + np.cos(angle) * ox,
        ]
    )
    return tuple(ndimage.map_coordinates(m, coords, order=1, mode="nearest") for m in maps)


def _render(
    c_h: np.ndarray, c_e: np.ndarray, stains: dict[str, np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """Beer-Lambert H&E rendering, then focus blur and noise: float (n, R, R) x 2 -> uint8 (n, R, R, 3)."""
    n = len(c_h)
    od = (c_h * stains["h_amount"][:, None, None])[..., None] * stains["h"][:, None, None, :] + (
        c_e * stains["e_amount"][:, None, None]
    )[..., None] * stains["e"][:, None, None, :]
    rgb = stains["white"][:, None, None, :] * np.exp(-od)
    # a little out of focus: blend with a blurred copy, by a different amount per image
    blur = rng.uniform(0.0, 1.0, n)[:, None, None, None]
    rgb = (1 - blur) * rgb + blur * ndimage.gaussian_filter(rgb, (0, 1.0, 1.0, 0), truncate=2.5)
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * rng.uniform(1.0, 4.0, n)[:, None, None, None]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _slide_stains(rng: np.random.Generator, slides: int) -> dict[str, np.ndarray]:
    """Each slide's staining and scanner: stain vectors, stain amounts, white level - the variation between
    slides that stain normalisation (Macenko) exists to remove."""
    return {
        "h": STAIN_H + rng.normal(0, 0.06, (slides, 3)),
        "e": STAIN_E + rng.normal(0, 0.06, (slides, 3)),
        "h_amount": rng.uniform(0.7, 1.3, slides),
        "e_amount": rng.uniform(0.65, 1.35, slides),
        "white": rng.uniform(232, 255, (slides, 1)) + rng.uniform(-4, 4, (slides, 3)),
    }


def _image_stains(
    rng: np.random.Generator, slide: dict[str, np.ndarray], of: np.ndarray
) -> dict[str, np.ndarray]:
    """Per image: its slide's staining and a little more (section thickness, local uptake)."""
    n = len(of)

    def unit(vectors: np.ndarray) -> np.ndarray:
        vectors = np.abs(vectors + rng.normal(0, 0.02, (n, 3)))
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    return {
        "h": unit(slide["h"][of]),
        "e": unit(slide["e"][of]),
        "h_amount": (slide["h_amount"][of] * rng.uniform(0.85, 1.15, n)).astype(np.float32),
        "e_amount": (slide["e_amount"][of] * rng.uniform(0.85, 1.15, n)).astype(np.float32),
        "white": np.clip(slide["white"][of], 0, 255).astype(np.float32),
    }


def _check(counts: dict[str, int], resolution: int, slides: int) -> None:
    unknown = sorted(set(counts) - set(CLASS_NAMES))
    if unknown:
        raise UsageError(f"synthetic histology has classes {', '.join(CLASS_NAMES)}; got unknown {unknown}")
    if any(int(v) < 0 for v in counts.values()):
        raise UsageError(f"synthetic histology counts must be >= 0, got {counts}")
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise UsageError(
            f"synthetic histology resolution must be {MIN_RESOLUTION}..{MAX_RESOLUTION} px (designed for 32-64), "
            f"got {resolution}"
        )
    if slides < 1:
        raise UsageError(f"synthetic histology needs at least 1 slide, got slides={slides}")


def synthetic_histology(
    counts: dict[str, int] | None = None, resolution: int = 64, seed: int = 0, slides: int = 10
) -> ImageSet:
    """Procedural H&E patches, ``counts[class]`` per class (default :data:`DEFAULT_TRAIN_COUNTS`).

    Every class keeps its own random stream, so a class's images do not change with the other classes' counts.
    Each image belongs to one of ``slides`` synthetic slides (its group, ``"s<seed>-slide<k>"``) that share
    a staining; images are returned in a shuffled order. The same arguments give the same images."""
    counts = dict(DEFAULT_TRAIN_COUNTS if counts is None else counts)
    _check(counts, resolution, slides)
    slide_stains = _slide_stains(np.random.default_rng([seed, len(CLASS_NAMES)]), slides)
    images, labels, slide_of = [], [], []
    for label, name in enumerate(CLASS_NAMES):
        rng = np.random.default_rng([seed, label])
        for first in range(0, int(counts.get(name, 0)), _CHUNK):
            n = min(_CHUNK, int(counts[name]) - first)
            c_h, c_e = _CLASSES[name](_Canvas(rng, n, resolution))
            c_h, c_e = _turn_and_crop((c_h, c_e), resolution, rng)
            slide_of.append(rng.integers(0, slides, n))
            images.append(_render(c_h, c_e, _image_stains(rng, slide_stains, slide_of[-1]), rng))
            labels.append(np.full(n, label))
    if not images:
        raise UsageError(
            f"synthetic histology: every class count is 0 ({counts}); ask for at least one image"
        )
    order = np.random.default_rng([seed, len(CLASS_NAMES) + 1]).permutation(sum(len(i) for i in images))
    return ImageSet(
        np.concatenate(images)[order],
        np.concatenate(labels)[order],
        CLASS_NAMES,
        np.array([f"s{seed}-slide{k}" for k in np.concatenate(slide_of)])[order],
        source=f"synthetic histology v{VERSION} (seed {seed}, {resolution} px)",
    )


def scaled_counts(counts: dict[str, int], scale: float) -> dict[str, int]:
    """``counts`` times ``scale``, rounded, at least 2 per class (a class needs a sample on each side)."""
    if scale <= 0:
        raise UsageError(f"scale must be > 0, got {scale}")
    return {name: max(2, round(n * scale)) for name, n in counts.items()}


def embedded_split(resolution: int = 64, seed: int = 0, scale: float = 1.0) -> tuple[ImageSet, ImageSet]:
    """The embedded default: (train, val) from :data:`DEFAULT_TRAIN_COUNTS` and :data:`DEFAULT_VAL_COUNTS` times
    ``scale``. The two are drawn from different seeds (2 * seed and 2 * seed + 1), so they share no slide."""
    train = synthetic_histology(scaled_counts(DEFAULT_TRAIN_COUNTS, scale), resolution, 2 * seed)
    val = synthetic_histology(scaled_counts(DEFAULT_VAL_COUNTS, scale), resolution, 2 * seed + 1)
    train.source, val.source = f"{train.source}, train", f"{val.source}, val"
    return train, val
