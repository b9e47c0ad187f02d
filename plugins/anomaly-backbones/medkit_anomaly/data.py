"""Data sets laid out like MVTec AD, one category and split at a time, preprocessed as in the thesis.

Layout: ``<root>/<category>/train/good/*.png`` (normal images only), ``<root>/<category>/test/<defect>/*.png``
(``good`` for normal test images) and ``<root>/<category>/ground_truth/<defect>/<stem>_mask.png``.

Grayscale images (MVTec's grid, screw and zipper are single-channel) are repeated to three channels;
an alpha channel is dropped (a warning says how many images had one), because ImageNet backbones
read RGB and MVTec itself mixes one- and three-channel categories - refusing them would refuse the benchmark.
Every file is checked when the data set is built (readable, masks present and of the image's size), so a bad
file stops a run before fitting starts, naming the file.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from medkit import Dataset, Sample, UsageError

if TYPE_CHECKING:
    import torch
    from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"
WIDE_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I")
GRAY_MODES = ("1", "L", "LA", *WIDE_GRAY_MODES)
LAYOUT = (
    "<root>/<category>/train/good/*.png, test/<defect or good>/*.png, ground_truth/<defect>/<stem>_mask.png"
)

Split = Literal["train", "test"]


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``resize``, centre-crop ``crop``, normalise (thesis: 256, 224, ImageNet).

    ``None`` skips a step. The mask follows with nearest-neighbour resizing and the same crop. The arithmetic is
    torchvision's ``Resize(resize)`` + ``CenterCrop(crop)``, as in the SPADE and PaDiM reference set-ups.
    """

    resize: int | None = 256
    crop: int | None = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def geometry(self, picture: Image.Image, nearest: bool = False) -> Image.Image:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        if self.resize is not None:
            mode = InterpolationMode.NEAREST if nearest else InterpolationMode.BILINEAR
            picture = F.resize(picture, self.resize, interpolation=mode)
        if self.crop is not None:
            picture = F.center_crop(picture, self.crop)
        return picture

    def image(self, picture: Image.Image) -> torch.Tensor:
        """An RGB picture as a normalised float tensor (3, S, S)."""
        import torch

        array = np.asarray(self.geometry(picture), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (tensor - mean) / std

    def mask(self, picture: Image.Image) -> torch.Tensor:
        """A mask picture as a float tensor (1, S, S) of 0 and 1 (any non-zero value is anomalous)."""
        import torch

        array = np.asarray(self.geometry(picture, nearest=True)) > 0
        return torch.from_numpy(array.astype(np.float32))[None]

    def unnormalise(self, image: torch.Tensor) -> np.ndarray:
        """The inverse of :meth:`image`'s normalisation, as an (S, S, 3) uint8 array for display."""
        array = image.detach().cpu().numpy().transpose(1, 2, 0) * np.array(self.std) + np.array(self.mean)
        return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class Item:
    """One image file with its ground truth: ``defect`` is ``good`` for normal images (no mask)."""

    path: Path
    defect: str
    mask_path: Path | None

    @property
    def label(self) -> int:
        return 0 if self.defect == GOOD else 1


def categories(root: Path) -> list[str]:
    """The categories under ``root``: its folders that hold a ``train`` or ``test`` folder, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"--data {root} is not a folder; expected an MVTec-AD layout: {LAYOUT}")
    found = sorted(p.name for p in root.iterdir() if (p / "train").is_dir() or (p / "test").is_dir())
    if not found:
        raise UsageError(
            f"--data {root} holds no category folder (one with train/ and test/ inside); expected {LAYOUT}"
        )
    return found


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _train_items(folder: Path) -> list[Item]:
    good = folder / "train" / GOOD
    if not good.is_dir():
        raise UsageError(
            f"{good} is missing: a category needs its normal training images in train/good/ ({LAYOUT})"
        )
    items = [Item(path, GOOD, None) for path in _images(good)]
    if not items:
        raise UsageError(
            f"{good} holds no images ({', '.join(IMAGE_SUFFIXES)}); put the normal training images there"
        )
    return items


def _test_items(folder: Path) -> list[Item]:
    test = folder / "test"
    if not test.is_dir():
        raise UsageError(
            f"{test} is missing: a category needs test/good/ and test/<defect>/ folders ({LAYOUT})"
        )
    items = []
    for defect_folder in sorted(p for p in test.iterdir() if p.is_dir()):
        defect = defect_folder.name
        for path in _images(defect_folder):
            mask = None if defect == GOOD else folder / "ground_truth" / defect / f"{path.stem}_mask.png"
            if mask is not None and not mask.is_file():
                raise UsageError(
                    f"{path} has no mask: expected {mask}; every defect image needs a ground-truth mask "
                    "(white where anomalous) - add it, or move the image out of the test set"
                )
            items.append(Item(path, defect, mask))
    if not items:
        raise UsageError(f"{test} holds no images; expected test/good/*.png and test/<defect>/*.png")
    return items


def _open(path: Path) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise UsageError(f"{path} cannot be read as an image ({err}); replace the file or remove it") from err


def _rgb(picture: Image.Image) -> Image.Image:
    """Grayscale repeated to RGB, alpha dropped (opacity is not part of the image).

    16-bit images are scaled by 255 / 65535, the same for every image: stretching each image to its own range
    would make a darker image look like a brighter one, which is what an anomaly detector must tell apart.
    """
    from PIL import Image

    if picture.mode in WIDE_GRAY_MODES:
        array = np.asarray(picture, dtype=np.float64) * (255.0 / 65535.0)
        picture = Image.fromarray(np.clip(array + 0.5, 0, 255).astype(np.uint8))
    if picture.mode == "P":
        picture = picture.convert("RGBA")
    if picture.mode in ("RGBA", "LA"):
        picture = picture.convert(picture.mode[:-1])
    if picture.mode != "RGB":
        picture = picture.convert("RGB")
    return picture


def _check_files(items: list[Item]) -> list[str]:
    """Read every header: unreadable files and masks of another size stop here; returns notes for the user."""
    modes: dict[str, int] = {}
    for item in items:
        with _open(item.path) as picture:
            size = picture.size
            modes[picture.mode] = modes.get(picture.mode, 0) + 1
        if item.mask_path is not None:
            with _open(item.mask_path) as mask:
                if mask.size != size:
                    raise UsageError(
                        f"{item.mask_path} is {mask.size[0]}x{mask.size[1]} but its image {item.path} is "
                        f"{size[0]}x{size[1]} (width x height); a mask must have its image's size - "
                        "re-export the mask at that size"
                    )
    notes = []
    gray = sum(n for mode, n in modes.items() if mode in GRAY_MODES)
    if gray:
        notes.append(f"{gray} grayscale image(s) are repeated to three channels")
    alpha = sum(n for mode, n in modes.items() if mode in ("RGBA", "LA"))
    if alpha:
        notes.append(f"{alpha} image(s) carry an alpha channel; it is dropped and the colour channels used")
    return notes


class MVTecCategory(Dataset):
    """One category and split of an MVTec-AD-layout folder.

    A sample is ``{"image": (3, S, S) float tensor, "mask": (1, S, S) float tensor of 0/1 (zeros for good
    images), "label": 0 good / 1 anomalous, "defect": the test sub-folder ("good" for normal), "path": str}``.
    """

    task: ClassVar[str] = "anomaly"
    class_names = (GOOD, "anomalous")
    in_channels = 3

    def __init__(
        self, root: Path, category: str, split: Split = "train", preprocess: Preprocess | None = None
    ):
        self.root = Path(root)
        self.category = category
        self.split = split
        self.preprocess = preprocess or Preprocess()
        folder = self.root / category
        if split not in ("train", "test"):
            raise UsageError(f"split {split!r} is not one of 'train', 'test'")
        if not folder.is_dir():
            raise UsageError(
                f"no category {category!r} in {self.root}; found: {', '.join(categories(self.root))}"
            )
        self.items = _train_items(folder) if split == "train" else _test_items(folder)
        self.notes = _check_files(self.items)
        for note in self.notes:
            warnings.warn(f"{folder} ({split}): {note}", stacklevel=2)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        item = self.items[index]
        image = self.preprocess.image(self.picture(index))
        if item.mask_path is None:
            mask = image.new_zeros((1, *image.shape[-2:]))
        else:
            mask = self.preprocess.mask(_read(item.mask_path).convert("L"))
        return {
            "image": image,
            "mask": mask,
            "label": item.label,
            "defect": item.defect,
            "path": str(item.path),
        }

    def picture(self, index: int) -> Image.Image:
        """The file at ``index`` as an RGB PIL image, before preprocessing."""
        return read_rgb(self.items[index].path)

    @property
    def labels(self) -> np.ndarray:
        return np.array([item.label for item in self.items], dtype=np.int64)

    @property
    def defects(self) -> dict[str, int]:
        """How many images each test sub-folder holds (``good`` included)."""
        counts: dict[str, int] = {}
        for item in self.items:
            counts[item.defect] = counts.get(item.defect, 0) + 1
        return counts

    @property
    def has_anomalies(self) -> bool:
        """False for a train split or a test split of good images only: image ROC-AUC is then undefined."""
        return any(item.label for item in self.items)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "category": self.category, "split": self.split, "defects": self.defects}


def _read(path: Path) -> Image.Image:
    """Decode the whole file now, so that a truncated file fails here with its name."""
    picture = _open(path)
    try:
        picture.load()
    except (OSError, ValueError) as err:
        raise UsageError(
            f"{path} cannot be decoded ({err}); the file is damaged - replace it or remove it"
        ) from err
    return picture


def read_rgb(path: Path) -> Image.Image:
    """An image file as an RGB PIL image, converted as the loader converts (grayscale repeated, alpha dropped)."""
    return _rgb(_read(Path(path)))


def load_category(
    root: Path, category: str, preprocess: Preprocess | None = None
) -> dict[str, MVTecCategory]:
    """Both splits of one category: ``{"train": ..., "test": ...}``."""
    return {split: MVTecCategory(root, category, split, preprocess) for split in ("train", "test")}
