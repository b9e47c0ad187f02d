"""Transformer-bottleneck segmenters of paper 002: the authors' simplified MedT and their TransUNet.

Both are U-Nets whose deepest feature map passes through a stack of self-attention layers (spec
"Architectures", MedT and TransUNet). ``transunet`` keeps the authors' patching, which leaves a single token at
128 px; ``transunet_tokens`` patches the same grid finely enough for attention to have something to attend to.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medkit import UsageError

from .base import SegmentationNet, check_width, conv_bn


def conv_stack(in_channels: int, out_channels: int, depth: int) -> nn.Sequential:
    """``depth`` x (conv3x3 with bias -> BN -> ReLU), the only conv block both authors' models use."""
    return nn.Sequential(
        *(conv_bn(in_channels if i == 0 else out_channels, out_channels) for i in range(depth))
    )


def encode(stages: nn.ModuleList, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Each conv stage, keeping its output as a skip, then a 2x max-pool (MedT and TransUNet share this)."""
    skips = []
    for stage in stages:
        x = stage(x)
        skips.append(x)
        x = F.max_pool2d(x, 2)
    return x, skips


class UpStage(nn.Module):
    """U-Net decoder stage: ConvTranspose2d(k2, s2) in -> out, concat the skip, then ``depth`` conv blocks."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, depth: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.convs = conv_stack(out_channels + skip_channels, out_channels, depth)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.up(x), skip], dim=1))


class MedT(SegmentationNet):
    """The authors' simplified MedT (no gated axial attention; spec "Architectures", MedT).

    Encoder: four single conv-BN-ReLU stages of 2b, 4b, 8b, 16b channels, each followed by 2x2 max-pooling.
    Bottleneck: four ``nn.TransformerEncoderLayer(d_model=16b, nhead=8)`` with torch's defaults (post-norm,
    ReLU, feed-forward 2048, dropout 0.1, no position embedding) over the H/16 x W/16 grid as tokens.
    Decoder: four up-stages 16b -> 8b -> 4b -> 2b -> b, each concatenating the encoder output of its scale
    (taken before pooling) and applying one conv block; 1x1 head.
    """

    name = "medt"
    stride = 16

    def __init__(self, in_channels: int = 1, num_classes: int = 4, b: int = 32) -> None:
        check_width(self.name, b)
        super().__init__(in_channels, num_classes)
        widths = [2 * b, 4 * b, 8 * b, 16 * b]
        self.encoder = nn.ModuleList(
            conv_stack(c_in, c_out, 1)
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
        )
        # 16b = 8 * 2b, so nhead=8 divides d_model for every integer width.
        self.transformer = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model=16 * b, nhead=8, batch_first=True) for _ in range(4)
        )
        # The skip of each scale has as many channels as the up-stage input (e.g. 16b skip + 8b up -> 8b).
        self.decoder = nn.ModuleList(UpStage(c, c, c // 2, 1) for c in reversed(widths))
        self.head = nn.Conv2d(b, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x, skips = encode(self.encoder, x)
        tokens = x.flatten(2).transpose(1, 2)  # (N, H/16 * W/16, 16b)
        for layer in self.transformer:
            tokens = layer(tokens)
        x = tokens.transpose(1, 2).reshape(x.shape)
        for stage, skip in zip(self.decoder, reversed(skips), strict=True):
            x = stage(x, skip)
        return self.head(x)


class PreNormBlock(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x)) with a GELU MLP of width 4 x dim."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(4 * dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TransUNet(SegmentationNet):
    """The authors' TransUNet (spec "Architectures", TransUNet).

    Encoder: four stages of two conv blocks (b, 2b, 4b, 8b), each followed by 2x2 max-pooling; bottleneck of
    two conv blocks to 16b at H/16. The bottleneck map is cut into ``patch_size`` patches by
    conv(16b -> 512, k=patch, s=patch), gets a learned position embedding, passes 12 pre-norm blocks (8 heads),
    and is folded back to the H/16 grid by ConvTranspose2d(512 -> 16b, k=patch, s=patch). Four U-Net up-stages
    (two conv blocks each) and a 1x1 head follow.

    With the authors' patch size 8 a 128 px input has an 8 x 8 bottleneck grid and so ONE token: attention over
    a single token is an identity mix, and the transformer acts as a per-image MLP. ``transunet`` keeps that
    flaw under the paper's name; ``transunet_tokens`` is the usable variant.

    The position embedding has one entry per token of an ``image_size`` x ``image_size`` input, so the model
    refuses other sizes with a message instead of interpolating it silently. The authors' code computes the
    token count but adds no position embedding; with one token it would only be a learned bias anyway.
    """

    name = "transunet"
    stride = 16

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 4,
        b: int = 16,
        image_size: int = 128,
        patch_size: int = 8,
        embed_dim: int = 512,
        depth: int = 12,
        heads: int = 8,
    ) -> None:
        check_width(self.name, b)
        super().__init__(in_channels, num_classes)
        if patch_size < 1 or image_size < 1 or image_size % (self.stride * patch_size):
            raise UsageError(
                f"{self.name}: image_size={image_size} must be a positive multiple of "
                f"16 x patch_size = {self.stride * patch_size} (the bottleneck grid is cut into patches)"
            )
        self.image_size = image_size
        self.grid = image_size // (self.stride * patch_size)
        self.num_tokens = self.grid**2
        widths = [b, 2 * b, 4 * b, 8 * b]
        self.encoder = nn.ModuleList(
            conv_stack(c_in, c_out, 2)
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
        )
        self.bottleneck = conv_stack(8 * b, 16 * b, 2)
        self.patch_embed = nn.Conv2d(16 * b, embed_dim, patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.transformer = nn.Sequential(*(PreNormBlock(embed_dim, heads) for _ in range(depth)))
        self.unpatch = nn.ConvTranspose2d(embed_dim, 16 * b, patch_size, stride=patch_size)
        self.decoder = nn.ModuleList(UpStage(2 * c, c, c, 2) for c in reversed(widths))
        self.head = nn.Conv2d(b, num_classes, 1)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise UsageError(
                f"{self.name} was built for {self.image_size}x{self.image_size} images (its position embedding "
                f"has {self.num_tokens} tokens), got {tuple(x.shape[-2:])}; set model.image_size to the input size"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x, skips = encode(self.encoder, x)
        patches = self.patch_embed(self.bottleneck(x))  # (N, 512, grid, grid)
        tokens = self.transformer(patches.flatten(2).transpose(1, 2) + self.pos_embed)
        x = self.unpatch(tokens.transpose(1, 2).reshape(patches.shape))
        for stage, skip in zip(self.decoder, reversed(skips), strict=True):
            x = stage(x, skip)
        return self.head(x)


class TransUNetTokens(TransUNet):
    """TransUNet whose patch size leaves many tokens (patch 1 at H/16: 64 tokens at 128 px)."""

    name = "transunet_tokens"


def medt(in_channels: int = 1, num_classes: int = 4, b: int = 32) -> MedT:
    """The authors' simplified MedT at width ``b`` (d_model = 16b)."""
    return MedT(in_channels, num_classes, b)


def transunet(in_channels: int = 1, num_classes: int = 4, b: int = 16, image_size: int = 128) -> TransUNet:
    """The authors' TransUNet: patch 8 at H/16, hence one token per 128 px image (their flaw, kept)."""
    return TransUNet(in_channels, num_classes, b, image_size, patch_size=8)


def transunet_tokens(
    in_channels: int = 1, num_classes: int = 4, b: int = 16, image_size: int = 128, patch_size: int = 1
) -> TransUNetTokens:
    """TransUNet with a fine patching of the H/16 grid: (image_size / (16 * patch_size))^2 tokens."""
    return TransUNetTokens(in_channels, num_classes, b, image_size, patch_size=patch_size)
