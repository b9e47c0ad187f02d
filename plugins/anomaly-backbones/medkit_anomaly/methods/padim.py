"""PaDiM (Defard et al. 2020): a Gaussian per patch position over a random subset of embedding channels.

The embedding of a position is the extractor's maps aligned to the first map's grid (nearest upsampling) and
concatenated; ``d`` of its channels, drawn once with the seed, are kept (sec. 3.1). Each position gets a mean and a
covariance with N-1 normalisation plus 0.01 I (eq. 1); a test position scores its Mahalanobis distance (eq. 2).
The statistics are accumulated online as float32 running sums of shifted x and x x^T, so fitting holds one
covariance-sized buffer and never the training embeddings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from medkit import UsageError

from .base import AnomalyModel, upsample

COVARIANCE_RIDGE = 0.01  # eq. 1: Sigma + eps I keeps the sample covariance full rank and invertible


def random_channels(embedding_dim: int, d: int, seed: int) -> torch.Tensor:
    """The ``d`` channels of the embedding PaDiM keeps: a sorted random subset, the same for every call with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(embedding_dim, generator=generator)[:d].sort().values


class GaussianSums:
    """Running sums of y and y y^T per position over (P, d) embeddings, y = x - shift, in chunks of positions.

    The shift is the first batch's mean per position: sums of shifted data stay small, so float32 accumulates
    them without the cancellation that sum(x x^T) - n mu mu^T suffers (the shifted-data algorithm), at half the
    memory of float64 sums. :meth:`finish` turns one chunk at a time into inverse covariances, freeing each
    chunk's sums as its inverses are written, so the peak stays near one float32 covariance set.
    """

    chunk_bytes = 2**26

    def __init__(self, positions: int, d: int, device: torch.device) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None
        self.sum = torch.zeros(positions, d, device=device)
        self.chunk = max(1, self.chunk_bytes // (4 * d * d))
        self.outer = [
            torch.zeros(min(self.chunk, positions - start), d, d, device=device)
            for start in range(0, positions, self.chunk)
        ]

    def add(self, embeddings: torch.Tensor) -> None:
        """Add a batch of embeddings (B, P, d)."""
        embeddings = embeddings.float()
        if self.shift is None:
            self.shift = embeddings.mean(dim=0)
        self.count += embeddings.shape[0]
        start = 0
        for outer in self.outer:
            end = start + len(outer)
            # (chunk, B, d), contiguous: batched products over a strided view take a slow path (~100x here)
            part = (embeddings[:, start:end] - self.shift[start:end]).transpose(0, 1).contiguous()
            self.sum[start:end] += part.sum(dim=1)
            outer.baddbmm_(part.transpose(1, 2), part)  # in place: no covariance-sized temporary
            start = end

    def finish(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Means (P, d) and inverse covariances (P, d, d); the sums are consumed."""
        n, shifted_mean = self.count, self.sum / self.count
        positions, d = shifted_mean.shape
        eye = torch.eye(d, device=shifted_mean.device)
        # pages of an empty tensor become resident only as each chunk's inverses are written into them
        inverses = torch.empty(positions, d, d, device=shifted_mean.device)
        start = 0
        while self.outer:
            outer = self.outer.pop(0)
            end = start + len(outer)
            mu = shifted_mean[start:end]
            outer -= n * mu.unsqueeze(2) * mu.unsqueeze(1)
            outer /= n - 1
            outer += COVARIANCE_RIDGE * eye
            inverses[start:end] = torch.linalg.inv(outer)
            del outer
            start = end
        return self.shift + shifted_mean, inverses


class PaDiM(AnomalyModel):
    """PaDiM over any feature extractor.

    ``d``: channels kept (default the extractor's ``default_d``, else its whole ``embedding_dim``); ``seed``
    fixes which (1024 as in the study). Images scored later must have the training size: the Gaussians are per
    position of the training grid.
    """

    name = "padim"

    def __init__(
        self,
        extractor: nn.Module,
        d: int | None = None,
        seed: int = 1024,
        sigma: float = 4.0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(extractor, sigma=sigma, device=device)
        embedding_dim = int(extractor.embedding_dim)
        d = d or getattr(extractor, "default_d", None) or embedding_dim
        if not 1 <= d <= embedding_dim:
            raise UsageError(
                f"padim: d={d} channels cannot be drawn from an embedding of dimension {embedding_dim}; "
                f"choose d between 1 and {embedding_dim}"
            )
        self.d, self.seed = int(d), seed
        self.channels = random_channels(embedding_dim, self.d, seed)
        self.mean: torch.Tensor | None = None
        self.inv_covariance: torch.Tensor | None = None
        self.grid: tuple[int, int] = (0, 0)

    @property
    def config(self) -> dict[str, Any]:
        return {**super().config, "d": self.d, "seed": self.seed}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N, d, h1, w1): the kept channels of each layer, aligned to the first layer's grid and concatenated."""
        maps = self.features(images)
        grid = tuple(maps[0].shape[-2:])
        parts, offset = [], 0
        for feature_map in maps:
            width = feature_map.shape[1]
            kept = self.channels[(self.channels >= offset) & (self.channels < offset + width)] - offset
            # select before upsampling: only the d kept channels are ever brought to the fine grid
            parts.append(upsample(feature_map[:, kept.to(feature_map.device)], grid, mode="nearest"))
            offset += width
        if offset != self.extractor.embedding_dim:
            raise UsageError(
                f"padim: the extractor's maps have {offset} channels in all, but its embedding_dim is "
                f"{self.extractor.embedding_dim}"
            )
        return torch.cat(parts, dim=1)

    def _fit(self, batches: Iterator[torch.Tensor]) -> None:
        sums = None
        for images in batches:
            embedding = self.embed(images)
            n, d, h, w = embedding.shape
            if sums is None:
                self.grid = (h, w)
                sums = GaussianSums(h * w, d, embedding.device)
            self._check_grid(embedding)
            sums.add(embedding.reshape(n, d, h * w).transpose(1, 2))
        if sums.count < 2:
            raise UsageError("padim: a covariance needs at least 2 normal images; fit received 1")
        self.mean, self.inv_covariance = sums.finish()

    def _check_grid(self, embedding: torch.Tensor) -> None:
        if tuple(embedding.shape[-2:]) != tuple(self.grid):
            raise UsageError(
                f"padim: feature grid {tuple(embedding.shape[-2:])} differs from the training grid {self.grid}; "
                "PaDiM's Gaussians are per position, so resize images to the training size"
            )

    def mahalanobis(self, embedding: torch.Tensor) -> torch.Tensor:
        """(N, d, h, w) embeddings -> (N, h, w) Mahalanobis distances to the per-position Gaussians (eq. 2)."""
        n, d, h, w = embedding.shape
        delta = embedding.reshape(n, d, h * w).permute(2, 0, 1) - self.mean.unsqueeze(1)  # (P, N, d)
        # contiguous: on the CPU, bmm over the permuted layout is ~10x slower and its first call takes seconds
        delta = delta.contiguous()
        squared = (torch.bmm(delta, self.inv_covariance) * delta).sum(dim=2)
        return squared.clamp_min(0).sqrt().T.reshape(n, h, w)

    def _score(self, images: torch.Tensor) -> tuple[None, torch.Tensor]:
        embedding = self.embed(images)
        self._check_grid(embedding)
        return None, upsample(self.mahalanobis(embedding), tuple(images.shape[-2:]))

    def _fitted_state(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "grid": list(self.grid),
            "mean": self.mean,
            "inv_covariance": self.inv_covariance,
        }

    def _load_fitted_state(self, state: dict[str, Any]) -> None:
        self.channels = state["channels"].cpu()
        self.grid = tuple(state["grid"])
        self.mean = state["mean"].to(self.device)
        self.inv_covariance = state["inv_covariance"].to(self.device)
