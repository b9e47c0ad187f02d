"""`medkit run anomaly-backbones study`: the backbone study (paper 004), each trial a `fit` run, and its report.

Every trial is a normal fit run in ``trials/<method>-<backbone>-<weights>/`` of the study's run directory
(config.yaml, metrics.jsonl, summary.json, models/, results.md). A trial with a summary.json is finished and kept
on ``--resume``; one without is resumed, keeping the categories it finished. A trial that fails (a weights file
that does not fit its backbone, say) is recorded with its error and the study goes on; an ImageNet trial whose
weights have no local file is skipped, its row saying which file to put where.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medkit import RecipeContext
from medkit.runner import execute_trial, fail_study, plan_trials
from medkit.runs import SUMMARY_FILE, read_json

from ..studies import trial_dir, trial_layers, trials
from ..study_report import TrialResult, plot_quality_vs_speed, study_summary, trial_result, write_tables


def study(ctx: RecipeContext) -> dict[str, Any]:
    layered = ((t, trial_layers(ctx.config, t, trial_dir(ctx.run.dir, t))) for t in trials(ctx.config))
    fit, planned = plan_trials(ctx, "fit", layered)
    results: list[TrialResult] = []
    for number, (trial, config) in enumerate(planned, 1):
        ctx.console.print(f"[bold]trial {number}/{len(planned)}: {trial.name}[/]")
        out = Path(config.out)
        run_dir = out.relative_to(ctx.run.dir).as_posix()
        missing = missing_weights(config)
        if missing:
            ctx.console.print(f"[yellow]skipped:[/] {missing}")
            results.append(
                TrialResult(trial.method, trial.backbone, trial.weights_label, run_dir, skipped=missing)
            )
            continue
        error = execute_trial(ctx.plugin, fit, config, ctx.console)
        if error:
            results.append(
                TrialResult(trial.method, trial.backbone, trial.weights_label, run_dir, error=error)
            )
        else:
            summary = read_json(out / SUMMARY_FILE)
            results.append(trial_result(trial.method, trial.backbone, trial.weights_label, run_dir, summary))
        write_tables(ctx.run.dir, results)  # after every trial: a killed study leaves its table so far
    plot = plot_quality_vs_speed(ctx.run.dir, results)
    write_tables(ctx.run.dir, results, plot)
    summary = study_summary(ctx.run.dir, results)
    failed = [r.trial for r in results if r.error]
    if failed:
        fail_study(ctx.run, summary, failed, len(results), "methods, backbones and weight_sources")
    return summary


def missing_weights(config: Any) -> str:
    """Why a trial's ImageNet weights (its ``weights_variant``) cannot be read on this machine (no local file, or
    a variant its backbone does not have), or "" when they can. Such a trial is skipped, not failed: only
    EfficientNet-Lite0's weights ship offline, and a default study must finish."""
    if config.weights != "imagenet":
        return ""
    from medkit import UsageError

    from ..backbone_table import backbone_spec
    from ..weights import imagenet_weights_file

    try:
        imagenet_weights_file(backbone_spec(config.backbone), config.weights_variant)
    except UsageError as err:
        return str(err)
    return ""
