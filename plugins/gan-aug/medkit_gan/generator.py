"""The conditional StyleGAN2 generator: a mapping network with a class embedding, and a skip synthesis network.

Conditioning follows StyleGAN2-ADA's conditional configuration: the class embedding and z are each normalised
to unit second moment and concatenated before the mapping MLP. The embedding is its own module
(``mapping.embed``) so that it, and the per-class ``mapping.w_avg``, are the only class-dependent tensors: a
checkpoint trained on another number of classes transfers everything else (``transfer.py``).

Truncation is per class: ``w_avg`` holds one running mean of w per class, and ``truncation_psi`` pulls each w
towards the mean of its own class, so psi=0 gives every z of class k the same w, ``w_avg[k]``, and truncated
samples keep their class (a single global mean would wash the class out at small psi).
"""

from __future__ import annotations

import itertools
import math
from typing import ClassVar

import torch
from torch import nn

from medkit import UsageError

from .layers import EqualLinear, ModulatedConv2d, NoiseInjection, ToRGB, Upsample2d, activate

__all__ = ["Generator", "MappingNetwork", "SynthesisBlock", "SynthesisNetwork", "check_resolution"]

MIN_RESOLUTION, MAX_RESOLUTION = 8, 1024
NOISE_MODES = ("random", "const", "none")


def check_resolution(resolution: int) -> int:
    """The resolution as an int, or a UsageError: StyleGAN2 doubles from 4 x 4, so only powers of two work."""
    if (
        isinstance(resolution, bool)
        or int(resolution) != resolution
        or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION
        or int(resolution) & (int(resolution) - 1)
    ):
        raise UsageError(
            f"resolution must be a power of two from {MIN_RESOLUTION} to {MAX_RESOLUTION}, got {resolution}; "
            "resize the patches to one (e.g. 224-px patches to 256 with --set resolution=256)"
        )
    return int(resolution)


def check_num_classes(num_classes: int) -> int:
    if int(num_classes) != num_classes or num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer, got {num_classes}")
    return int(num_classes)


