"""A second MVTec-layout validation suite, apart from the embedded textures: other real images, other defects.

Issue 18: the anomaly defaults must hold on images they were not tuned on. The embedded set (``textures``) views
scikit-image's brick, grass, gravel and immunohistochemistry photographs and carries scratches, holes, colour
stains and rectangles pasted from another category. This suite shares neither images nor defect kinds with it.

Categories, each from an image that ships in an installed package (nothing is downloaded):

- ``fundus``: the inside of scikit-image's retina photograph (vessels on the fundus), colour;
- ``lunar``: scikit-image's moon surface (craters and maria), grayscale;
- ``coins``: scikit-image's Greek coins, grayscale;
- ``galaxies``: scikit-image's Hubble deep field, colour;
- ``abdomen_mr``: pydicom's abdominal MR test slice, grayscale;
- ``spine_ct``: pydicom's CT test slice through a vertebra, grayscale.

The first four are textures, viewed at random places; the two scans are objects, framed alike with a few percent
of jitter, without flips (anatomy has a side), as MVTec AD's aligned object categories. Every view also varies in
scale, rotation, brightness, contrast and sensor noise. Defects, each with its region as the mask (the pixels
outside the mask are those of the defect-free view, bit for bit):

- ``blur``: a region out of focus (a Gaussian blur of 3-6 px at 256 px);
- ``missing``: a region whose content is lost, filled with its mean colour;
- ``warp``: a swirl that twists the content of a disc;
- ``foreign``: an irregular piece of a photograph that is no category (coffee, a cat's fur, a rocket);
- ``glare``: a region washed out towards white, strongest at its core.

Defects cover 0.8-5 % of the image, lie inside the part a resize 256 / centre crop 224 keeps, and are placed
where they change their region by at least ``MIN_CHANGE`` on average (a blur on a flat background would be no
defect at all; only views too small to hold such a place, below about 100 px, keep a fainter one).

Every image is drawn from its own seeded stream (seed, category, split, index): a suite with 30 training images
holds the first 30 of a suite with 200, and the test folders of all training sizes are the same, so figures at
different training sizes differ by the training images alone.
"""

from __future__ import annotations

import functools
import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medkit import UsageError
from medkit.user_cache import build_once, cache_folder

from .textures import KEPT

VERSION = "v1"
DEFECTS = ("blur", "missing", "warp", "foreign", "glare")
TRAIN_SIZES = (30, 50, 200)  # the realistic training sizes
MIN_AREA, MAX_AREA = 0.008, 0.05  # defect area as a fraction of the image
# least mean absolute change in a defect's region (of a [0, 1] range): 4x the sensor noise's
MIN_CHANGE = 0.02
# sources of lower contrast are stretched to this standard deviation, as a camera's gain would
SOURCE_STD = 0.12
PLACEMENTS = 200  # regions drawn for one defect before the most visible is kept
SPLITS = {"train": 0, "good": 1, "defect": 2}  # keys of the per-image random streams


@dataclass(frozen=True)
class Source:
    """An image that ships in an installed package: a ``skimage.data`` function or a pydicom test file."""

    package: str
    name: str


@dataclass(frozen=True)
class Framing:
    """How a category is viewed. ``span``: the view's side as a share of the source's shorter side.

    ``jitter`` None makes a texture: the view lies anywhere inside ``box`` (top, left, bottom, right as shares of
    the source). Otherwise an object: the view is centred on ``box``'s centre, moved by up to ``jitter`` of its side.
    """

    span: float
    box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    jitter: float | None = None
    rotation: float = 10.0  # degrees either way
    flips: bool = True


@dataclass(frozen=True)
class Category:
    """One category of the suite: the image its views are taken from and how they are taken."""

    source: Source
    framing: Framing


CATEGORIES: dict[str, Category] = {
    # the view stays well inside the fundus disc (radius 0.47 of the photograph), clear of its black surround
    "fundus": Category(Source("skimage", "retina"), Framing(0.3, box=(0.2, 0.2, 0.8, 0.8))),
    "lunar": Category(Source("skimage", "moon"), Framing(0.4)),
    "coins": Category(Source("skimage", "coins"), Framing(0.55)),
    "galaxies": Category(Source("skimage", "hubble_deep_field"), Framing(0.4)),
    "abdomen_mr": Category(
        Source("pydicom", "examples_overlay.dcm"), Framing(0.85, jitter=0.03, rotation=3.0, flips=False)
    ),
    "spine_ct": Category(
        Source("pydicom", "CT_small.dcm"), Framing(0.85, jitter=0.03, rotation=3.0, flips=False)
    ),
}
FOREIGN = (Source("skimage", "coffee"), Source("skimage", "chelsea"), Source("skimage", "rocket"))


