"""Embedded default data (drawn, not downloaded) and a loader for a folder of .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medkit import Dataset, UsageError

CLASS_NAMES = ("background", "disc", "square")


class ShapesDataset(Dataset):
    """Sample i is drawn from a generator seeded by (seed, i): one disc (class 1) and one square (class 2) of
    random size, place and brightness over a noisy background - the same sample on every machine."""

    task = "segmentation"
    class_names = CLASS_NAMES
    in_channels = 1

    def __init__(self, samples: int = 256, image_size: int = 32, seed: int = 0) -> None:
        self.samples, self.size, self.seed = samples, image_size, seed

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng((self.seed, index))
        n = self.size
        mask = np.zeros((n, n), dtype=np.int64)
        yy, xx = np.mgrid[:n, :n]
        r = rng.uniform(0.1, 0.22) * n
        cy, cx = rng.uniform(r, n - r, size=2)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        half = int(rng.uniform(0.08, 0.2) * n)
        sy, sx = rng.integers(0, n - 2 * half, size=2)
        mask[sy : sy + 2 * half, sx : sx + 2 * half] = 2
        image = rng.normal(0.0, 0.35, size=(n, n)) + np.where(mask > 0, rng.uniform(0.8, 1.5), 0.0)
        return {"image": torch.from_numpy(image[None].astype(np.float32)), "mask": torch.from_numpy(mask)}


class NpzFolderDataset(Dataset):
    """Every ``*.npz`` in a folder, each holding an ``image`` (H, W) and an integer ``mask`` (H, W)."""

    task = "segmentation"
    class_names = CLASS_NAMES
    in_channels = 1

    def __init__(self, folder: Path) -> None:
        self.files = sorted(Path(folder).glob("*.npz"))
        if not self.files:
            raise UsageError(f"--data {folder}: no .npz files found; each needs `image` and `mask` arrays")
        for path in self.files:
            with np.load(path) as npz:
                missing = {"image", "mask"} - set(npz.files)
                if missing:
                    raise UsageError(f"--data: {path} lacks the array(s) {', '.join(sorted(missing))}")
                if npz["image"].shape != npz["mask"].shape:
                    raise UsageError(
                        f"--data: {path} has image {npz['image'].shape} but mask {npz['mask'].shape}; they must match"
                    )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        with np.load(self.files[index]) as npz:
            image = npz["image"].astype(np.float32)[None]
            mask = npz["mask"].astype(np.int64)
        return {"image": torch.from_numpy(image), "mask": torch.from_numpy(mask)}
