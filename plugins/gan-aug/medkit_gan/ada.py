"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training GANs with limited data").

Every image the discriminator sees - real or generated - passes through the same differentiable pipeline, each
augmentation applied to each sample with probability p. p follows the overfitting heuristic
r_t = E[sign(D(real))]: every ``interval`` updates it moves towards the target (0.6) by a step that lets it cross
0..1 in ``speed_images`` images (ADA sec. 3).

The pipeline runs in the paper's order, in three stages:
- blit (exact pixel copies, one gather): x-flip, 90-degree rotation, integer translation with reflection;
- geometric (one composed affine matrix per sample, one ``grid_sample`` with reflection padding): isotropic
  scaling, pre-rotation, anisotropic scaling, post-rotation, fractional translation. Bilinear resampling, without
  the paper's wavelet up/down-sampling filter (a simplification: a little more blur, no anti-aliasing);
- colour (one composed 4x4 matrix per sample acting on (r, g, b, 1), images in [-1, 1] so 0 is mid-grey):
  brightness, contrast, luma flip, hue rotation, saturation.
The paper's optional filtering, noise and cutout stages are not implemented.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from medkit import UsageError
from medkit.suggest import did_you_mean

BLIT = ("xflip", "rotate90", "xint")
GEOMETRIC = ("scale", "rotate", "aniso", "xfrac")
COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
PRESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "b": BLIT,
    "g": GEOMETRIC,
    "c": COLOUR,
    "bg": BLIT + GEOMETRIC,
    "bgc": BLIT + GEOMETRIC + COLOUR,
}

# Strengths: the ADA paper's defaults (appendix B). Lognormal ones are 2 ** N(0, std^2).
XINT_MAX = 0.125  # integer translation, uniform in +-0.125 of the image size
SCALE_STD = 0.2  # isotropic scaling, lognormal
ROTATE_MAX = 1.0  # arbitrary rotation, uniform in +-1 x pi
ANISO_STD = 0.2  # anisotropic scaling, lognormal (x scaled by s, y by 1 / s)
XFRAC_STD = 0.125  # fractional translation, normal, in units of the image size
BRIGHTNESS_STD = 0.2  # added to every channel
CONTRAST_STD = 0.5  # lognormal multiplier around mid-grey
HUE_MAX = 1.0  # rotation around the luma axis, uniform in +-1 x pi
SATURATION_STD = 1.0  # lognormal multiplier of the chroma (the part orthogonal to the luma axis)