def sources() -> list[Source]:
    """Every image the suite reads: the categories' and the foreign pieces'."""
    return [c.source for c in CATEGORIES.values()] + list(FOREIGN)


@dataclass(frozen=True)
class SuiteSpec:
    """What to generate: image side, images per folder, seed and categories."""

    size: int = 256
    train: int = 200
    test_good: int = 20
    test_defect: int = 25
    seed: int = 1024
    categories: tuple[str, ...] = tuple(CATEGORIES)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.categories) - set(CATEGORIES))
        if unknown:
            raise UsageError(f"unknown validation categories {unknown}; choose from {', '.join(CATEGORIES)}")
        if self.size < 32:
            raise UsageError(f"size {self.size} is too small for defects of 0.8-5 % of the image; use >= 32")
        if min(self.train, self.test_good, self.test_defect) < 1:
            raise UsageError("a suite needs at least one training, one good and one defective test image")

    @property
    def folder_name(self) -> str:
        counts = f"{self.train}-{self.test_good}-{self.test_defect}"
        return f"validation-{VERSION}-{self.size}px-{counts}-seed{self.seed}-{'+'.join(self.categories)}"


def validation_suite(spec: SuiteSpec | None = None) -> Path:
    """The root of the suite ``spec`` describes, generated into the medkit cache on first use."""
    spec = spec or SuiteSpec()
    target = cache_folder("anomaly", spec.folder_name)
    return build_once(target, lambda folder: write_suite(folder, spec))


def validation_suites(sizes: tuple[int, ...] = TRAIN_SIZES, **options: object) -> dict[int, Path]:
    """One suite root per training size, by size; ``options`` go to :class:`SuiteSpec`.

    The largest is drawn; the others copy its first training images and its test folders, which is what drawing
    them would give (every image has its own random stream) in a fraction of the time.
    """
    largest = validation_suite(SuiteSpec(train=max(sizes), **options))  # type: ignore[arg-type]
    roots = {}
    for size in sizes:
        spec = SuiteSpec(train=size, **options)  # type: ignore[arg-type]
        target = cache_folder("anomaly", spec.folder_name)
        roots[size] = build_once(target, lambda folder, spec=spec: copy_smaller(largest, folder, spec))
    return roots


def write_suite(root: Path, spec: SuiteSpec) -> None:
    """Write ``spec``'s categories under ``root`` in MVTec AD's layout, with a ``manifest.json``."""
    from PIL import Image

    root = Path(root)
    for category in spec.categories:
        for relative, array in category_files(category, spec):
            path = root / category / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path, compress_level=1)
    _write_manifest(root, spec)


def copy_smaller(larger: Path, root: Path, spec: SuiteSpec) -> None:
    """Write the suite ``spec`` under ``root`` by copying from the suite at ``larger``, drawn with the same
    options but more training images: its first ``spec.train`` training images and all its test images."""
    import shutil

    drawn = json.loads((Path(larger) / "manifest.json").read_text())
    wanted = {**asdict(spec), "train": drawn["train"], "categories": drawn["categories"]}
    if drawn["version"] != VERSION or any(drawn[k] != v for k, v in wanted.items() if k != "categories"):
        raise ValueError(f"{larger} was drawn with other options than {spec}; it cannot be copied from")
    if spec.train > drawn["train"] or not set(spec.categories) <= set(drawn["categories"]):
        raise ValueError(f"{larger} holds fewer training images or other categories than {spec}")
    for category in spec.categories:
        for folder in ("test", "ground_truth"):
            shutil.copytree(Path(larger) / category / folder, Path(root) / category / folder)
        (Path(root) / category / "train" / "good").mkdir(parents=True)
        for i in range(spec.train):
            relative = Path(category, "train", "good", f"{i:03d}.png")
            shutil.copyfile(Path(larger) / relative, Path(root) / relative)
    _write_manifest(Path(root), spec)


