"""SPADE (Cohen and Hoshen 2020): kNN over whole images, then kNN over the pixels of the images retrieved.

Image score: the mean distance of the image's global feature to its K nearest training images (sec. 3.1). As
published, the global feature is the network's final average-pooled feature (WRN-50-2's avgpool output, after
layer 4); ``image_feature="last_layer"`` pools the last embedding map instead (no pass beyond it). Pixel score: for
every layer, the gallery is all spatial feature vectors of those K images; each test position scores the mean
distance to its kappa nearest gallery vectors (sec. 3.2). Layer maps are upsampled to the input, averaged and
smoothed (sigma 4). All searches are exact, on FAISS.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, Literal, Self, get_args

import numpy as np
import torch
from torch import nn

from medkit import UsageError

from ..knn import NearestNeighbours
from .base import AnomalyModel, to_vectors, upsample

ImageFeature = Literal["avgpool", "last_layer"]
IMAGE_FEATURES: tuple[str, ...] = get_args(ImageFeature)


def global_feature(feature_map: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, C): the average-pooled map."""
    return feature_map.mean(dim=(2, 3))


class SPADE(AnomalyModel):
    """SPADE over any feature extractor; it keeps every training feature map (the pixel galleries' source).

    ``image_feature``: the image kNN's descriptor. ``"avgpool"`` (the paper's): the network's final
    average-pooled feature, which needs an extractor with ``forward_pooled`` and a ``pooled_dim`` (the plugin's
    backbones have both; the pass then runs the whole network but its classifier). ``"last_layer"``: the last
    embedding map, average-pooled (cheaper: nothing runs past the embedding layers).
    ``k``: training images retrieved per test image (paper 50; capped at the training set size, with a warning);
    ``kappa``: gallery neighbours averaged per test position (paper 1); ``gpu``: search on GPU FAISS if present.
    """

    name = "spade"

    def __init__(
        self,
        extractor: nn.Module,
        k: int = 50,
        kappa: int = 1,
        image_feature: ImageFeature = "avgpool",
        sigma: float = 4.0,
        gpu: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(extractor, sigma=sigma, device=device)
        if k < 1 or kappa < 1:
            raise UsageError(f"spade: k and kappa must be >= 1, got k={k}, kappa={kappa}")
        check_image_feature(image_feature, extractor)
        self.k, self.kappa, self.image_feature, self.gpu = k, kappa, image_feature, gpu
        self.train_maps: list[torch.Tensor] = []
        self.train_features = torch.empty(0)
        self.images = NearestNeighbours(gpu=gpu)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "k": self.k, "kappa": self.kappa, "image_feature": self.image_feature}

    @classmethod
    def from_state(
        cls, extractor: nn.Module, state: dict[str, Any], device: str | torch.device = "cpu", **options: Any
    ) -> Self:
        # models saved before image_feature existed pooled the last embedding map
        upgraded = {**state, "config": {"image_feature": "last_layer", **state["config"]}}
        return super().from_state(extractor, upgraded, device=device, **options)

    @property
    def k_used(self) -> int:
        """K as searched: the configured k, or the training set size when that is smaller."""
        return min(self.k, self.images.ntotal)

    def embed(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The embedding maps of ``images`` (on the CPU) and their global features (N, C) for the image kNN."""
        if self.image_feature == "last_layer":
            maps = [m.cpu() for m in self.features(images)]
            return maps, global_feature(maps[-1])
        with torch.no_grad():
            maps, features = self.extractor.forward_pooled(images)
        return [m.float().cpu() for m in maps], features.float().cpu()

    def _fit(self, batches: Iterator[torch.Tensor]) -> None:
        per_batch = [self.embed(images) for images in batches]
        self.train_maps = [torch.cat(layer) for layer in zip(*(maps for maps, _ in per_batch), strict=True)]
        self.train_features = torch.cat([features for _, features in per_batch])
        self.images.add(self.train_features)
        if self.k > self.k_used:
            warnings.warn(
                f"spade: k={self.k} exceeds the {self.k_used} training images; using k={self.k_used}",
                stacklevel=3,
            )

    def _score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps, features = self.embed(images)
        distances, nearest = self.images.search(features, self.k_used)
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
        return {"train_maps": self.train_maps, "train_features": self.train_features}

    def _load_fitted_state(self, state: dict[str, Any]) -> None:
        self.train_maps = [m.cpu() for m in state["train_maps"]]
        # models saved before train_features existed used the pooled last map
        self.train_features = state.get("train_features", global_feature(self.train_maps[-1])).cpu()
        self.images.add(self.train_features)


def check_image_feature(image_feature: str, extractor: nn.Module) -> None:
    """A known ``image_feature`` that the extractor can give, or a UsageError saying what to choose."""
    if image_feature not in IMAGE_FEATURES:
        raise UsageError(f"spade: image_feature={image_feature!r} is not one of {', '.join(IMAGE_FEATURES)}")
    if image_feature == "avgpool" and getattr(extractor, "pooled_dim", None) is None:
        raise UsageError(
            "spade: image_feature='avgpool' needs the network's final pooled feature, which this extractor "
            f"({type(extractor).__name__}) does not give; use image_feature='last_layer'"
        )
