"""CFLOW-AD (Gudovskiy et al. 2022): a conditional normalising flow per layer over the feature vectors of positions.

Each chosen layer's feature vector at a position (a "fiber") is mapped by a flow of affine coupling blocks
(FrEIA's ``AllInOneBlock``), conditioned on a 2D sinusoidal encoding of the position (sec. 4.2), to a standard
normal; training maximises the log-likelihood of normal fibers with Adam. A test position's log-likelihood per
dimension, exponentiated after subtracting the layer's training maximum, is upsampled and summed over layers
(sec. 4.3); the anomaly map is the number of layers minus that sum. CFLOW normalises by the test set's maximum;
the training maximum makes an image's score independent of the images scored with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from medkit import UsageError

from .base import AnomalyModel, check_layers, to_vectors, upsample


def positional_encoding(dim: int, height: int, width: int) -> torch.Tensor:
    """(dim, height, width): sines and cosines of x in the first half of the channels, of y in the second."""
    if dim % 4:
        raise UsageError(f"cflow: condition_dim must be a multiple of 4, got {dim}")
    quarter = dim // 4
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(quarter) / quarter)
    x = torch.arange(width)[:, None] * frequencies  # (width, quarter)
    y = torch.arange(height)[:, None] * frequencies
    along_x = torch.cat([x.sin(), x.cos()], dim=1).T[:, None, :].expand(-1, height, -1)
    along_y = torch.cat([y.sin(), y.cos()], dim=1).T[:, :, None].expand(-1, -1, width)
    return torch.cat([along_x, along_y]).float()


def coupling_subnet(dims_in: int, dims_out: int) -> nn.Module:
    """The coupling blocks' scale-and-shift network: a two-layer perceptron, hidden width twice its input."""
    return nn.Sequential(nn.Linear(dims_in, 2 * dims_in), nn.ReLU(), nn.Linear(2 * dims_in, dims_out))


def conditional_flow(channels: int, condition_dim: int, blocks: int, clamp: float) -> nn.Module:
    """A FrEIA sequence of ``blocks`` conditional affine coupling blocks over ``channels``-dim vectors."""
    from FrEIA.framework import SequenceINN
    from FrEIA.modules import AllInOneBlock

    flow = SequenceINN(channels)
    for _ in range(blocks):
        flow.append(
            AllInOneBlock,
            cond=0,
            cond_shape=(condition_dim,),
            subnet_constructor=coupling_subnet,
            affine_clamping=clamp,
            global_affine_type="SOFTPLUS",
            permute_soft=channels <= 512,  # FrEIA: soft (orthogonal) permutations get slow above 512 channels
        )
    return flow


