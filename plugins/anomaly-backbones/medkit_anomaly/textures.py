"""The embedded default data set: an MVTec-like set made from the texture photographs that ship with scikit-image.

One category per photograph (brick, grass and gravel, toned in a colour of their own, and an
immunohistochemistry section as ``histology``). Normal images are random views of the photograph: scale,
small rotation, flips, brightness and contrast jitter. Each defective test image carries one synthetic
defect with an exact mask - the mask holds the pixels the defect changed and no others:

- ``scratch``: a thin random curve, lighter or darker than the surface;
- ``hole``: a dark irregular blob whose darkening fades towards its edge;
- ``stain``: a tinted blob that keeps the brightness and changes the colour;
- ``paste``: a rotated rectangle cut from another category's photograph, brightness-matched.

Defects cover 0.5-5 % of the image and lie inside the part that a resize 256 / centre crop 224 keeps; none
is found by mean intensity alone. The set is deterministic from its seed (the thesis' 1024) and written once
as PNG files in MVTec's layout into the medkit cache folder.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medkit import UsageError
from medkit.user_cache import build_once, cache_folder

VERSION = "v1"
CATEGORIES = ("brick", "grass", "gravel", "histology")
DEFECTS = ("scratch", "hole", "stain", "paste")
TONES = {"brick": (1.0, 0.7, 0.58), "grass": (0.78, 1.0, 0.62), "gravel": (1.0, 0.96, 0.9)}
MIN_AREA, MAX_AREA = 0.005, 0.05  # defect area as a fraction of the image
KEPT = (1 / 16, 15 / 16)  # the part of the image a resize 256 + centre crop 224 keeps


@dataclass(frozen=True)
class TextureSet:
    """What to generate: image size, images per folder, seed and categories."""

    size: int = 256
    train: int = 50
    test_good: int = 18
    test_defect: int = 24
    seed: int = 1024
    categories: tuple[str, ...] = CATEGORIES

    def __post_init__(self) -> None:
        unknown = sorted(set(self.categories) - set(CATEGORIES))
        if unknown:
            raise UsageError(f"unknown texture categories {unknown}; choose from {', '.join(CATEGORIES)}")
        if self.size < 32:
            raise UsageError(f"size {self.size} is too small for defects of 0.5-5 % of the image; use >= 32")

    @property
    def folder_name(self) -> str:
        counts = f"{self.train}-{self.test_good}-{self.test_defect}"
        return f"textures-{VERSION}-{self.size}px-{counts}-seed{self.seed}-{'+'.join(self.categories)}"


SMALL = TextureSet(size=64, train=6, test_good=4, test_defect=8)
"""A few small images per category, for tests and quick demos."""


def embedded_textures(spec: TextureSet | None = None) -> Path:
    """The root of the embedded set (generated on first use: about ten seconds at the default size), ready for the MVTec loader."""
    spec = spec or TextureSet()
    target = cache_folder("anomaly", spec.folder_name)
    return build_once(target, lambda folder: write_textures(folder, spec))


def write_textures(root: Path, spec: TextureSet) -> None:
    """Write ``spec``'s categories under ``root`` in MVTec's layout, with a ``manifest.json``."""
    from PIL import Image

    root = Path(root)
    for category in spec.categories:
        for relative, array in _category_files(category, spec):
            path = root / category / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path, compress_level=1)  # 3x faster to write than the default
    manifest = {"version": VERSION, **asdict(spec), "defects": list(DEFECTS), "source": "skimage.data"}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _category_files(category: str, spec: TextureSet):
    """(relative path, uint8 array) of one category's images and masks, in a fixed order."""
    rng = np.random.default_rng([spec.seed, zlib.crc32(category.encode())])
    photo = _photograph(category, spec.size)
    for i in range(spec.train):
        yield f"train/good/{i:03d}.png", _to_uint8(normal_view(photo, spec.size, rng))
    for i in range(spec.test_good):
        yield f"test/good/{i:03d}.png", _to_uint8(normal_view(photo, spec.size, rng))
    counters = dict.fromkeys(DEFECTS, 0)
    for i in range(spec.test_defect):
        defect = DEFECTS[i % len(DEFECTS)]
        clean = normal_view(photo, spec.size, rng)
        image, mask = add_defect(clean, defect, category, rng)
        n = counters[defect]
        counters[defect] += 1
        yield f"test/{defect}/{n:03d}.png", _to_uint8(image)
        yield f"ground_truth/{defect}/{n:03d}_mask.png", mask.astype(np.uint8) * 255


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _photograph(category: str, size: int) -> np.ndarray:
    """The category's photograph as float RGB in [0, 1], blurred against aliasing when views shrink it."""
    from scipy.ndimage import gaussian_filter
    from skimage import data

    if category == "histology":
        photo = data.immunohistochemistry().astype(np.float32) / 255.0
    else:
        gray = getattr(data, category)().astype(np.float32) / 255.0
        photo = gray[..., None] * np.array(TONES[category], dtype=np.float32)
    shrink = min(photo.shape[:2]) / 2 / size  # a view spans about half the photograph
    if shrink > 1.5:
        photo = gaussian_filter(photo, sigma=(0.45 * shrink, 0.45 * shrink, 0))
    photo.flags.writeable = False  # shared by the cache
    return photo


