"""`medkit run ct-seg study`: the paper's studies (appendix), each a grid of `train` runs, and their report.

Every trial is a normal train run in ``trials/<study>/<trial>/`` of the study's run directory (config.yaml,
metrics.jsonl, summary.json, checkpoints). A trial with a summary.json is finished and kept on ``--resume``; one
without is resumed from its last epoch, so a killed study continues where it stopped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from medkit import RecipeContext
from medkit.runner import execute_trial, fail_study, plan_trials
from medkit.runs import SUMMARY_FILE, read_json, read_metrics

from ..studies import Trial, settings, trial_dir, trial_layers, trials
from ..study_report import FOREGROUND, TrialResult, plot_studies, write_tables


def study(ctx: RecipeContext) -> dict[str, Any]:
    layered = ((t, trial_layers(ctx.config, t, trial_dir(ctx.run.dir, t))) for t in trials(ctx.config))
    train, planned = plan_trials(ctx, "train", layered)
    results: list[TrialResult] = []
    for number, (trial, config) in enumerate(planned, 1):
        ctx.console.print(f"[bold]trial {number}/{len(planned)}: {trial.study}/{trial.name}[/]")
        results.append(run_trial(ctx, train, trial, config))
        write_tables(ctx.run.dir, results, {})  # after every trial: a killed study leaves its table so far
    plots = plot_studies(ctx.run.dir, results)
    write_tables(ctx.run.dir, results, plots)
    summary = study_summary(ctx.run.dir, results)
    failed = [f"{r.study}/{r.trial}" for r in results if not r.finished]
    if failed:
        fail_study(ctx.run, summary, failed, len(results), "the grid (studies, archs, widths, ...)")
    return summary


def run_trial(ctx: RecipeContext, train: Any, trial: Trial, config: Any) -> TrialResult:
    """Train one trial (or keep it, when it finished earlier) and read its figures; a failure is recorded."""
    out = Path(config.out)
    relative = out.relative_to(ctx.run.dir).as_posix()
    error = execute_trial(ctx.plugin, train, config, ctx.console)
    if error:
        return TrialResult(trial.study, trial.name, relative, settings(config), error=error)
    return finished_trial(trial, config, relative, read_json(out / SUMMARY_FILE), read_metrics(out))


def finished_trial(
    trial: Trial, config: Any, relative: str, summary: dict[str, Any], records: list[dict[str, Any]]
) -> TrialResult:
    """The row of a finished trial: the report's ranking and the per-class Dice of the best epoch from its
    summary.json; its curve and seconds from metrics.jsonl."""
    ranking = summary["ranking"]
    figures = {
        "parameters": summary["parameters"],
        "best_mean_dice": ranking["best"],
        "best_epoch": ranking["best_epoch"],
        "mean_top10_dice": ranking["mean_top10"],
        **{f"dice_{name}": summary["best_val"].get(f"dice/{name}") for name in FOREGROUND},
        "epochs": summary["epochs_run"],
        "seconds": round(sum(r.get("seconds", 0.0) for r in records), 1),
    }
    curve = [r.get(config.monitor, math.nan) for r in records]
    return TrialResult(trial.study, trial.name, relative, settings(config), figures, curve)


def study_summary(folder: Path, results: list[TrialResult]) -> dict[str, Any]:
    """Counts, where the table is, and the best trial of each study (by best validation mean Dice)."""
    best: dict[str, Any] = {}
    for result in (r for r in results if r.finished):
        held = best.get(result.study)
        if held is None or result.figures["best_mean_dice"] > held["best_mean_dice"]:
            best[result.study] = {"trial": result.trial, **result.figures, "run_dir": result.run_dir}
    return {
        "trials": len(results),
        "finished": sum(r.finished for r in results),
        "failed": sum(not r.finished for r in results),
        "table": str(folder / "study.md"),
        "best": best,
        "errors": {f"{r.study}/{r.trial}": r.error for r in results if not r.finished},
    }