def _write_manifest(root: Path, spec: SuiteSpec) -> None:
    manifest = {
        "version": VERSION,
        **asdict(spec),
        "defects": list(DEFECTS),
        "sources": {name: asdict(CATEGORIES[name].source) for name in spec.categories},
        "foreign": [asdict(s) for s in FOREIGN],
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def category_files(category: str, spec: SuiteSpec) -> Iterator[tuple[str, np.ndarray]]:
    """(relative path, uint8 array) of one category's images and masks, in a fixed order."""
    for i in range(spec.train):
        yield f"train/good/{i:03d}.png", to_uint8(normal_image(category, spec, "train", i))
    for i in range(spec.test_good):
        yield f"test/good/{i:03d}.png", to_uint8(normal_image(category, spec, "good", i))
    for i in range(spec.test_defect):
        defect, number = defect_slot(i)
        _, image, mask = defect_image(category, spec, i)
        yield f"test/{defect}/{number:03d}.png", to_uint8(image)
        yield f"ground_truth/{defect}/{number:03d}_mask.png", mask.astype(np.uint8) * 255


def defect_slot(index: int) -> tuple[str, int]:
    """The defect kind of the ``index``-th defective test image and its number within that kind."""
    return DEFECTS[index % len(DEFECTS)], index // len(DEFECTS)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A [0, 1] float (H, W, C) image as uint8, grayscale as (H, W) so that it is written as a grayscale PNG."""
    array = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return array[..., 0] if array.shape[-1] == 1 else array


def _stream(spec: SuiteSpec, category: str, split: str, index: int) -> np.random.Generator:
    """The random stream of one image: independent of every other image, so suites nest by training size."""
    return np.random.default_rng([spec.seed, zlib.crc32(category.encode()), SPLITS[split], index])


def normal_image(category: str, spec: SuiteSpec, split: str, index: int) -> np.ndarray:
    """The ``index``-th normal image of ``split`` (``train`` or ``good``): float (size, size, C) in [0, 1]."""
    return _view_of(category, spec.size, _stream(spec, category, split, index))


def defect_image(category: str, spec: SuiteSpec, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``index``-th defective test image: the defect-free view, the image with its defect, and the mask."""
    rng = _stream(spec, category, "defect", index)
    clean = _view_of(category, spec.size, rng)
    image, mask = add_defect(clean, defect_slot(index)[0], rng)
    return clean, image, mask


def _view_of(category: str, size: int, rng: np.random.Generator) -> np.ndarray:
    framing = CATEGORIES[category].framing
    return jittered(sample_view(_prepared(category, size), framing, size, rng), rng)


@functools.lru_cache(maxsize=16)
def load_source(source: Source) -> np.ndarray:
    """The source image as float (H, W, C) in [0, 1], C = 1 for grayscale. Read-only: it is cached."""
    if source.package == "skimage":
        from skimage import data

        image = np.asarray(getattr(data, source.name)(), dtype=np.float32) / 255.0
    elif source.package == "pydicom":
        image = _dicom_slice(source.name)
    else:
        raise ValueError(f"unknown source package {source.package!r}")
    image = image if image.ndim == 3 else image[..., None]
    image.flags.writeable = False
    return image


def _dicom_slice(name: str) -> np.ndarray:
    """A pydicom test slice, windowed to [0, 1] by its own display window or else its 0.5-99.5 percentiles."""
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        raise UsageError(f"pydicom's test file {name} is not installed here; reinstall pydicom (>= 2.4)")
    dataset = pydicom.dcmread(path)
    slope, intercept = float(dataset.get("RescaleSlope", 1)), float(dataset.get("RescaleIntercept", 0))
    values = dataset.pixel_array.astype(np.float32) * slope + intercept
    centre, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if centre is not None and width is not None:
        centre, width = float(np.ravel(centre)[0]), float(np.ravel(width)[0])  # the first of several windows
        low, high = centre - width / 2, centre + width / 2
    else:
        low, high = np.percentile(values, [0.5, 99.5])
    return np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _prepared(category: str, size: int) -> np.ndarray:
    """The category's source, stretched, and blurred against aliasing when its views shrink it to ``size``."""
    from scipy.ndimage import gaussian_filter

    framing = CATEGORIES[category].framing
    source = stretched(load_source(CATEGORIES[category].source), framing.box)
    shrink = framing.span * min(source.shape[:2]) / size
    if shrink > 1.5:
        source = gaussian_filter(source, sigma=(0.45 * shrink, 0.45 * shrink, 0))
    source.flags.writeable = False
    return source


def stretched(source: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """``source`` with its contrast raised to a standard deviation of ``SOURCE_STD`` inside ``box`` (never lowered).

    The fundus and the moon are smooth: without it a blur or a missing region there changes less than the sensor
    noise, and could not be placed. One gain for all channels keeps the colours' balance.
    """
    height, width = source.shape[:2]
    inside = source[
        round(box[0] * height) : round(box[2] * height), round(box[1] * width) : round(box[3] * width)
    ]
    means = inside.reshape(-1, source.shape[2]).mean(axis=0)
    spread = float(inside.reshape(-1, source.shape[2]).std(axis=0).mean())  # within channels, not between
    gain = max(1.0, SOURCE_STD / spread)
    return np.clip(means + gain * (source - means), 0.0, 1.0).astype(np.float32)


def sample_view(photo: np.ndarray, framing: Framing, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size, C) view of ``photo`` as ``framing`` says, scale +-7 %, rotated, maybe flipped."""
    from scipy.ndimage import affine_transform

    height, width = photo.shape[:2]
    side = framing.span * min(height, width) * rng.uniform(0.93, 1.07)  # source pixels across the view
    angle = math.radians(rng.uniform(-framing.rotation, framing.rotation))
    half = side / 2 * (abs(math.cos(angle)) + abs(math.sin(angle)))  # half the rotated view's extent
    centre = _view_centre(framing, (height, width), side, half, rng)
    flips = np.where(rng.random(2) < 0.5, -1.0, 1.0) if framing.flips else np.ones(2)
    # view pixel (i, j) reads the source at centre + R(angle) @ (flipped offsets from the view's middle)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    matrix = rotation * (flips * side / size)[None, :]
    offset = centre - matrix @ np.full(2, (size - 1) / 2)
    # an affine map is 3x faster than map_coordinates with a grid of coordinates; "reflect" only matters for
    # an object view a little wider than its source (the CT slice)
    channels = [
        affine_transform(photo[..., c], matrix, offset, output_shape=(size, size), order=1, mode="reflect")
        for c in range(photo.shape[2])
    ]
    return np.stack(channels, axis=-1).astype(np.float32)


def _view_centre(
    framing: Framing, shape: tuple[int, int], side: float, half: float, rng: np.random.Generator
) -> np.ndarray:
    """Where a view of ``side`` source pixels is centred, so that it stays inside the box (texture) or the source."""
    top, left, bottom, right = np.array(framing.box) * np.array([*shape, *shape])
    if framing.jitter is None:
        low, high = np.array([top + half, left + half]), np.array([bottom - half, right - half])
        return rng.uniform(low, np.maximum(low, high))
    centre = (
        np.array([(top + bottom) / 2, (left + right) / 2]) + rng.uniform(-1, 1, 2) * framing.jitter * side
    )
    low, high = np.array([half, half]), np.array(shape) - half
    return np.where(low <= high, np.clip(centre, low, np.maximum(low, high)), np.array(shape) / 2)


def jittered(view: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small photometric variation of a normal view: gain +-5 %, offset +-0.02, sensor noise of std 0.006."""
    gain, offset = rng.uniform(0.95, 1.05), rng.uniform(-0.02, 0.02)
    noise = rng.standard_normal(view.shape, dtype=np.float32) * 0.006
    return np.clip(view * gain + offset + noise, 0.0, 1.0).astype(np.float32)


def add_defect(image: np.ndarray, defect: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with one ``defect`` and its boolean mask; outside the mask the image is unchanged.

    Regions are drawn until the defect changes its region by ``MIN_CHANGE`` on average, so that a defect is there
    to be found (a blur on the black sky between galaxies changes nothing). Tiny views of a smooth category may
    have no such place: after ``PLACEMENTS`` draws the most visible one is kept.
    """
    if defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; choose from {', '.join(DEFECTS)}")
    best, best_change = None, -1.0
    for _ in range(PLACEMENTS):
        mask, changed = DEFECT_MAKERS[defect](image, rng)
        if not MIN_AREA <= mask.mean() <= MAX_AREA:
            continue
        change = float(np.abs(changed - image)[mask].mean())
        if change > best_change:
            best, best_change = (mask, changed), change
        if change >= MIN_CHANGE:
            break
    if best is None:
        raise RuntimeError(f"could not draw a {defect} of {MIN_AREA:.1%}-{MAX_AREA:.1%} of the image")
    mask, changed = best
    return np.where(mask[..., None], np.clip(changed, 0.0, 1.0), image).astype(np.float32), mask


def _area(size: int, rng: np.random.Generator) -> float:
    """A defect area in pixels, drawn in the middle of the allowed range (the shapes then vary around it)."""
    return rng.uniform(1.2 * MIN_AREA, 0.85 * MAX_AREA) * size * size


def _centre(size: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A centre from which ``radius`` stays inside the part of the image the centre crop keeps."""
    low, high = KEPT[0] * size + radius + 1, KEPT[1] * size - radius - 1
    return rng.uniform(low, max(low, high), size=2)


def region(size: int, rng: np.random.Generator) -> np.ndarray:
    """An irregular region of ``MIN_AREA``-``MAX_AREA`` of the image: a star-shaped random polygon of 9 corners,
    its corners rounded off."""
    from scipy.ndimage import gaussian_filter
    from skimage.draw import polygon

    for _ in range(100):
        radius = math.sqrt(_area(size, rng) / math.pi)
        centre = _centre(size, 1.35 * radius, rng)
        angles = np.sort(rng.uniform(0, 2 * math.pi, 9))
        reach = radius * rng.uniform(0.65, 1.35, 9)
        rows, cols = polygon(
            centre[0] + reach * np.sin(angles), centre[1] + reach * np.cos(angles), (size, size)
        )
        shape = np.zeros((size, size), dtype=np.float32)
        shape[rows, cols] = 1.0
        mask = gaussian_filter(shape, sigma=radius / 4) > 0.5
        if MIN_AREA <= mask.mean() <= MAX_AREA:  # corners bunched on one side make a sliver
            return mask
    raise RuntimeError(f"could not draw a region of {MIN_AREA:.1%}-{MAX_AREA:.1%} of a {size} px image")


def _blur(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The region out of focus: a Gaussian blur of 3-6 px at 256 px (never under 1.5 px, which is no defect)."""
    from scipy.ndimage import gaussian_filter

    size = image.shape[0]
    sigma = max(1.5, rng.uniform(3.0, 6.0) * size / 256)
    return region(size, rng), gaussian_filter(image, sigma=(sigma, sigma, 0))


def _missing(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The region's content replaced by its mean colour: the brightness stays, the structure goes."""
    mask = region(image.shape[0], rng)
    return mask, np.broadcast_to(image[mask].mean(axis=0), image.shape)


def _warp(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A swirl: each pixel of a disc of radius R is taken from its position turned by theta (1 - r / R)^2.

    The mask is the disc where the swirl moves content by half a pixel or more, holes filled (its centre turns
    but hardly moves).
    """
    from scipy.ndimage import binary_fill_holes, map_coordinates

    size = image.shape[0]
    radius = 1.15 * math.sqrt(_area(size, rng) / math.pi)  # the mask stops short of the disc's rim
    centre = _centre(size, radius, rng)
    theta = rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.0)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = rows - centre[0], cols - centre[1]
    r = np.hypot(dy, dx)
    turn = theta * np.clip(1.0 - r / radius, 0.0, 1.0) ** 2
    moved = 2.0 * r * np.abs(np.sin(turn / 2))  # how far a pixel's content comes from
    mask = binary_fill_holes(moved >= 0.5)
    cos, sin = np.cos(turn), np.sin(turn)
    source_rows, source_cols = centre[0] + cos * dy - sin * dx, centre[1] + sin * dy + cos * dx
    warped = [
        map_coordinates(image[..., c], [source_rows, source_cols], order=1, mode="reflect")
        for c in range(image.shape[2])
    ]
    return mask, np.stack(warped, axis=-1)


def _foreign(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An irregular piece of a photograph that is no category, brought to the region's brightness +-15 %."""
    size, channels = image.shape[0], image.shape[2]
    mask = region(size, rng)
    photo = load_source(FOREIGN[rng.integers(len(FOREIGN))])
    piece = sample_view(photo, Framing(0.3), size, rng)
    if channels == 1:  # a grayscale category gets a grayscale piece
        piece = piece.mean(axis=2, keepdims=True)
    level = image[mask].mean() * rng.uniform(0.85, 1.15)
    return mask, piece * (level / max(float(piece[mask].mean()), 1e-3))


def _glare(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The region washed out towards white: a share of 1 - intensity added, 40 % of the peak at its rim."""
    from scipy.ndimage import distance_transform_edt

    mask = region(image.shape[0], rng)
    depth = distance_transform_edt(mask)
    ramp = max(1.0, float(depth.max()))
    strength = rng.uniform(0.45, 0.7) * (0.4 + 0.6 * depth / ramp)
    return mask, image + strength[..., None] * (1.0 - image)


DEFECT_MAKERS = {
    "blur": _blur,
    "missing": _missing,
    "warp": _warp,
    "foreign": _foreign,
    "glare": _glare,
}