def normal_view(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random (size, size, 3) view of ``photo``: scale 0.85-1.15, rotation +-10 deg, flips, jitter."""
    from scipy.ndimage import map_coordinates

    height, width = photo.shape[:2]
    scale = rng.uniform(0.85, 1.15) * min(height, width) / 2 / size  # photograph pixels per view pixel
    angle = math.radians(rng.uniform(-10.0, 10.0))
    flips = np.where(rng.random(2) < 0.5, -1.0, 1.0)
    half = size * scale / 2 * (abs(math.cos(angle)) + abs(math.sin(angle)))  # the view stays inside the photo
    centre = rng.uniform([half, half], [height - half, width - half])
    grid = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * scale
    u, v = np.meshgrid(grid * flips[0], grid * flips[1], indexing="ij")
    rows = centre[0] + math.cos(angle) * u - math.sin(angle) * v
    cols = centre[1] + math.sin(angle) * u + math.cos(angle) * v
    view = np.stack([map_coordinates(photo[..., c], [rows, cols], order=1) for c in range(3)], axis=-1)
    mean = view.mean()
    brightness, contrast = rng.uniform(0.9, 1.1, size=2)
    return np.clip((view - mean) * contrast + mean * brightness, 0.0, 1.0).astype(np.float32)


def add_defect(
    image: np.ndarray, defect: str, category: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with one defect of kind ``defect``, and its exact boolean mask."""
    size = image.shape[0]
    for _ in range(100):
        if defect == "scratch":
            mask = _scratch_mask(size, rng.uniform(0.006, 0.015) * size * size, rng)
        elif defect == "paste":
            mask = _rectangle_mask(size, rng.uniform(0.008, 0.04) * size * size, rng)
        else:
            mask = _blob_mask(size, rng.uniform(0.007, 0.04) * size * size, rng)
        if MIN_AREA <= mask.mean() <= MAX_AREA:
            break
    else:
        raise RuntimeError(f"could not draw a {defect} of {MIN_AREA:.1%}-{MAX_AREA:.1%} at {size} px")
    if defect == "scratch":
        changed = _scratch(image, mask, rng)
    elif defect == "hole":
        changed = image * (1.0 - rng.uniform(0.5, 0.75) * _soft_alpha(mask))[..., None]
    elif defect == "stain":
        changed = _stain(image, mask, rng)
    elif defect == "paste":
        changed = _paste(image, mask, category, rng)
    else:
        raise ValueError(f"unknown defect {defect!r}; choose from {', '.join(DEFECTS)}")
    return np.where(mask[..., None], np.clip(changed, 0.0, 1.0), image).astype(np.float32), mask


def _centre(size: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A defect centre such that a defect of ``radius`` stays in the part that survives the centre crop."""
    low, high = KEPT[0] * size + radius + 1, KEPT[1] * size - radius - 1
    return rng.uniform(low, max(low, high), size=2)


def _polar(size: int, centre: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets from ``centre`` in a frame rotated by ``angle``."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = rows - centre[0], cols - centre[1]
    return math.cos(angle) * dy + math.sin(angle) * dx, -math.sin(angle) * dy + math.cos(angle) * dx


def _blob_mask(size: int, area: float, rng: np.random.Generator) -> np.ndarray:
    """An irregular blob: an ellipse whose radius wobbles with a few random harmonics."""
    aspect = rng.uniform(1.0, 2.0)
    radius = math.sqrt(area / math.pi)
    a, b = radius * math.sqrt(aspect), radius / math.sqrt(aspect)
    along, across = _polar(size, _centre(size, 1.3 * a, rng), rng.uniform(0, math.pi))
    rho, phi = np.hypot(along / a, across / b), np.arctan2(across / b, along / a)
    wobble = 1.0 + sum(
        rng.uniform(0, 0.12) * np.cos(k * phi + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5)
    )
    return rho <= wobble


def _rectangle_mask(size: int, area: float, rng: np.random.Generator) -> np.ndarray:
    aspect = rng.uniform(1.0, 2.5)
    long, short = math.sqrt(area * aspect), math.sqrt(area / aspect)
    along, across = _polar(size, _centre(size, math.hypot(long, short) / 2, rng), rng.uniform(0, math.pi))
    return (np.abs(along) <= long / 2) & (np.abs(across) <= short / 2)


def _scratch_mask(size: int, area: float, rng: np.random.Generator) -> np.ndarray:
    """A random curve (heading drifting step by step, turning back at the kept border), ``width`` thick."""
    from scipy.ndimage import distance_transform_edt

    width = max(1.0, rng.uniform(1.5, 3.0) * size / 256)
    low, high = KEPT[0] * size + width + 1, KEPT[1] * size - width - 1
    position, heading = rng.uniform(low, high, size=2), rng.uniform(0, 2 * math.pi)
    canvas = np.zeros((size, size), dtype=bool)
    for _ in range(int(area / width)):
        heading += rng.normal(0.0, 0.08)
        step = np.array([math.sin(heading), math.cos(heading)])
        if np.any(position + step < low) or np.any(position + step > high):
            heading += math.pi
            step = -step
        position = position + step
        canvas[round(position[0]), round(position[1])] = True
    return distance_transform_edt(~canvas) <= width / 2


def _soft_alpha(mask: np.ndarray) -> np.ndarray:
    """Strength of a blob defect: 0.35 at its edge rising to 1 inside; 0 outside the mask."""
    from scipy.ndimage import distance_transform_edt

    depth = distance_transform_edt(mask)
    ramp = max(1.0, 0.35 * math.sqrt(mask.sum() / math.pi))
    return np.where(mask, 0.35 + 0.65 * np.clip(depth / ramp, 0.0, 1.0), 0.0)


def _scratch(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blend towards a colour 0.3-0.5 lighter or darker than the surface around it."""
    level = image[mask].mean() + rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.5)
    strength = rng.uniform(0.7, 0.9)
    return image * (1 - strength) + np.clip(level, 0.05, 0.95) * strength


def _stain(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multiply the channels by a random tint whose mean is 1, so the brightness barely moves.

    The tint leans away from the surface's own colour: a green stain on grass would only be brighter grass.
    """
    direction = rng.normal(size=3)
    direction -= direction.mean()
    surface = image.reshape(-1, 3).mean(axis=0)
    if np.dot(direction, surface - surface.mean()) > 0:
        direction = -direction
    tint = rng.uniform(0.35, 0.55) * direction / np.abs(direction).max()
    return image * (1.0 + _soft_alpha(mask)[..., None] * tint)


def _paste(image: np.ndarray, mask: np.ndarray, category: str, rng: np.random.Generator) -> np.ndarray:
    """A view of another category's photograph, scaled to the brightness of the region it covers."""
    other = rng.choice([c for c in CATEGORIES if c != category])
    patch = normal_view(_photograph(str(other), image.shape[0]), image.shape[0], rng)
    return patch * (image[mask].mean() / max(patch[mask].mean(), 1e-3))
