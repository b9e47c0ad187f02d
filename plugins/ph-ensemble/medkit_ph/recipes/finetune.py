"""`medkit run ph-ensemble finetune_effnet_b0`: three-stage unfreezing of EfficientNet-B0 (report section 7), or
of EfficientNet-Lite0 (``backbone=efficientnet_lite0``), whose ImageNet weights work offline.

Stage s trains the last s layers (``models`` defines a layer) for ``stage_epochs[s]`` epochs with learning
rates ``lr x multipliers[s]`` (the report: 1.0; 0.9, 0.8; 0.8, 0.7, 0.6 from the head backwards) and
CosineAnnealingLR over the stage. Each stage is a sub-run (``stage1/``...) with its own checkpoints and
metrics; the next stage starts from the previous stage's last weights. A finished stage is kept on --resume.
"""

from __future__ import annotations

from typing import Any

import torch

from medkit import RecipeContext
from medkit.checkpoint import load_checkpoint
from medkit.runs import SUMMARY_FILE, Run, read_json
from medkit.scorers import ClassificationScorer
from medkit.trainer import GradientTrainer

from ..data import load_data
from ..models import effnet_b0_stages
from ..slices import SliceSet, cross_entropy, split_indices


def finetune_effnet_b0(ctx: RecipeContext) -> dict[str, Any]:
    cfg = ctx.config
    # missing weights (B0's file, Lite0's package) stop the run here, before any data is made
    model = effnet_b0_stages(cfg.weights, cfg.weights_dir, backbone=cfg.backbone)
    data = load_data(cfg.data, cfg.phantoms.count, cfg.phantoms.size, cfg.phantoms.seed, cfg.layout)
    train_ids, val_ids = split_indices(data.labels, cfg.val_fraction, cfg.seed)
    train = SliceSet(data, train_ids, cfg.image_size, cfg.rotate_degrees, cfg.seed)
    val = SliceSet(data, val_ids, cfg.image_size)
    stages = []
    for index, (epochs, multipliers) in enumerate(zip(cfg.stage_epochs, cfg.multipliers, strict=True), 1):
        stage_run = Run(
            ctx.run.dir / f"stage{index}", ctx.run.plugin, ctx.run.recipe, cfg, resume=ctx.run.resume
        )
        model.stage(index)
        if (stage_run.dir / SUMMARY_FILE).is_file():  # finished before a resume: take its weights
            model.load_state_dict(load_checkpoint(stage_run.last_checkpoint)["model"])
            stages.append(read_json(stage_run.dir / SUMMARY_FILE))
            continue
        trainer = GradientTrainer(
            loss=cross_entropy,
            make_optimizer=lambda _params, m=multipliers: torch.optim.Adam(model.parameter_groups(cfg.lr, m)),
            make_scheduler=lambda optimizer, e=epochs: torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, e
            ),
            make_scorers=lambda: [ClassificationScorer(data.class_names)],
            epochs=epochs,
            batch_size=cfg.batch_size,
            device=ctx.device,
            monitor="val/accuracy",
            mode="max",
            seed=cfg.seed,
            target_key="label",
            arch="effnet_b0_stages",
            arch_options={"backbone": cfg.backbone},  # a Lite0 checkpoint does not fit the default B0
            console=ctx.console,
        )
        summary = trainer.fit(model, train, val, stage_run)
        stage_run.write_summary(summary)
        stages.append(summary)
    final = stages[-1]
    return {
        "backbone": model.backbone,
        "weights": model.weights,
        "random_weights": model.weights == "random",
        "stages": stages,
        "best_val_accuracy": final["best"],
        "final": final["final"],
        "data": data.source,
    }
