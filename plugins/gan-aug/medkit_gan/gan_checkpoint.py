"""Checkpoints of a GAN run: ``last.pt`` (everything an exact resume needs) and ``best.pt`` (the networks to
sample from, kept at the evaluation with the lowest FID).

``last.pt`` holds G, D and the EMA of G, their hparams (to rebuild the networks), both optimisers, the ADA state,
the path-length mean, the images seen, the real-batch sampler's generator, every global random state, the
stopping rule's bests and patience, and the options. All are tensors and plain values, written atomically by
``medkit.checkpoint``, so a killed run never leaves half a file and a diverged run never overwrites the last
good state.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkit import UsageError
from medkit.checkpoint import load_checkpoint, save_checkpoint
from medkit.seeding import rng_state, set_rng_state

if TYPE_CHECKING:
    from .training import GanTrainer, RealBatchSampler


class GanCheckpointer:
    """Writes and restores the state of one :class:`~medkit_gan.training.GanTrainer`."""

    def __init__(self, trainer: GanTrainer, run_dir: Path) -> None:
        self.trainer = trainer
        self.dir = Path(run_dir) / "checkpoints"
        self.last_path, self.best_path = self.dir / "last.pt", self.dir / "best.pt"
        self.last_images: int | None = None  # images seen when last.pt was written by this run (or resumed)
        self.best_images: int | None = None

    def networks(self) -> dict[str, Any]:
        t = self.trainer
        return {
            "generator": t.generator.state_dict(),
            "discriminator": t.discriminator.state_dict(),
            "generator_ema": t.generator_ema.state_dict(),
            "hparams": {
                "generator": dict(t.generator.hparams),
                "discriminator": dict(t.discriminator.hparams),
            },
            "images_seen": t.images_seen,
            "meta": dict(t.meta),
        }

    def save_best(self, figures: dict[str, float]) -> None:
        save_checkpoint(self.best_path, {**self.networks(), "figures": dict(figures)})
        self.best_images = self.trainer.images_seen

    def save_last(self, sampler: RealBatchSampler) -> None:
        t = self.trainer
        state = self.networks()
        state.update(
            optimizer_g=t.opt_g.state_dict(),
            optimizer_d=t.opt_d.state_dict(),
            ada=t.augment.state_dict(),
            ada_counters=_ada_counters(t.augment),
            path_length=t.path_length.state_dict(),
            sampler=sampler.state_dict(),
            rng=rng_state(),
            stopping=t.stopping.state_dict(),
            progress={
                "images_seen": t.images_seen,
                "step": t.step,
                "seconds": t.seconds,
                "stopped_early": t.stopped_early,
                "stop_reason": t.stop_reason,
                "last_eval_images": t.last_eval_images,
                "best_checkpoint_images": self.best_images,
            },
            options=asdict(t.options),
            frozen=list(t.freeze_notes),
        )
        save_checkpoint(self.last_path, state)
        self.last_images = t.images_seen

    def restore(self, sampler: RealBatchSampler) -> int | None:
        """Load last.pt into the trainer; the images it was written at, or None when there is none yet."""
        if not self.last_path.is_file():
            return None
        t = self.trainer
        # read on the CPU: load_state_dict copies weights and optimiser moments onto the networks' device,
        # while the random states (global and the sampler's) must be restored from CPU bytes
        state = load_checkpoint(self.last_path, map_location="cpu")
        for name, net in (("generator", t.generator), ("discriminator", t.discriminator)):
            if state["hparams"][name] != dict(net.hparams):
                raise UsageError(
                    f"{self.last_path} was written for a {name} with {state['hparams'][name]}, but this run "
                    f"builds {dict(net.hparams)}; resume with the same model options or use a new run directory"
                )
        t.generator.load_state_dict(state["generator"])
        t.discriminator.load_state_dict(state["discriminator"])
        t.generator_ema.load_state_dict(state["generator_ema"])
        for key, optimizer in (("optimizer_g", t.opt_g), ("optimizer_d", t.opt_d)):
            settings = [(g["lr"], g["betas"]) for g in optimizer.param_groups]
            try:
                optimizer.load_state_dict(state[key])
            except ValueError as err:
                raise UsageError(
                    f"{self.last_path} trained other parameters than this run ({err}); resume with the same "
                    f"freeze ({', '.join(state['frozen']) or 'none'}) as the run that wrote it"
                ) from err
            # this run's lr and betas win, so a diverged run can be resumed with a lower learning rate
            for group, (lr, betas) in zip(optimizer.param_groups, settings, strict=True):
                group["lr"], group["betas"] = lr, betas
        t.augment.load_state_dict(state["ada"])
        for name, value in state["ada_counters"].items():
            setattr(t.augment, name, value)
        t.path_length.load_state_dict(state["path_length"])
        sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        t.stopping.load_state_dict(state["stopping"])
        progress = state["progress"]
        t.images_seen, t.step, t.seconds = progress["images_seen"], progress["step"], progress["seconds"]
        t.stopped_early, t.stop_reason = progress["stopped_early"], progress["stop_reason"]
        t.last_eval_images = progress["last_eval_images"]
        self.best_images = progress["best_checkpoint_images"]
        self.last_images = t.images_seen
        return t.images_seen


def _ada_counters(augment: Any) -> dict[str, Any]:
    """ADA's r_t accumulator between two p updates and its last r_t: its state_dict carries only p, and a
    checkpoint written mid-interval must restore the signs already counted for the resume to be exact."""
    names = ("_sign_sum", "_sign_count", "_updates", "last_rt")
    return {name: getattr(augment, name) for name in names if hasattr(augment, name)}
