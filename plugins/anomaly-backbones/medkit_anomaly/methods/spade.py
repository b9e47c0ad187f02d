"""SPADE (Cohen and Hoshen 2020): kNN over whole images, then kNN over the pixels of the images retrieved.

Image score: the mean distance of the image's global feature (the last map, average-pooled) to its K nearest
training images (sec. 3.1). Pixel score: for every layer, the gallery is all spatial feature vectors of those K
images; each test position scores the mean distance to its kappa nearest gallery vectors (sec. 3.2). Layer maps are
upsampled to the input, averaged and smoothed (sigma 4). All searches are exact, on FAISS.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from medkit import UsageError

from ..knn import NearestNeighbours
from .base import AnomalyModel, to_vectors, upsample


def global_feature(feature_map: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, C): the average-pooled map, SPADE's image descriptor."""
    return feature_map.mean(dim=(2, 3))


class SPADE(AnomalyModel):
    """SPADE over any feature extractor; it keeps every training feature map (the pixel galleries' source).

    The global feature pools the extractor's last embedding map; the reference pools the network's output after
    its last stage instead, which an extractor of layers 1-3 does not compute.

    ``k``: training images retrieved per test image (paper 50; capped at the training set size, with a warning);
    ``kappa``: gallery neighbours averaged per test position (paper 1); ``gpu``: search on GPU FAISS if present.
    """

    name = "spade"

    def __init__(
        self,
        extractor: nn.Module,
        k: int = 50,
        kappa: int = 1,
        sigma: float = 4.0,
        gpu: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(extractor, sigma=sigma, device=device)
        if k < 1 or kappa < 1:
            raise UsageError(f"spade: k and kappa must be >= 1, got k={k}, kappa={kappa}")
        self.k, self.kappa, self.gpu = k, kappa, gpu
        self.train_maps: list[torch.Tensor] = []
        self.images = NearestNeighbours(gpu=gpu)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "k": self.k, "kappa": self.kappa}

    @property
    def k_used(self) -> int:
        """K as searched: the configured k, or the training set size when that is smaller."""
        return min(self.k, self.images.ntotal)

    def _fit(self, batches: Iterator[torch.Tensor]) -> None:
        per_batch = [[m.cpu() for m in self.features(images)] for images in batches]
        self.train_maps = [torch.cat(layer) for layer in zip(*per_batch, strict=True)]
        self._index_images()
        if self.k > self.k_used:
            warnings.warn(
                f"spade: k={self.k} exceeds the {self.k_used} training images; using k={self.k_used}",
                stacklevel=3,
            )

    def _index_images(self) -> None:
        self.images.add(global_feature(self.train_maps[-1]))

    def _score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = [m.cpu() for m in self.features(images)]
        distances, nearest = self.images.search(global_feature(maps[-1]), self.k_used)
        image_scores = torch.from_numpy(distances.mean(axis=1))
        size = tuple(images.shape[-2:])
        pixel_maps = torch.stack(
            [self._pixel_map([m[i : i + 1] for m in maps], nearest[i], size) for i in range(len(images))]
        )
        return image_scores, pixel_maps

    def _pixel_map(
        self, maps: list[torch.Tensor], nearest: np.ndarray, size: tuple[int, int]
    ) -> torch.Tensor:
        """(H, W): per layer, the mean distance of each position to its kappa nearest gallery vectors, averaged."""
        layer_maps = []
        for test_map, train_map in zip(maps, self.train_maps, strict=True):
            gallery = NearestNeighbours(gpu=self.gpu).add(to_vectors(train_map[torch.as_tensor(nearest)]))
            distances, _ = gallery.search(to_vectors(test_map), min(self.kappa, gallery.ntotal))
            layer_map = torch.from_numpy(distances.mean(axis=1)).reshape(1, *test_map.shape[-2:])
            layer_maps.append(upsample(layer_map, size)[0])
        return torch.stack(layer_maps).mean(dim=0)

    def _fitted_state(self) -> dict[str, Any]:
        return {"train_maps": self.train_maps}

    def _load_fitted_state(self, state: dict[str, Any]) -> None:
        self.train_maps = [m.cpu() for m in state["train_maps"]]
        self._index_images()
