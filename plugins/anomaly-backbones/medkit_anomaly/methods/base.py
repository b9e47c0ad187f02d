"""The contract every anomaly method keeps over a feature extractor, with the map post-processing they share.

A method wraps a ``FeatureExtractor`` (``forward(x) -> list`` of feature maps, one per embedding layer, strides
increasing). ``fit`` reads batches of normal images once; ``predict`` returns an image score (N,) and an anomaly
map (N, H, W) at the input resolution. ``state_dict`` holds everything scoring needs - the fitted statistics and
the extractor's weights - as tensors and plain values, so ``save``/``load`` round-trip through a weights-only
medkit checkpoint.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from torch import nn

from medkit import Model, UsageError

Batch = torch.Tensor | Mapping[str, Any]


class AnomalyModel(Model):
    """An anomaly detector over a frozen feature extractor, fitted on normal images only.

    Subclasses implement ``_fit(batches)`` (an iterator of checked image tensors on ``device``), ``_score(images)``
    (-> image scores (N,) or None, and raw maps (N, H, W) at input size before smoothing; None makes the image
    score the maximum of the smoothed map) and ``_fitted_state`` / ``_load_fitted_state`` for their statistics.
    ``config`` holds the constructor options, by keyword, that define the fitted model.
    """

    task = "anomaly"
    name: ClassVar[str]

    def __init__(self, extractor: nn.Module, sigma: float = 4.0, device: str | torch.device = "cpu") -> None:
        if sigma < 0:
            raise UsageError(f"{self.name}: sigma (Gaussian smoothing of the map) must be >= 0, got {sigma}")
        self.device = torch.device(device)
        self.extractor = extractor.to(self.device).eval()
        self.sigma = sigma
        self.fitted = False

    @property
    def config(self) -> dict[str, Any]:
        """Constructor options by keyword: saved with the state, checked on load, used by :meth:`from_state`."""
        return {"sigma": self.sigma}

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(
            p.numel() for p in self.modules_to_save().parameters() if p.requires_grad or not trainable_only
        )

    def modules_to_save(self) -> nn.ModuleDict:
        """The torch modules whose weights the state holds: the extractor, plus any the method trains."""
        return nn.ModuleDict({"extractor": self.extractor})

    # fitting and scoring

    def fit(self, batches: Iterable[Batch] | torch.Tensor) -> Self:
        """Fit on normal images: an iterable of (N, 3, H, W) tensors (or samples with an ``image``), read once."""
        if isinstance(batches, torch.Tensor):
            batches = [batches]
        self.extractor.eval()
        self._fit(self._checked(batches))
        self.fitted = True
        return self

    def _checked(self, batches: Iterable[Batch]) -> Iterator[torch.Tensor]:
        seen = 0
        for batch in batches:
            images = batch["image"] if isinstance(batch, Mapping) else batch
            images = check_images(images, self.name)
            seen += len(images)
            yield images.to(self.device)
        if seen == 0:
            raise UsageError(f"{self.name}: fit received no images; pass at least one batch of normal images")

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores (N,) and anomaly maps (N, H, W) at the input resolution, on the CPU, higher = more anomalous."""
        if not self.fitted:
            raise UsageError(
                f"{self.name}: predict before fit; call fit(normal images) or load a saved model"
            )
        images = check_images(images, self.name)
        self.extractor.eval()
        scores, maps = [], []
        for chunk in images.split(batch_size):
            image_scores, raw_maps = self._score(chunk.to(self.device))
            smoothed = gaussian_blur(raw_maps, self.sigma)
            scores.append(
                (smoothed.flatten(1).amax(dim=1) if image_scores is None else image_scores).float().cpu()
            )
            maps.append(smoothed.float().cpu())
        return torch.cat(scores), torch.cat(maps)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The extractor's feature maps of ``images``, one per embedding layer, as float32."""
        return [f.float() for f in self.extractor(images)]

    @abstractmethod
    def _fit(self, batches: Iterator[torch.Tensor]) -> None: ...

    @abstractmethod
    def _score(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]: ...

    # state

    @abstractmethod
    def _fitted_state(self) -> dict[str, Any]: ...

    @abstractmethod
    def _load_fitted_state(self, state: dict[str, Any]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        if not self.fitted:
            raise UsageError(f"{self.name}: nothing to save before fit")
        modules = {key: module.state_dict() for key, module in self.modules_to_save().items()}
        return {"arch": self.name, "config": self.config, "modules": modules, "fitted": self._fitted_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("arch") != self.name:
            raise UsageError(f"this state was saved by {state.get('arch')!r}, not by {self.name!r}")
        if state["config"] != self.config:
            differ = sorted(k for k in state["config"] if state["config"][k] != self.config.get(k))
            raise UsageError(
                f"{self.name}: the saved model was fitted with other options ({', '.join(differ)}): "
                f"saved {state['config']}, this model {self.config}; build the model with the saved options"
            )
        for key, module in self.modules_to_save().items():
            module.load_state_dict(state["modules"][key])
        self._load_fitted_state(state["fitted"])
        self.fitted = True

    def save(self, path: Path) -> None:
        """Write the fitted model to ``path`` (a weights-only medkit checkpoint, written atomically)."""
        from medkit.checkpoint import save_checkpoint

        save_checkpoint(Path(path), self.state_dict())

    @classmethod
    def from_state(
        cls, extractor: nn.Module, state: dict[str, Any], device: str | torch.device = "cpu", **options: Any
    ) -> Self:
        """The model a :meth:`state_dict` describes, built over ``extractor`` (its architecture, not its weights).

        ``options`` are those not saved because they concern the machine, such as ``gpu=True``.
        """
        model = cls(extractor, **state["config"], device=device, **options)
        model.load_state_dict(state)
        return model

    @classmethod
    def load(
        cls, path: Path, extractor: nn.Module, device: str | torch.device = "cpu", **options: Any
    ) -> Self:
        """Read a model written by :meth:`save`; see :meth:`from_state`."""
        from medkit.checkpoint import load_checkpoint

        state = load_checkpoint(Path(path), arch=cls.name, map_location=str(torch.device(device)))
        return cls.from_state(extractor, state, device=device, **options)


def check_images(images: Any, name: str) -> torch.Tensor:
    """``images`` as a float (N, 3, H, W) tensor, or a UsageError that says what arrived."""
    if not isinstance(images, torch.Tensor):
        raise UsageError(f"{name} expects images as a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise UsageError(
            f"{name} expects a batch of RGB images (N, 3, H, W) with N >= 1, got shape {tuple(images.shape)}; "
            "convert grayscale or RGBA images to RGB first"
        )
    return images.float() if not images.is_floating_point() else images


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """(N, C, h, w) or (N, h, w) maps resized to ``size``; bilinear without corner alignment, or nearest."""
    squeeze = maps.ndim == 3
    maps = maps.unsqueeze(1) if squeeze else maps
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(
            maps, size=size, mode=mode, **({"align_corners": False} if mode == "bilinear" else {})
        )
    return maps.squeeze(1) if squeeze else maps


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, H, W) maps smoothed by a separable Gaussian of std ``sigma`` px, truncated at 4 sigma as scipy does.

    Edges are padded by replication, which works for any map size.
    """
    if sigma == 0:
        return maps
    radius = math.ceil(4 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(maps.unsqueeze(1), (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def to_vectors(feature_map: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N * h * w, C): one row per spatial position, image-major then row-major."""
    return feature_map.permute(0, 2, 3, 1).reshape(-1, feature_map.shape[1])


def check_layers(layers: tuple[int, ...], available: int, name: str) -> tuple[int, ...]:
    """Layer indices into the extractor's list of maps, checked, or a UsageError listing the valid ones."""
    layers = tuple(int(i) for i in layers)
    if not layers or any(not 0 <= i < available for i in layers) or len(set(layers)) != len(layers):
        raise UsageError(
            f"{name}: layers {list(layers)} are not distinct indices into the extractor's {available} feature "
            f"maps; choose among {list(range(available))}"
        )
    return layers
