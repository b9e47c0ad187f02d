"""The options of a GAN training run, as plain values (StyleGAN2 / StyleGAN2-ADA defaults, spec "The components").

Lengths and intervals that StyleGAN2 counts in kimg are counted here in images shown to D (``total_images``,
``eval_every_images``, ``checkpoint_every_images``, ``ema_half_life_images``), so they mean the same at any
batch size; the lazy regularisation intervals (``r1_interval``, ``pl_interval``) count steps, as in StyleGAN2.
"""

from __future__ import annotations

from dataclasses import dataclass

from medkit import UsageError

from .losses import CONDITIONAL_KINDS


def auto_r1_gamma(resolution: int, batch_size: int) -> float:
    """StyleGAN2-ADA's heuristic for R1's gamma when none is given: 0.0002 * resolution^2 / batch size."""
    return 0.0002 * resolution**2 / batch_size


@dataclass
class GanTrainingOptions:
    batch_size: int = 32
    total_images: int = 1_000_000  # images shown to D (StyleGAN2's kimg * 1000)
    lr_g: float = 0.0025
    lr_d: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    r1_gamma: float | None = None  # None: auto_r1_gamma(resolution, batch_size)
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    ema_half_life_images: float = 10_000
    ema_rampup: float | None = 0.05
    mixing_prob: float = 0.9
    cond_loss: str = "d2d_ce"
    cond_weight: float = 1.0
    d2d_temperature: float = 0.5
    d2d_margin: float = 0.98
    ada_preset: str = "bgc"
    ada_target: float = 0.6
    ada_interval: int = 4
    ada_speed_images: int = 500_000
    ada_p: float = 0.0
    ada_fixed: bool = False
    balanced: bool = True
    eval_every_images: int | None = 50_000
    checkpoint_every_images: int = 50_000
    stop_patience: int | None = None
    seed: int = 0

    def validate(self) -> None:
        """UsageError naming the option when a value cannot train."""
        positive = ("batch_size", "total_images", "r1_interval", "pl_interval", "pl_batch_shrink")
        positive += ("ada_interval", "ada_speed_images", "checkpoint_every_images")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise UsageError(f"GAN option {name} must be a positive integer, got {getattr(self, name)}")
        for name in ("eval_every_images", "stop_patience"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"GAN option {name} must be positive or unset, got {getattr(self, name)}")
        if self.cond_loss not in CONDITIONAL_KINDS:
            raise UsageError(
                f"GAN option cond_loss is {self.cond_loss!r}; choose one of {', '.join(CONDITIONAL_KINDS)}"
            )
        if self.lr_g <= 0 or self.lr_d <= 0:
            raise UsageError(f"GAN learning rates must be positive, got lr_g={self.lr_g}, lr_d={self.lr_d}")
        if not (0 <= self.ada_p <= 1 and 0 <= self.mixing_prob <= 1):
            raise UsageError(f"ada_p ({self.ada_p}) and mixing_prob ({self.mixing_prob}) must lie in [0, 1]")
        if (self.r1_gamma is not None and self.r1_gamma < 0) or self.pl_weight < 0 or self.cond_weight < 0:
            raise UsageError("GAN options r1_gamma, pl_weight and cond_weight must not be negative")
