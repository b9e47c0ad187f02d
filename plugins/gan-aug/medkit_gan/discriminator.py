"""The conditional StyleGAN2 discriminator: residual blocks down to 4x4, a minibatch-stddev epilogue, and the
heads every conditional loss of the plugin needs.

``blocks`` follow FreezeD's naming: d1 is the block that sees the image first (fromRGB included), the last
block is the epilogue that ends in the penultimate feature vector h. The heads read h: the adversarial logit
(plus the projection term <embed(c), h>, Miyato & Koyama 2018), the D2D-CE embedding and class proxies (ReACGAN,
Kang et al. 2021) and an AC-GAN classifier; the loss picks which it uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from medkit import UsageError

from .generator import check_num_classes, check_resolution, layer_channels
from .layers import EqualConv2d, EqualLinear

__all__ = ["Discriminator", "DiscriminatorBlock", "DiscriminatorEpilogue", "DiscriminatorOutput"]


@dataclass
class DiscriminatorOutput:
    """logits (N,), embedding (N, embed_dim) before normalisation, proxy (N, embed_dim) of each sample's class,
    class_logits (N, num_classes)."""

    logits: torch.Tensor
    embedding: torch.Tensor
    proxy: torch.Tensor
    class_logits: torch.Tensor


class DiscriminatorBlock(nn.Module):
    """Residual block (StyleGAN2 fig. 7c): two 3x3 convs, the second downsampling, plus a 1x1 downsampling skip,
    summed and scaled by sqrt(1/2) to keep the variance. The first block also holds fromRGB."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int, from_rgb: bool) -> None:
        super().__init__()
        self.resolution = resolution
        self.fromrgb = EqualConv2d(3, in_channels, 1, activation="lrelu") if from_rgb else None
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation="lrelu", down=True)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(x)
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


def minibatch_stddev(x: torch.Tensor, group_size: int, channels: int) -> torch.Tensor:
    """Append the mean standard deviation over groups of samples (ProGAN sec. 3) as ``channels`` feature maps.

    The group is the largest divisor of the batch not above ``group_size``, so any batch size works; sample i
    belongs to group i mod (N / group), as in StyleGAN2.
    """
    batch, features, height, width = x.shape
    group = max(g for g in range(1, min(group_size, batch) + 1) if batch % g == 0)
    y = x.reshape(group, -1, channels, features // channels, height, width)
    y = (y - y.mean(dim=0)).square().mean(dim=0)
    y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (N / group, channels)
    y = y.reshape(-1, channels, 1, 1).repeat(group, 1, height, width)
    return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 features -> minibatch stddev -> 3x3 conv -> FC: the penultimate feature vector h (N, channels)."""

    def __init__(self, channels: int, mbstd_group: int, mbstd_channels: int) -> None:
        super().__init__()
        self.resolution = 4
        self.mbstd_group, self.mbstd_channels = mbstd_group, mbstd_channels
        self.conv = EqualConv2d(channels + mbstd_channels, channels, 3, activation="lrelu")
        self.fc = EqualLinear(channels * 16, channels, activation="lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mbstd_channels > 0:
            x = minibatch_stddev(x, self.mbstd_group, self.mbstd_channels)
        return self.fc(self.conv(x).flatten(1))


class Discriminator(nn.Module):
    """Conditional residual StyleGAN2 discriminator with projection, D2D-CE and AC-GAN heads."""

    class_dependent: ClassVar[tuple[str, ...]] = ("projection.", "proxies.", "class_head.")

    def __init__(
        self,
        resolution: int,
        num_classes: int,
        channel_base: int = 16384,
        channel_max: int = 512,
        mbstd_group: int = 4,
        mbstd_channels: int = 1,
        embed_dim: int = 512,
        projection: bool = True,
    ) -> None:
        super().__init__()
        resolution = check_resolution(resolution)
        num_classes = check_num_classes(num_classes)
        self.hparams = {
            "resolution": resolution,
            "num_classes": num_classes,
            "channel_base": int(channel_base),
            "channel_max": int(channel_max),
            "mbstd_group": int(mbstd_group),
            "mbstd_channels": int(mbstd_channels),
            "embed_dim": int(embed_dim),
            "projection": bool(projection),
        }
        self.resolution, self.num_classes, self.embed_dim = resolution, num_classes, embed_dim
        blocks: list[nn.Module] = []
        res = resolution
        while res > 4:
            in_ch, out_ch = (layer_channels(r, channel_base, channel_max) for r in (res, res // 2))
            blocks.append(DiscriminatorBlock(in_ch, out_ch, res, from_rgb=res == resolution))
            res //= 2
        features = layer_channels(4, channel_base, channel_max)
        if mbstd_channels < 0 or (mbstd_channels and features % mbstd_channels):
            raise UsageError(
                f"mbstd_channels must divide the {features} feature maps at 4x4 (or be 0), got {mbstd_channels}"
            )
        blocks.append(DiscriminatorEpilogue(features, mbstd_group, mbstd_channels))
        self.blocks = nn.ModuleList(blocks)
        self.adv = EqualLinear(features, 1)
        self.projection = nn.Embedding(num_classes, features) if projection else None
        self.embed_head = EqualLinear(features, embed_dim)
        self.proxies = nn.Embedding(num_classes, embed_dim)
        self.class_head = EqualLinear(features, num_classes)

    def forward(self, images: torch.Tensor, c: torch.Tensor) -> DiscriminatorOutput:
        expected = (3, self.resolution, self.resolution)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"the discriminator expects images (N, {3}, {self.resolution}, {self.resolution}), "
                f"got {tuple(images.shape)}"
            )
        c = c.long()
        h = images
        for block in self.blocks:
            h = block(h)
        logits = self.adv(h).squeeze(1)
        if self.projection is not None:
            # scaled by 1/sqrt(dim) so the projection term starts at the size of the adversarial logit
            logits = logits + (self.projection(c) * h).sum(dim=1) / math.sqrt(h.shape[1])
        return DiscriminatorOutput(
            logits=logits,
            embedding=self.embed_head(h),
            proxy=self.proxies(c),
            class_logits=self.class_head(h),
        )
