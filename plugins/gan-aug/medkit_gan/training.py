"""The adversarial training loop of the conditional StyleGAN2 (StyleGAN2 / StyleGAN2-ADA, spec "The components").

One step shows ``batch_size`` real images to D: a D step (logistic loss on ADA-augmented reals and fakes, plus
the conditional term on reals, as ReACGAN trains D's D2D-CE), a lazy R1 step every ``r1_interval`` steps, a G
step (non-saturating loss and the conditional term on augmented fakes) and a lazy path-length step every
``pl_interval`` steps, then the EMA of G. Real images are drawn class-balanced (paper 001's sampler), and the
fake labels from the same distribution. Training length, evaluations and checkpoints count images shown to D,
like StyleGAN2's kimg, so they do not depend on the batch size. Checkpointing and exact resume live in
``gan_checkpoint.py``, the options in ``gan_options.py``, the stopping rule in ``stopping.py``, the EMA in
``ema.py``.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medkit import RunError, UsageError
from medkit.seeding import cpu_byte_tensor, seed_everything

from .ada import AdaptiveAugment
from .ema import ema_beta, make_ema, update_ema
from .freeze import FreezeSpec, apply_freeze
from .gan_checkpoint import GanCheckpointer
from .gan_options import GanTrainingOptions, auto_r1_gamma
from .imageset import ImageSet, balanced_weights, to_tensor_range
from .losses import (
    PathLengthRegularizer,
    conditional_loss,
    d_logistic,
    g_nonsaturating,
    r1_penalty,
)
from .stopping import StoppingRule

__all__ = ["GanTrainer", "GanTrainingOptions", "RealBatchSampler", "lazy_adam"]

Evaluate = Callable[[torch.nn.Module], dict[str, float]]
Log = Callable[[dict[str, Any]], None]


class RealBatchSampler:
    """Indices of the real images of each step, drawn with replacement from a seeded generator; with
    ``balanced`` every class is equally likely (paper 001: the same sampler for the GANs and the classifiers)."""

    def __init__(self, labels: np.ndarray, balanced: bool, seed: int) -> None:
        labels = np.asarray(labels)
        weights = balanced_weights(labels) if balanced else np.full(len(labels), 1.0 / len(labels))
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self, count: int) -> np.ndarray:
        return torch.multinomial(self.weights, count, replacement=True, generator=self.generator).numpy()

    def state_dict(self) -> dict[str, list[int]]:
        # plain ints, not a tensor: a checkpoint mapped onto a GPU must not move the generator's state there
        return {"generator": self.generator.get_state().tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(cpu_byte_tensor(state["generator"]))


def lazy_adam(
    params: list[torch.nn.Parameter], lr: float, betas: tuple[float, float], interval: int | None
) -> torch.optim.Adam:
    """Adam for a network whose regulariser runs every ``interval`` steps: lr and betas scaled by
    c = interval / (interval + 1), since the regulariser's extra steps speed the optimiser up (StyleGAN2 sec. 3.1)."""
    c = interval / (interval + 1) if interval else 1.0
    return torch.optim.Adam(params, lr=lr * c, betas=(betas[0] ** c, betas[1] ** c), eps=1e-8)


def crossed(before: int, after: int, every: int | None) -> bool:
    """Whether a multiple of ``every`` images lies in (before, after]."""
    return every is not None and before // every != after // every


