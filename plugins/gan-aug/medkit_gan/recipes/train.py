"""`medkit run gan-aug [train]`: train (or fine-tune) a conditional StyleGAN2, then look at it, measure it, and
ask whether its images help a classifier (paper 001's pipeline on one data set, end to end)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from medkit import RecipeContext, UsageError
from medkit.checkpoint import load_checkpoint

from ..comparison import compare, synthetic_per_class
from ..config import TrainGanConfig
from ..data import load_real
from ..evaluation import GenerativeEvaluator
from ..freeze import parse_freeze
from ..gan_options import GanTrainingOptions
from ..imageset import ImageSet
from ..models import build_networks
from ..sampling import balanced_labels, generate_images, load_generator, save_grids, synthetic_set
from ..training import GanTrainer
from ..transfer import load_pretrained

HEADLINE = ("fid", "precision", "recall", "density", "coverage")  # figures `medkit run` prints
# latents of the comparison's synthetic set (fixed, so a resumed run regenerates the same images)
SYNTHETIC_SEED = 777


def training_options(cfg: TrainGanConfig) -> GanTrainingOptions:
    values = asdict(cfg.training)
    values["betas"] = tuple(values["betas"])
    return GanTrainingOptions(**values, seed=cfg.seed)


def prepare_networks(cfg: TrainGanConfig, num_classes: int) -> tuple[Any, Any, list[str], Any]:
    """G and D at the configured size, started from --init when given, and the --freeze spec."""
    network = asdict(cfg.network)
    generator, discriminator = build_networks(num_classes=num_classes, **network)
    notes: list[str] = []
    frozen = None
    if cfg.init is not None:
        if not Path(cfg.init).is_file():
            raise UsageError(f"--init {cfg.init}: no such checkpoint file; give a gan-aug best.pt or last.pt")
        state = load_checkpoint(Path(cfg.init))
        notes += load_pretrained(generator, discriminator, state, str(cfg.init))
    if cfg.freeze:
        frozen = parse_freeze(cfg.freeze, len(generator.synthesis.blocks), len(discriminator.blocks))
    return generator, discriminator, notes, frozen


def progress_log(ctx: RecipeContext, total: int) -> Any:
    """metrics.jsonl gets every record; the console a line per record (images, losses, ADA p, metrics)."""

    def log(record: dict[str, Any]) -> None:
        ctx.run.log_metrics(record)
        shown = [f"{record['images']}/{total} images"]
        shown += [f"{k[5:]}={v:.3f}" for k, v in record.items() if k.startswith("loss/")]
        shown.append(f"ada p={record['ada/p']:.3f}")
        shown += [
            f"{k[5:]}={v:.3f}" for k, v in record.items() if k.startswith("eval/") and isinstance(v, float)
        ]
        ctx.console.print("  ".join(shown))

    return log


def train_gan(
    ctx: RecipeContext, cfg: TrainGanConfig, real: ImageSet, evaluator: GenerativeEvaluator
) -> dict:
    generator, discriminator, notes, frozen = prepare_networks(cfg, len(real.class_names))
    trainer = GanTrainer(
        generator,
        discriminator,
        training_options(cfg),
        device=ctx.device,
        run_dir=ctx.run.dir,
        evaluate=evaluator,
        log=progress_log(ctx, cfg.training.total_images),
        frozen=frozen,
        meta={
            "class_names": list(real.class_names),
            "train_counts": real.counts(),
            "source": real.source,
            "extractor": evaluator.extractor_name,
        },
    )
    summary = trainer.fit(real, resume=ctx.run.resume)
    summary["transfer_notes"] = notes + list(trainer.freeze_notes)
    return summary


def train(ctx: RecipeContext) -> dict[str, Any]:
    cfg: TrainGanConfig = ctx.config
    real, val = load_real(cfg.data_options, cfg.data, cfg.network.resolution, cfg.seed)
    real.require_every_class("training images")
    val.require_every_class("validation images")
    ctx.console.print(f"real images: train {real.counts()}, validation {val.counts()} ({real.source})")
    evaluator = GenerativeEvaluator(real, cfg.metrics, ctx.device)
    training = train_gan(ctx, cfg, real, evaluator)
    checkpoint = ctx.run.best_checkpoint if ctx.run.best_checkpoint.is_file() else ctx.run.last_checkpoint
    generator, _ = load_generator(checkpoint)
    grid_labels = balanced_labels(cfg.grid_per_class, len(real.class_names))
    grid = generate_images(generator, grid_labels, seed=cfg.seed, device=ctx.device)
    grids = save_grids(grid, grid_labels, real.class_names, ctx.run.plots_dir)
    figures = evaluator.report(generator)
    summary: dict[str, Any] = {
        **{name: figures[name] for name in HEADLINE},
        "checkpoint": str(checkpoint),
        "training": training,
        "metrics": figures,
        "grids": [str(p) for p in grids],
        "data": {"train": real.counts(), "val": val.counts(), "source": real.source},
    }
    if cfg.compare_classifiers:
        per_class = synthetic_per_class(real, cfg.classify)
        synthetic = synthetic_set(
            generator,
            balanced_labels(per_class, len(real.class_names)),
            real.class_names,
            seed=SYNTHETIC_SEED,
            truncation=cfg.classify.truncation,
            device=ctx.device,
        )
        summary["classify"] = compare(
            real,
            val,
            synthetic,
            cfg.classify,
            ctx.run.dir / "classify",
            device=ctx.device,
            seed=cfg.seed,
            title=f"Classifiers on {real.source}: real vs synthetic from {checkpoint.name} ({per_class} per class)",
            progress=ctx.console.print,
        )
        for row in summary["classify"]["summary"]:
            summary[f"{row['set']}/{row['arch']} accuracy"] = row["accuracy_mean"]
    return summary
