"""PatchCore (Roth et al. 2022): a coreset of locally aware patch features, scored by nearest-neighbour distance.

Patch features (sec. 3.1): two layers of the extractor, each averaged over 3x3 neighbourhoods, the deeper one
upsampled to the shallower one's grid, concatenated (optionally average-pooled along channels to ``target_dim``).
The memory bank of all training patches is reduced by greedy k-centre selection (sec. 3.2, Alg. 1) on a sparse
random projection to 128 dimensions, updating each point's distance to the nearest selected centre as it goes,
so memory is linear in the bank. A test patch scores its distance to the nearest coreset feature (FAISS); the
image score is the largest patch score, optionally reweighted by the b neighbours of its nearest feature (eq. 7).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medkit import UsageError

from ..knn import IndexKind, NearestNeighbours
from .base import AnomalyModel, check_layers, to_vectors, upsample


def sparse_random_projection(dim: int, projection_dim: int, generator: torch.Generator) -> torch.Tensor:
    """A (dim, projection_dim) Achlioptas/Li sparse random matrix: density 1/sqrt(dim), entries +-1/sqrt(density k)."""
    density = 1 / math.sqrt(dim)
    draw = torch.rand(dim, projection_dim, generator=generator)
    signs = torch.where(draw < density / 2, -1.0, 1.0)
    return torch.where(draw < density, signs, 0.0) / math.sqrt(density * projection_dim)


# Above this many bytes of projected bank the selection loop is bound by memory bandwidth, not arithmetic: each
# step reads the whole bank once, and bfloat16 halves the bytes read. Below it, the bank sits in cache and
# float32 is as fast.
BFLOAT16_BANK_BYTES = 2**25


def greedy_coreset(
    vectors: torch.Tensor, size: int, projection_dim: int = 128, seed: int = 1024
) -> torch.Tensor:
    """Indices of ``size`` rows chosen by farthest-first traversal (greedy k-centre), in selection order.

    Rows are compared after a sparse random projection to ``projection_dim`` dimensions (when they have more).
    Only a vector of each row's squared distance to its nearest chosen row is kept and updated: memory O(N).
    A projected bank larger than ``BFLOAT16_BANK_BYTES`` is held in bfloat16 (norms and the running distances
    stay float32): the selection is approximate in any case, and its covering radius barely moves.
    """
    n = len(vectors)
    if not 1 <= size <= n:
        raise UsageError(f"coreset size {size} must be between 1 and the number of vectors {n}")
    generator = torch.Generator().manual_seed(seed)
    points = vectors.float()
    if points.shape[1] > projection_dim:
        projection = sparse_random_projection(points.shape[1], projection_dim, generator)
        points = points @ projection.to(points.device)
    if points.numel() * 4 > BFLOAT16_BANK_BYTES:
        points = points.to(torch.bfloat16)
    rounded = points.float()
    norms = (rounded * rounded).sum(dim=1)
    del rounded
    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(n, (1,), generator=generator))
    nearest = torch.full((n,), math.inf, device=points.device)
    for i in range(1, size):
        last = chosen[i - 1]
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2: one matrix-vector product per step, no (N, dim) temporary
        distances = (points @ points[last]).float().mul_(-2).add_(norms).add_(norms[last]).clamp_min_(0)
        torch.minimum(nearest, distances, out=nearest)
        chosen[i] = int(nearest.argmax())
    return chosen


class PatchCore(AnomalyModel):
    """PatchCore over any feature extractor.

    ``layers``: indices into the extractor's maps (default: its last two, the paper's layers 2 and 3 when the
    extractor gives a ResNet's layers 1-3; ``backbone_table.patchcore_layers`` names such a pair per backbone). ``coreset_fraction``: share of the bank kept (0.01-0.25, paper
    0.1; 1.0 keeps all). ``reweight_neighbours``: b of eq. 7 (0 = off, the default; the paper uses a few).
    ``index``/``nlist``/``nprobe``: the FAISS index over the coreset (see :class:`~medkit_anomaly.knn.NearestNeighbours`).
    """

    name = "patchcore"

    def __init__(
        self,
        extractor: nn.Module,
        layers: tuple[int, ...] | None = None,
        coreset_fraction: float = 0.1,
        projection_dim: int = 128,
        target_dim: int | None = None,
        reweight_neighbours: int = 0,
        index: IndexKind = "flat",
        nlist: int | None = None,
        nprobe: int = 8,
        seed: int = 1024,
        sigma: float = 4.0,
        gpu: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(extractor, sigma=sigma, device=device)
        maps = len(extractor.channels)
        layers = tuple(range(maps))[-2:] if layers is None else tuple(layers)
        self.layers = check_layers(layers, maps, self.name)
        if not 0 < coreset_fraction <= 1:
            raise UsageError(
                f"patchcore: coreset_fraction must be in (0, 1], got {coreset_fraction} (paper: 0.1)"
            )
        if reweight_neighbours < 0 or projection_dim < 1 or (target_dim is not None and target_dim < 1):
            raise UsageError(
                "patchcore: reweight_neighbours must be >= 0, projection_dim and target_dim >= 1; got "
                f"{reweight_neighbours}, {projection_dim}, {target_dim}"
            )
        self.coreset_fraction, self.projection_dim = coreset_fraction, projection_dim
        self.target_dim, self.reweight_neighbours, self.seed = target_dim, reweight_neighbours, seed
        self.memory = NearestNeighbours(index=index, nlist=nlist, nprobe=nprobe, gpu=gpu, seed=seed)

    @property
    def config(self) -> dict[str, Any]:
        return {
            **super().config,
            "layers": list(self.layers),
            "coreset_fraction": self.coreset_fraction,
            "projection_dim": self.projection_dim,
            "target_dim": self.target_dim,
            "reweight_neighbours": self.reweight_neighbours,
            "index": self.memory.kind,
            "nlist": self.memory.nlist,
            "nprobe": self.memory.nprobe,
            "seed": self.seed,
        }

    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, D, h, w): locally aware patch features on the grid of the shallower chosen layer."""
        maps = self.features(images)
        chosen = [F.avg_pool2d(maps[i], kernel_size=3, stride=1, padding=1) for i in self.layers]
        grid = tuple(chosen[0].shape[-2:])
        patches = torch.cat([upsample(m, grid) for m in chosen], dim=1)
        if self.target_dim is None:
            return patches
        n, _, h, w = patches.shape
        pooled = F.adaptive_avg_pool1d(to_vectors(patches).unsqueeze(1), self.target_dim).squeeze(1)
        return pooled.reshape(n, h, w, self.target_dim).permute(0, 3, 1, 2)

    def _fit(self, batches: Iterator[torch.Tensor]) -> None:
        bank = torch.cat([to_vectors(self.patch_features(images)).cpu() for images in batches])
        size = max(1, round(self.coreset_fraction * len(bank)))
        if size < len(bank):
            bank = bank[greedy_coreset(bank.to(self.device), size, self.projection_dim, self.seed)]
        self.memory.add(bank)

    def _score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = self.patch_features(images)
        n, _, h, w = patches.shape
        queries = to_vectors(patches).cpu().numpy()
        distances, nearest = self.memory.search(queries, 1)
        patch_scores = torch.from_numpy(distances[:, 0]).reshape(n, h, w)
        image_scores = patch_scores.flatten(1).amax(dim=1)
        if self.reweight_neighbours:
            worst = patch_scores.flatten(1).argmax(dim=1).numpy() + np.arange(n) * h * w
            image_scores = image_scores * self._reweighting(queries[worst], nearest[worst, 0])
        return image_scores, upsample(patch_scores, tuple(images.shape[-2:]))

    def _reweighting(self, queries: np.ndarray, nearest: np.ndarray) -> torch.Tensor:
        """Eq. 7: 1 - softmax weight of the nearest feature m* among the b neighbours N_b(m*) of m* in the bank.

        A test patch whose nearest feature sits in a dense region (close neighbours) keeps less of its score
        than one whose nearest feature is isolated.
        """
        b = min(self.reweight_neighbours, self.memory.ntotal)
        nearest_features = self.memory.reconstruct(nearest)  # m*
        _, neighbourhood = self.memory.search(nearest_features, b)  # N_b(m*), m* itself included
        neighbours = self.memory.reconstruct(neighbourhood)  # (n, b, D)
        to_neighbours = torch.from_numpy(np.linalg.norm(neighbours - queries[:, None], axis=2))
        to_nearest = torch.from_numpy(np.linalg.norm(nearest_features - queries, axis=1))
        return 1 - torch.exp(to_nearest - torch.logsumexp(to_neighbours, dim=1))

    def _fitted_state(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def _load_fitted_state(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