class GanTrainer:
    """Trains ``generator`` and ``discriminator`` on an :class:`ImageSet`; ``generator_ema`` is the network to
    sample from. ``evaluate(generator_ema)`` returns figures (fid, precision, recall, density, coverage, ...)
    for the stopping rule; ``log(record)`` receives a record at every evaluation and checkpoint."""

    def __init__(
        self,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        options: GanTrainingOptions,
        *,
        device: str,
        run_dir: Path,
        evaluate: Evaluate | None = None,
        log: Log | None = None,
        frozen: FreezeSpec | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        options.validate()
        self.meta = dict(meta or {})  # stored in every checkpoint: class names, data source, ...
        self.options, self.device, self.evaluate, self.log = options, torch.device(device), evaluate, log
        self.generator = generator.to(self.device).train()
        self.discriminator = discriminator.to(self.device).train()
        self.freeze_notes = apply_freeze(self.generator, self.discriminator, frozen) if frozen else []
        self.generator_ema = make_ema(self.generator)
        resolution = int(self.generator.hparams["resolution"])
        gamma = options.r1_gamma
        self.r1_gamma = gamma if gamma is not None else auto_r1_gamma(resolution, options.batch_size)
        self.augment = AdaptiveAugment(
            preset=options.ada_preset,
            p=options.ada_p,
            target=options.ada_target,
            interval=options.ada_interval,
            speed_images=options.ada_speed_images,
            batch_size=options.batch_size,
            fixed=options.ada_fixed,
        ).to(self.device)
        self.path_length = PathLengthRegularizer()
        self.g_params = [p for p in self.generator.parameters() if p.requires_grad]
        self.d_params = [p for p in self.discriminator.parameters() if p.requires_grad]
        if not self.g_params or not self.d_params:
            raise UsageError("the freeze leaves no trainable parameter in G or D; freeze fewer blocks")
        self.opt_g = lazy_adam(self.g_params, options.lr_g, options.betas, self._interval("pl"))
        self.opt_d = lazy_adam(self.d_params, options.lr_d, options.betas, self._interval("r1"))
        self.checkpointer = GanCheckpointer(self, Path(run_dir))
        self.stopping = StoppingRule(options.stop_patience)
        self.images_seen = self.step = 0
        self.seconds = 0.0
        self.stopped_early, self.stop_reason = False, ""
        self.last_eval_images: int | None = None
        self._reset_window()

    def _interval(self, which: str) -> int | None:
        o = self.options
        if which == "pl":
            return o.pl_interval if o.pl_weight > 0 else None
        return o.r1_interval if self.r1_gamma > 0 else None

    def _reset_window(self) -> None:
        """Loss sums and the per-step ADA p since the last record."""
        self.loss_sums: dict[str, torch.Tensor] = {}
        self.loss_counts: dict[str, int] = {}
        self.ada_trace: list[tuple[int, float]] = []

    # --- the loop -------------------------------------------------------------------------------------------

    def fit(self, train: ImageSet, resume: bool = False) -> dict[str, Any]:
        """Train until ``total_images`` or the stopping rule; ``resume`` continues from checkpoints/last.pt."""
        self._check_data(train)
        sampler = RealBatchSampler(train.labels, self.options.balanced, self.options.seed)
        resumed_from = self.checkpointer.restore(sampler) if resume else None
        if resumed_from is None:
            seed_everything(self.options.seed, deterministic=False)
        started = time.perf_counter() - self.seconds
        while self.images_seen < self.options.total_images and not self.stopped_early:
            before = self.images_seen
            self._train_step(train, sampler)
            self.seconds = time.perf_counter() - started
            do_eval = self.evaluate is not None and crossed(
                before, self.images_seen, self.options.eval_every_images
            )
            do_checkpoint = crossed(before, self.images_seen, self.options.checkpoint_every_images)
            if do_eval or do_checkpoint:
                self._record(sampler, do_eval, do_checkpoint)
        if self.checkpointer.last_images != self.images_seen:
            do_eval = self.evaluate is not None and self.last_eval_images != self.images_seen
            self._record(sampler, do_eval, True)
        return self._summary(resumed_from)

    def _check_data(self, train: ImageSet) -> None:
        hparams = self.generator.hparams
        if train.resolution != hparams["resolution"] or train.images.shape[2] != hparams["resolution"]:
            raise UsageError(
                f"the training images are {train.images.shape[1]} x {train.images.shape[2]} px but the GAN "
                f"works at {hparams['resolution']} px; resize the patches or set resolution={train.resolution}"
            )
        if len(train.class_names) != hparams["num_classes"]:
            raise UsageError(
                f"the training set has {len(train.class_names)} classes ({', '.join(train.class_names)}) but the "
                f"generator was built for {hparams['num_classes']}; build it with num_classes="
                f"{len(train.class_names)}"
            )
        train.require_every_class("GAN training set")

    def _train_step(self, train: ImageSet, sampler: RealBatchSampler) -> None:
        o = self.options
        indices = sampler.draw(o.batch_size)
        real = torch.from_numpy(to_tensor_range(train.images[indices])).to(self.device)
        real_c = torch.from_numpy(train.labels[indices]).to(self.device)
        fake_c = torch.from_numpy(train.labels[sampler.draw(o.batch_size)]).to(self.device)
        losses = self._d_step(real, real_c, fake_c)
        if self._interval("r1") and self.step % o.r1_interval == 0:
            losses.update(self._r1_step(real, real_c))
        losses.update(self._g_step(fake_c))
        if self._interval("pl") and self.step % o.pl_interval == 0:
            losses.update(self._pl_step(fake_c))
        self._check_finite(losses)
        update_ema(
            self.generator_ema,
            self.generator,
            ema_beta(o.batch_size, self.images_seen, o.ema_half_life_images, o.ema_rampup),
        )
        self.images_seen += o.batch_size
        self.step += 1
        self.ada_trace.append((self.images_seen, float(self.augment.p)))
        for name, value in losses.items():
            self.loss_sums[name] = self.loss_sums.get(name, 0.0) + value
            self.loss_counts[name] = self.loss_counts.get(name, 0) + 1

    def _fakes(self, labels: torch.Tensor) -> torch.Tensor:
        z = torch.randn(len(labels), self.generator.z_dim, device=self.device)
        return self.generator(z, labels, mixing_prob=self.options.mixing_prob)

    def _conditional(self, out: Any, labels: torch.Tensor) -> torch.Tensor:
        o = self.options
        return conditional_loss(o.cond_loss, out, labels, o.d2d_temperature, o.d2d_margin)

    def _d_step(
        self, real: torch.Tensor, real_c: torch.Tensor, fake_c: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            fake = self._fakes(fake_c)
        # reals and fakes in separate calls: the minibatch-stddev layer must not mix them
        out_real = self.discriminator(self.augment(real), real_c)
        out_fake = self.discriminator(self.augment(fake), fake_c)
        adversarial = d_logistic(out_real.logits, out_fake.logits)
        cond = self._conditional(out_real, real_c)  # ReACGAN: D learns D2D-CE on real images
        self._optimise(self.opt_d, adversarial + self.options.cond_weight * cond)
        self.augment.update(out_real.logits.detach())
        return {"D": adversarial.detach(), "cond_D": cond.detach()}

    def _r1_step(self, real: torch.Tensor, real_c: torch.Tensor) -> dict[str, torch.Tensor]:
        # R1 on the images D sees (augmented reals), so no second derivative of the augmentation is needed
        seen = self.augment(real).detach().requires_grad_(True)
        penalty = r1_penalty(seen, self.discriminator(seen, real_c).logits)
        self._optimise(self.opt_d, penalty * (self.r1_gamma / 2) * self.options.r1_interval)
        return {"R1": penalty.detach()}

    def _g_step(self, fake_c: torch.Tensor) -> dict[str, torch.Tensor]:
        self.discriminator.requires_grad_(False)  # D's weights get no gradient from G's loss
        try:
            out = self.discriminator(self.augment(self._fakes(fake_c)), fake_c)
            adversarial = g_nonsaturating(out.logits)
            cond = self._conditional(out, fake_c)
            self._optimise(self.opt_g, adversarial + self.options.cond_weight * cond)
        finally:
            for p in self.d_params:
                p.requires_grad_(True)
        return {"G": adversarial.detach(), "cond_G": cond.detach()}

    def _pl_step(self, fake_c: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.options
        labels = fake_c[: max(o.batch_size // o.pl_batch_shrink, 1)]
        z = torch.randn(len(labels), self.generator.z_dim, device=self.device)
        images, ws = self.generator(z, labels, mixing_prob=o.mixing_prob, return_ws=True)
        penalty = self.path_length(images, ws)
        self._optimise(self.opt_g, penalty * o.pl_weight * o.pl_interval)
        return {"PL": penalty.detach()}

    @staticmethod
    def _optimise(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def _check_finite(self, losses: dict[str, torch.Tensor]) -> None:
        """One host sync per step; a NaN or inf loss stops the run before anything overwrites last.pt."""
        values = torch.stack([v.float() for v in losses.values()])
        if bool(torch.isfinite(values).all()):
            return
        name, value = next((k, float(v)) for k, v in losses.items() if not math.isfinite(float(v)))
        at = self.images_seen + self.options.batch_size
        kept = self.checkpointer.last_images
        where = (
            f"{self.checkpointer.last_path} holds the last good state, from image {kept}; resume from it"
            if kept is not None
            else f"no checkpoint was written yet (the first is due at {self.options.checkpoint_every_images} images)"
        )
        raise RunError(
            f"GAN training diverged at image {at}: the {name} loss is {value}. {where}. Try a lower learning "
            f"rate (lr_g {self.options.lr_g}, lr_d {self.options.lr_d}) or a larger R1 gamma "
            f"(r1_gamma {self.r1_gamma:g})."
        )

    # --- records, evaluation, summary -----------------------------------------------------------------------

    def _record(self, sampler: RealBatchSampler, do_eval: bool, do_checkpoint: bool) -> None:
        record: dict[str, Any] = {
            "images": self.images_seen,
            "step": self.step,
            "seconds": round(self.seconds, 3),
        }
        record.update(self._window_losses())
        record.update({"ada/p": float(self.augment.p), "ada/rt": _float_or_none(self.augment.last_rt)})
        record["ada/p_per_step"] = [list(pair) for pair in self.ada_trace]
        if do_eval:
            record.update(self._evaluate())
        if do_checkpoint:
            self.checkpointer.save_last(sampler)
            record["checkpoint"] = str(self.checkpointer.last_path)
            if self.evaluate is None:
                self.checkpointer.save_best({})
        self._reset_window()
        if self.log is not None:
            self.log(record)

    def _window_losses(self) -> dict[str, float]:
        return {f"loss/{k}": float(v) / self.loss_counts[k] for k, v in self.loss_sums.items()}

    def _evaluate(self) -> dict[str, Any]:
        assert self.evaluate is not None
        # the evaluation draws its own random numbers; forking keeps the training stream the same with or
        # without it, so a resumed run repeats the uninterrupted one
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            found = self.evaluate(self.generator_ema)
        figures = {k: float(v) if isinstance(v, numbers.Real) else v for k, v in found.items()}
        self.last_eval_images = self.images_seen
        verdict = self.stopping.observe(figures, self.images_seen)
        if verdict.keep_as_best:
            self.checkpointer.save_best(figures)
        if verdict.stop:
            self.stopped_early, self.stop_reason = True, self.stopping.reason()
        record: dict[str, Any] = {f"eval/{k}": v for k, v in figures.items()}
        record["eval/improved"] = verdict.improved
        if verdict.stop:
            record["stopped_early"] = self.stop_reason
        return record

    def _summary(self, resumed_from: int | None) -> dict[str, Any]:
        return {
            "images_seen": self.images_seen,
            "steps": self.step,
            "seconds": round(self.seconds, 3),
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "evaluations": self.stopping.evaluations,
            "best": dict(self.stopping.best),
            "best_images": dict(self.stopping.best_images),
            "best_checkpoint_images": self.checkpointer.best_images,
            "ada_p": float(self.augment.p),
            "ada_rt": _float_or_none(self.augment.last_rt),
            "r1_gamma": self.r1_gamma,
            "last_checkpoint": str(self.checkpointer.last_path),
            "best_checkpoint": str(self.checkpointer.best_path),
            "resumed_from_images": resumed_from,
            "frozen": list(self.freeze_notes),
        }


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