def layer_channels(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at a resolution: min(channel_base // resolution, channel_max), as in StyleGAN2."""
    return max(1, min(channel_base // resolution, channel_max))


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


class MappingNetwork(nn.Module):
    """z and class -> w: [norm(z), norm(embed(c))] through ``layers`` FC layers with leaky ReLU and a low
    learning rate (StyleGAN sec. 2; lr multiplier 0.01), plus the per-class running mean of w."""

    def __init__(
        self, z_dim: int, w_dim: int, num_classes: int, layers: int, lr_mult: float, w_avg_beta: float
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, w_dim)
        features = [z_dim + w_dim] + [w_dim] * layers
        self.layers = nn.ModuleList(
            EqualLinear(a, b, lr_mult=lr_mult, activation="lrelu") for a, b in itertools.pairwise(features)
        )
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(num_classes, w_dim))

    def forward(
        self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0, update_w_avg: bool = True
    ) -> torch.Tensor:
        """w (N, w_dim); the running means move only in training mode and when ``update_w_avg``."""
        c = c.long()
        x = torch.cat([normalize_2nd_moment(z), normalize_2nd_moment(self.embed(c))], dim=1)
        for layer in self.layers:
            x = layer(x)
        if self.training and update_w_avg:
            self._update_w_avg(x.detach(), c)
        if truncation_psi != 1:
            center = self.w_avg[c]
            x = center + truncation_psi * (x - center)
        return x

    @torch.no_grad()
    def _update_w_avg(self, w: torch.Tensor, c: torch.Tensor) -> None:
        sums = torch.zeros_like(self.w_avg).index_add_(0, c, w.to(self.w_avg.dtype))
        counts = torch.bincount(c, minlength=self.w_avg.shape[0])
        means = sums / counts.clamp(min=1)[:, None]
        # torch.where instead of boolean indexing: no device-to-host sync on a GPU
        self.w_avg.copy_(
            torch.where((counts > 0)[:, None], means.lerp(self.w_avg, self.w_avg_beta), self.w_avg)
        )


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally after x2 upsampling), noise, bias, leaky ReLU (StyleGAN2 fig. 2c)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool) -> None:
        super().__init__()
        self.up = Upsample2d() if up else None
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim)
        self.noise = NoiseInjection(resolution)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if self.up is not None:
            x = self.up(x)
        x = self.noise(self.conv(x, w), noise_mode)
        return activate(x + self.bias[None, :, None, None], "lrelu")


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: the learned 4x4 constant or an upsampling conv, a second conv,
    and toRGB, whose output is added to the upsampled image of the blocks below (StyleGAN2 fig. 7b)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, up=False)
        self.torgb = ToRGB(out_channels, w_dim)
        self.upsample_rgb = Upsample2d()
        self.num_conv = 1 if self.conv0 is None else 2

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ws (N, num_conv + 1, w_dim): one w per conv, the last for toRGB."""
        if self.conv0 is None:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
        x = self.conv1(x, ws[:, self.num_conv - 1], noise_mode)
        rgb = self.torgb(x, ws[:, self.num_conv])
        img = rgb if img is None else self.upsample_rgb(img) + rgb
        return x, img


class SynthesisNetwork(nn.Module):
    """ws -> image; ``blocks`` run from 4x4 upwards (g1 = the 4x4 block with the learned constant)."""

    def __init__(self, resolution: int, w_dim: int, channel_base: int, channel_max: int) -> None:
        super().__init__()
        self.resolution = resolution
        resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
        blocks, previous = [], 0
        for res in resolutions:
            channels = layer_channels(res, channel_base, channel_max)
            blocks.append(SynthesisBlock(previous, channels, w_dim, res))
            previous = channels
        self.blocks = nn.ModuleList(blocks)
        # a block's toRGB w is shared with the next block's first conv, as in StyleGAN2: 2 ws per block
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(
                f"synthesis expects ws of shape (N, {self.num_ws}, w_dim), got {tuple(ws.shape)}"
            )
        x = img = None
        start = 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, start : start + block.num_conv + 1], noise_mode)
            start += block.num_conv
        return img


class Generator(nn.Module):
    """Conditional StyleGAN2 generator; the output is linear (no tanh), roughly in [-1, 1]."""

    class_dependent: ClassVar[tuple[str, ...]] = ("mapping.embed.", "mapping.w_avg")

    def __init__(
        self,
        resolution: int,
        num_classes: int,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        channel_base: int = 16384,
        channel_max: int = 512,
        mapping_lr_mult: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        resolution = check_resolution(resolution)
        num_classes = check_num_classes(num_classes)
        self.hparams = {
            "resolution": resolution,
            "num_classes": num_classes,
            "z_dim": int(z_dim),
            "w_dim": int(w_dim),
            "mapping_layers": int(mapping_layers),
            "channel_base": int(channel_base),
            "channel_max": int(channel_max),
            "mapping_lr_mult": float(mapping_lr_mult),
            "w_avg_beta": float(w_avg_beta),
        }
        self.resolution, self.num_classes, self.z_dim, self.w_dim = resolution, num_classes, z_dim, w_dim
        self.mapping = MappingNetwork(z_dim, w_dim, num_classes, mapping_layers, mapping_lr_mult, w_avg_beta)
        self.synthesis = SynthesisNetwork(resolution, w_dim, channel_base, channel_max)
        self.num_ws = self.synthesis.num_ws

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor,
        truncation_psi: float = 1.0,
        noise_mode: str = "random",
        mixing_prob: float = 0.0,
        return_ws: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Images (N, 3, R, R), and the ws (N, num_ws, w_dim) used when ``return_ws``."""
        w = self.mapping(z, c, truncation_psi)
        ws = w[:, None].expand(-1, self.num_ws, -1)
        if mixing_prob > 0:
            ws = self._mix_styles(ws, c, truncation_psi, mixing_prob)
        images = self.synthesis(ws, noise_mode=noise_mode)
        return (images, ws) if return_ws else images

    def _mix_styles(
        self, ws: torch.Tensor, c: torch.Tensor, truncation_psi: float, mixing_prob: float
    ) -> torch.Tensor:
        """Style mixing regularisation (StyleGAN sec. 3.1): with probability ``mixing_prob`` per sample, the ws
        of a second z of the same class from a random layer onward."""
        batch = ws.shape[0]
        z2 = torch.randn(batch, self.z_dim, device=ws.device, dtype=ws.dtype)
        w2 = self.mapping(z2, c, truncation_psi, update_w_avg=False)
        cutoff = torch.randint(1, self.num_ws, (batch, 1), device=ws.device)
        mixed = torch.rand(batch, 1, device=ws.device) < mixing_prob
        layer = torch.arange(self.num_ws, device=ws.device)[None]
        take_second = (layer >= cutoff) & mixed
        return torch.where(take_second[..., None], w2[:, None], ws)
