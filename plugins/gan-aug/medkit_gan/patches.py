"""Square patches from large images (paper 001: 224 px with overlap 112 on PATH-DT-MSU, 512/256 on BACH), and
resizing patches to the GAN's resolution.

Patches sit on a grid of stride ``size - overlap`` from the top-left corner; when the image's side is not a
whole number of strides, one more row or column is laid flush with the far border, so every pixel is covered
and every patch is whole. BACH's 2048 x 1536 photographs give 7 x 5 = 35 patches of 512 px with overlap 256:
300 training images -> 10,500 patches, 100 validation images -> 3,500, the paper's counts.
"""

from __future__ import annotations

import numpy as np

from medkit import UsageError

PATCH_PRESETS: dict[str, tuple[int, int]] = {"path_dt_msu": (224, 112), "bach": (512, 256)}


def _check(size: int, overlap: int) -> None:
    if size < 1:
        raise UsageError(f"patch_size must be >= 1 px, got {size}")
    if not 0 <= overlap < size:
        raise UsageError(
            f"overlap must be 0 <= overlap < patch_size ({size}), got {overlap}; the paper overlaps half a "
            "patch (224/112, 512/256)"
        )


def patch_starts(length: int, size: int, overlap: int) -> list[int]:
    """Offsets of the patches along one side of ``length`` px: every stride, the last flush with the border."""
    _check(size, overlap)
    starts = list(range(0, length - size + 1, size - overlap))
    if starts and starts[-1] != length - size:
        starts.append(length - size)
    return starts


def extract_patches(image: np.ndarray, size: int, overlap: int, source: str = "") -> np.ndarray:
    """uint8 (H, W, 3) -> (P, size, size, 3), row by row. ``source`` names the image in error messages."""
    _check(size, overlap)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise UsageError(f"{source or 'image'}: expected an RGB image (H, W, 3), got shape {image.shape}")
    height, width = image.shape[:2]
    if height < size or width < size:
        raise UsageError(
            f"{source or 'image'}: {width} x {height} px is smaller than the {size} px patch; pass a smaller "
            "patch_size, or leave such images out (skip_small)"
        )
    rows, cols = patch_starts(height, size, overlap), patch_starts(width, size, overlap)
    return np.stack([image[y : y + size, x : x + size] for y in rows for x in cols])


def resize_images(images: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, resolution, resolution, 3): PIL bilinear, which widens its filter when it
    shrinks (antialiased). Images already at that size are returned as they are."""
    from PIL import Image

    images = np.asarray(images)
    if resolution < 1:
        raise UsageError(f"resolution must be >= 1 px, got {resolution}")
    if images.shape[1:3] == (resolution, resolution):
        return images
    out = np.empty((len(images), resolution, resolution, 3), np.uint8)
    for i, image in enumerate(images):
        out[i] = np.asarray(
            Image.fromarray(image).resize((resolution, resolution), Image.Resampling.BILINEAR)
        )
    return out
