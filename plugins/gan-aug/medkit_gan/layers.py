"""StyleGAN2's building blocks: equalized-learning-rate layers, modulated convolution, noise, toRGB, resampling.

Equalized learning rate (ProGAN sec. 4.1, kept by StyleGAN2): weights are stored as N(0, 1) / lr_mult and scaled
at run time by lr_mult / sqrt(fan_in), so Adam's per-parameter step size means the same for every layer.
Resampling uses the fixed low-pass filter [1, 3, 3, 1] (its outer product, normalised), as StyleGAN2 does, so
that up- and downsampling do not alias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Downsample2d",
    "EqualConv2d",
    "EqualLinear",
    "ModulatedConv2d",
    "NoiseInjection",
    "ToRGB",
    "Upsample2d",
    "activate",
    "modulated_conv2d",
]

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # He gain: keeps the activations' second moment through a leaky ReLU
BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)


def activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    """``"lrelu"`` (leaky ReLU 0.2 times sqrt(2)) or ``"linear"``."""
    if activation == "lrelu":
        return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
    if activation == "linear":
        return x
    raise ValueError(f"activation must be 'lrelu' or 'linear', got {activation!r}")


class EqualLinear(nn.Module):
    """Fully connected layer with equalized learning rate and an optional learning-rate multiplier."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mult: float = 1.0,
        activation: str = "linear",
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mult)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mult)) if bias else None
        self.weight_gain = lr_mult / math.sqrt(in_features)
        self.bias_gain = lr_mult
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.bias_gain
        return activate(F.linear(x, self.weight * self.weight_gain, bias), self.activation)


def _blur_kernel(gain: float = 1.0) -> torch.Tensor:
    taps = torch.tensor(BLUR_TAPS)
    kernel = torch.outer(taps, taps)
    return kernel / kernel.sum() * gain


class Upsample2d(nn.Module):
    """x2 upsampling: zero insertion and the [1, 3, 3, 1] low-pass filter, as one transposed depthwise conv.

    The border is replicated before filtering (StyleGAN2's upfirdn2d pads with zeros): zero padding darkens the
    outermost pixels at every upsampling of the skip outputs, a frame the network must learn to undo."""

    def __init__(self) -> None:
        super().__init__()
        # gain 4: after zero insertion only one pixel in four carries signal (StyleGAN2's upfirdn2d gain=up**2)
        self.register_buffer("kernel", _blur_kernel(gain=4.0)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        kernel = self.kernel.to(x.dtype).expand(channels, 1, 4, 4)
        # one replicated pixel per side moves the output by 2: padding 3 instead of 1 crops it back
        return F.conv_transpose2d(
            F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, stride=2, padding=3, groups=channels
        )


class Downsample2d(nn.Module):
    """/2 downsampling: the [1, 3, 3, 1] low-pass filter applied with stride 2 (a 2x2 box would alias more), the
    border replicated as in :class:`Upsample2d`."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", _blur_kernel()[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        kernel = self.kernel.to(x.dtype).expand(channels, 1, 4, 4)
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, stride=2, groups=channels)


class EqualConv2d(nn.Module):
    """Convolution with equalized learning rate; ``down=True`` low-pass filters and halves the input first."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        down: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.activation = activation
        self.down = Downsample2d() if down else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down is not None:
            x = self.down(x)
        padding = self.weight.shape[-1] // 2
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=padding)
        return activate(x, self.activation)


def modulated_conv2d(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True
) -> torch.Tensor:
    """StyleGAN2 sec. 2.2: scale the weight's input channels by each sample's style, optionally demodulate
    (divide each output channel by its L2 norm, so unit-variance inputs give unit-variance outputs), and run all
    samples at once as one grouped convolution (one group per sample)."""
    batch, in_channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    w = weight[None] * styles[:, None, :, None, None]  # (N, out, in, kh, kw)
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    x = x.reshape(1, batch * in_channels, height, width)
    out = F.conv2d(x, w.reshape(batch * out_channels, in_channels, kh, kw), padding=kh // 2, groups=batch)
    return out.reshape(batch, out_channels, *out.shape[2:])


class ModulatedConv2d(nn.Module):
    """A modulated convolution with its own affine map from w to the styles (one scale per input channel)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, demodulate: bool = True
    ) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1: plain convolution
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.demodulate = demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        return modulated_conv2d(x, self.weight * self.weight_gain, styles, self.demodulate)


class NoiseInjection(nn.Module):
    """Per-pixel Gaussian noise times a learned per-layer strength (StyleGAN sec. 3.2; starts at 0).

    noise_mode: ``random`` draws fresh noise, ``const`` uses a fixed stored map (deterministic images),
    ``none`` adds nothing.
    """

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        if noise_mode == "none":
            return x
        if noise_mode == "const":
            noise = self.noise_const.to(x.dtype)[None, None]
        elif noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        else:
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        return x + noise * self.strength


class ToRGB(nn.Module):
    """Modulated 1x1 convolution to RGB without demodulation (StyleGAN2 fig. 7 skip generator)."""

    def __init__(self, in_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]