def log_likelihood(flow: nn.Module, fibers: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """log p(x) / dim of each fiber (B, C) under the flow: standard-normal log-density of z plus log|det J|."""
    z, log_det = flow(fibers, c=[condition])
    dim = fibers.shape[1]
    return (-0.5 * (z * z).sum(dim=1) - 0.5 * dim * math.log(2 * math.pi) + log_det) / dim


class CFlow(AnomalyModel):
    """CFLOW-AD over any feature extractor.

    ``layers``: indices into the extractor's maps (default: all of them; the paper uses WRN-50 layers 2-4);
    ``blocks``: coupling blocks per flow (paper 8); ``condition_dim``: size of the positional encoding (paper 128);
    ``epochs``, ``lr``, ``fiber_batch``: Adam training over the cached training fibers. ``fibers_per_epoch``: a
    random sample of each layer's fibers per epoch (None: all, as the paper; a CPU budget otherwise, since a
    stride-2 layer at 224 px gives 12,544 fibers per image). Fitting keeps the chosen feature maps of all training
    images in memory for the epochs.
    """

    name = "cflow"

    def __init__(
        self,
        extractor: nn.Module,
        layers: tuple[int, ...] | None = None,
        blocks: int = 8,
        condition_dim: int = 128,
        clamp: float = 1.9,
        epochs: int = 3,
        lr: float = 1e-3,
        fiber_batch: int = 256,
        fibers_per_epoch: int | None = None,
        seed: int = 1024,
        sigma: float = 4.0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(extractor, sigma=sigma, device=device)
        channels = list(extractor.channels)
        self.layers = check_layers(
            tuple(range(len(channels))) if layers is None else layers, len(channels), self.name
        )
        if blocks < 1 or epochs < 1 or fiber_batch < 1 or lr <= 0 or (fibers_per_epoch or 1) < 1:
            raise UsageError(
                f"cflow: blocks, epochs, fiber_batch and fibers_per_epoch must be >= 1 and lr > 0; got {blocks}, "
                f"{epochs}, {fiber_batch}, {fibers_per_epoch}, {lr}"
            )
        if any(channels[i] < 2 for i in self.layers):
            raise UsageError(f"cflow: coupling blocks need layers of >= 2 channels, got {channels}")
        self.blocks, self.condition_dim, self.clamp = blocks, condition_dim, clamp
        self.epochs, self.lr, self.fiber_batch, self.seed = epochs, lr, fiber_batch, seed
        self.fibers_per_epoch = fibers_per_epoch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            numpy_state = np.random.get_state()
            np.random.seed(seed % 2**32)  # FrEIA draws its channel permutations from numpy's global generator
            try:
                flows = [conditional_flow(channels[i], condition_dim, blocks, clamp) for i in self.layers]
            finally:
                np.random.set_state(numpy_state)
        self.flows = nn.ModuleList(flows).to(self.device)
        # each layer's largest training log-likelihood per dimension: the normaliser of its probability map
        self.reference = torch.zeros(len(self.layers), device=self.device)

    @property
    def config(self) -> dict[str, Any]:
        return {
            **super().config,
            "layers": list(self.layers),
            "blocks": self.blocks,
            "condition_dim": self.condition_dim,
            "clamp": self.clamp,
            "epochs": self.epochs,
            "lr": self.lr,
            "fiber_batch": self.fiber_batch,
            "fibers_per_epoch": self.fibers_per_epoch,
            "seed": self.seed,
        }

    def modules_to_save(self) -> nn.ModuleDict:
        return nn.ModuleDict({"extractor": self.extractor, "flows": self.flows})

    def chosen_maps(self, images: torch.Tensor) -> list[torch.Tensor]:
        maps = self.features(images)
        return [maps[i] for i in self.layers]

    def fibers(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N*h*w, C) feature vectors of a (N, C, h, w) map and (N*h*w, condition_dim) encodings of their positions."""
        n, _, h, w = feature_map.shape
        encoding = positional_encoding(self.condition_dim, h, w).to(feature_map.device)
        return to_vectors(feature_map), to_vectors(encoding.unsqueeze(0).expand(n, -1, -1, -1))

    def _fit(self, batches: Iterator[torch.Tensor]) -> None:
        per_batch = [[m.cpu() for m in self.chosen_maps(images)] for images in batches]
        training = [self.fibers(torch.cat(layer)) for layer in zip(*per_batch, strict=True)]
        optimizer = torch.optim.Adam(self.flows.parameters(), lr=self.lr)
        generator = torch.Generator().manual_seed(self.seed)
        self.flows.train()
        for _ in range(self.epochs):
            for flow, (fibers, condition) in zip(self.flows, training, strict=True):
                order = torch.randperm(len(fibers), generator=generator)[: self.fibers_per_epoch]
                for batch in order.split(self.fiber_batch):
                    loss = -log_likelihood(
                        flow, fibers[batch].to(self.device), condition[batch].to(self.device)
                    )
                    optimizer.zero_grad()
                    loss.mean().backward()
                    optimizer.step()
        self.flows.eval()
        with torch.no_grad():
            layers = zip(self.flows, training, strict=True)
            reference = [self._layer_likelihood(flow, *layer).max() for flow, layer in layers]
        self.reference = torch.stack(reference)

    def _layer_likelihood(
        self, flow: nn.Module, fibers: torch.Tensor, condition: torch.Tensor
    ) -> torch.Tensor:
        chunks = zip(fibers.split(4096), condition.split(4096), strict=True)
        return torch.cat([log_likelihood(flow, x.to(self.device), c.to(self.device)) for x, c in chunks])

    def _score(self, images: torch.Tensor) -> tuple[None, torch.Tensor]:
        size = tuple(images.shape[-2:])
        probability = torch.zeros(len(images), *size, device=self.device)
        for flow, reference, feature_map in zip(
            self.flows, self.reference, self.chosen_maps(images), strict=True
        ):
            n, _, h, w = feature_map.shape
            likelihood = self._layer_likelihood(flow, *self.fibers(feature_map)).reshape(n, h, w)
            probability += upsample(torch.exp(likelihood - reference), size)
        return None, len(self.layers) - probability

    def _fitted_state(self) -> dict[str, Any]:
        return {"reference": self.reference}

    def _load_fitted_state(self, state: dict[str, Any]) -> None:
        self.reference = state["reference"].to(self.device)