class AdaptiveAugment(torch.nn.Module):
    """ADA's augmentation pipeline with its adaptive probability ``p`` (a buffer, so checkpoints restore it).

    ``ops`` (keyword only) names the augmentations to use instead of the preset's, e.g. ``ops=["xflip"]``.
    """

    def __init__(
        self,
        preset: str = "bgc",
        p: float = 0.0,
        target: float = 0.6,
        interval: int = 4,
        speed_images: int = 500_000,
        batch_size: int = 32,
        fixed: bool = False,
        *,
        ops: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise UsageError(
                f"unknown ADA preset {preset!r}.{did_you_mean(preset, PRESETS)} "
                f"Choose one of {', '.join(PRESETS)} (b: blit, g: geometric, c: colour)."
            )
        self.ops = frozenset(PRESETS[preset] if ops is None else ops)
        unknown = sorted(self.ops - set(PRESETS["bgc"]))
        if unknown:
            raise UsageError(f"unknown ADA augmentation(s) {unknown}; known: {', '.join(PRESETS['bgc'])}")
        if not 0 <= p <= 1:
            raise UsageError(f"ADA probability p must lie in [0, 1]; got {p}")
        if interval < 1 or speed_images <= 0 or batch_size < 1:
            raise UsageError(
                "ADA interval, speed_images and batch_size must be positive; "
                f"got {interval}, {speed_images}, {batch_size}"
            )
        self.preset, self.target, self.interval = preset, target, interval
        self.speed_images, self.batch_size, self.fixed = speed_images, batch_size, fixed
        self.register_buffer("probability", torch.tensor(float(p), dtype=torch.float64))
        self._p = float(p)  # host copy: forward needs p without a device sync
        self.register_load_state_dict_post_hook(_sync_host_p)
        self.last_rt: float | None = None
        self._sign_sum: torch.Tensor | None = None  # accumulated on the logits' device, read every interval
        self._sign_count = 0
        self._updates = 0

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        self._p = min(max(float(value), 0.0), 1.0)
        self.probability.fill_(self._p)

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, p={self._p:.4f}, target={self.target}, fixed={self.fixed}"

    def update(self, real_logits: torch.Tensor) -> None:
        """Accumulate sign(D(real)); every ``interval`` calls set ``last_rt`` and step p towards the target
        by sign(r_t - target) * batch_size * interval / speed_images, clamped to [0, 1] (ADA sec. 3)."""
        signs = real_logits.detach().float().sign().sum()
        self._sign_sum = signs if self._sign_sum is None else self._sign_sum + signs
        self._sign_count += real_logits.numel()
        self._updates += 1
        if self._updates % self.interval:
            return
        self.last_rt = float(self._sign_sum) / max(self._sign_count, 1)
        self._sign_sum, self._sign_count = None, 0
        if not self.fixed:
            direction = (self.last_rt > self.target) - (self.last_rt < self.target)
            self.p = self._p + direction * self.batch_size * self.interval / self.speed_images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a batch (N, C, H, W) in [-1, 1]; differentiable wrt ``images``; p = 0 returns the input."""
        if self._p == 0 or not self.ops:
            return images
        if self.ops & set(COLOUR) and images.shape[1] != 3:
            raise UsageError(
                f"ADA colour augmentations need RGB images; got {images.shape[1]} channels (use preset 'bg')"
            )
        images = self._blit(images)
        images = self._geometric(images)
        return self._colour(images)

    def _chosen(self, n: int, device: torch.device, probability: float | None = None) -> torch.Tensor:
        """Which samples an augmentation applies to: each independently with probability p."""
        return torch.rand(n, device=device) < (self._p if probability is None else probability)

    def _blit(self, images: torch.Tensor) -> torch.Tensor:
        if not self.ops & set(BLIT):
            return images
        n, _, height, width = images.shape
        device = images.device
        rows = torch.arange(height, device=device).view(1, height, 1).expand(n, height, width)
        cols = torch.arange(width, device=device).view(1, 1, width).expand(n, height, width)
        # source pixel of every output pixel; the ops' inverses are applied last-to-first
        if "xint" in self.ops:
            shift = (torch.rand(n, 2, device=device) * 2 - 1) * XINT_MAX
            shift = (shift * torch.tensor([height, width], device=device)).round().long()
            shift = shift * self._chosen(n, device)[:, None]
            rows = _reflect(rows - shift[:, 0, None, None], height)
            cols = _reflect(cols - shift[:, 1, None, None], width)
        if "rotate90" in self.ops:
            if height != width:
                raise UsageError(f"ADA 90-degree rotations need square images; got {height} x {width}")
            quarter_turns = torch.randint(0, 4, (n,), device=device) * self._chosen(n, device)
            for turn in range(3):  # one quarter turn maps (r, c) to (c, size - 1 - r), as torch.rot90
                rotate = (quarter_turns > turn)[:, None, None]
                rows, cols = torch.where(rotate, cols, rows), torch.where(rotate, width - 1 - rows, cols)
        if "xflip" in self.ops:
            # ADA draws the flip itself (i in {0, 1}) for the samples the op applies to
            flip = (torch.randint(0, 2, (n,), device=device).bool() & self._chosen(n, device))[:, None, None]
            cols = torch.where(flip, width - 1 - cols, cols)
        index = (rows * width + cols).reshape(n, 1, -1).expand(-1, images.shape[1], -1)
        return images.flatten(2).gather(2, index).view_as(images)

    def _geometric(self, images: torch.Tensor) -> torch.Tensor:
        if not self.ops & set(GEOMETRIC):
            return images
        n, _, height, width = images.shape
        device = images.device
        eye = torch.eye(3, device=device).expand(n, 3, 3)
        # every distribution is symmetric, so the product of the draws is distributed as the inverse of the
        # forward transform: it is used directly as the output-to-input sampling matrix, in pixel units
        matrix, applied = eye, torch.zeros(n, dtype=torch.bool, device=device)

        def compose(transform: torch.Tensor, chosen: torch.Tensor) -> None:
            nonlocal matrix, applied
            matrix = matrix @ torch.where(chosen[:, None, None], transform, eye)
            applied = applied | chosen

        if "scale" in self.ops:
            s = 2 ** (torch.randn(n, device=device) * SCALE_STD)
            compose(_scaling(s, s), self._chosen(n, device))
        # pre- and post-rotation each with 1 - sqrt(1 - p), so that at least one happens with probability p
        p_rotate = 1 - math.sqrt(max(1 - self._p, 0.0))
        if "rotate" in self.ops:
            angle = (torch.rand(n, device=device) * 2 - 1) * math.pi * ROTATE_MAX
            compose(_rotation(angle), self._chosen(n, device, p_rotate))
        if "aniso" in self.ops:
            s = 2 ** (torch.randn(n, device=device) * ANISO_STD)
            compose(_scaling(s, 1 / s), self._chosen(n, device))
        if "rotate" in self.ops:
            angle = (torch.rand(n, device=device) * 2 - 1) * math.pi * ROTATE_MAX
            compose(_rotation(angle), self._chosen(n, device, p_rotate))
        if "xfrac" in self.ops:
            t = torch.randn(n, 2, device=device) * XFRAC_STD * torch.tensor([width, height], device=device)
            compose(_translation(t[:, 0], t[:, 1]), self._chosen(n, device))
        if not applied.any():
            return images
        # pixel-centred coordinates to affine_grid's [-1, 1] (align_corners=False): x / (W / 2), y / (H / 2)
        to_unit = torch.diag(torch.tensor([2 / width, 2 / height, 1.0], device=device))
        theta = to_unit @ matrix @ torch.linalg.inv(to_unit)
        grid = F.affine_grid(theta[:, :2].to(images.dtype), list(images.shape), align_corners=False)
        warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return torch.where(applied[:, None, None, None], warped, images)

    def _colour(self, images: torch.Tensor) -> torch.Tensor:
        if not self.ops & set(COLOUR):
            return images
        n, device = len(images), images.device
        eye = torch.eye(4, device=device).expand(n, 4, 4)
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)  # the grey axis
        luma_outer = torch.outer(luma, luma)
        # each op acts on the result of the previous one: its matrix multiplies from the left
        matrix, applied = eye, torch.zeros(n, dtype=torch.bool, device=device)

        def compose(transform: torch.Tensor) -> None:
            nonlocal matrix, applied
            chosen = self._chosen(n, device)
            matrix = torch.where(chosen[:, None, None], transform, eye) @ matrix
            applied = applied | chosen

        if "brightness" in self.ops:
            b = torch.randn(n, device=device) * BRIGHTNESS_STD
            compose(_colour_translation(b))
        if "contrast" in self.ops:
            c = 2 ** (torch.randn(n, device=device) * CONTRAST_STD)
            compose(eye * torch.stack([c, c, c, torch.ones_like(c)], 1)[:, None, :])
        if "lumaflip" in self.ops:
            # ADA draws the flip itself (i in {0, 1}): reflect the colour across the plane orthogonal to luma
            i = torch.randint(0, 2, (n,), device=device).float()
            compose(eye - 2 * luma_outer * i[:, None, None])
        if "hue" in self.ops:
            angle = (torch.rand(n, device=device) * 2 - 1) * math.pi * HUE_MAX
            compose(_luma_rotation(angle))
        if "saturation" in self.ops:
            s = 2 ** (torch.randn(n, device=device) * SATURATION_STD)
            compose(luma_outer + (eye - luma_outer) * s[:, None, None])
        if not applied.any():
            return images
        matrix = matrix.to(images.dtype)
        coloured = torch.einsum("nij,njhw->nihw", matrix[:, :3, :3], images) + matrix[:, :3, 3, None, None]
        return torch.where(applied[:, None, None, None], coloured, images)


def _sync_host_p(module: torch.nn.Module, incompatible_keys: object) -> None:
    """After ``load_state_dict`` the buffer holds the checkpoint's p: refresh the host copy."""
    assert isinstance(module, AdaptiveAugment)
    module._p = float(module.probability)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror indices that left [0, size) back inside, without repeating the edge pixel (reflection padding)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def _scaling(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(sx), torch.zeros_like(sx)
    return torch.stack([sx, zero, zero, zero, sy, zero, zero, zero, one], 1).view(-1, 3, 3)


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    cos, sin, one, zero = angle.cos(), angle.sin(), torch.ones_like(angle), torch.zeros_like(angle)
    return torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], 1).view(-1, 3, 3)


def _translation(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(tx), torch.zeros_like(tx)
    return torch.stack([one, zero, tx, zero, one, ty, zero, zero, one], 1).view(-1, 3, 3)


def _colour_translation(b: torch.Tensor) -> torch.Tensor:
    matrix = torch.eye(4, device=b.device).repeat(len(b), 1, 1)
    matrix[:, :3, 3] = b[:, None]
    return matrix


def _luma_rotation(angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' rotation by ``angle`` around the luma axis (1, 1, 1) / sqrt(3), as 4 x 4: greys stay fixed."""
    u = 1 / math.sqrt(3)
    cross = torch.tensor([[0.0, -u, u], [u, 0.0, -u], [-u, u, 0.0]], device=angle.device)
    outer = torch.full((3, 3), u * u, device=angle.device)
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    matrix = torch.eye(4, device=angle.device).repeat(len(angle), 1, 1)
    matrix[:, :3, :3] = torch.eye(3, device=angle.device) * cos + cross * sin + outer * (1 - cos)
    return matrix
