"""`medkit run ubc study`: the paper's small-sample study (section 3) as a grid of train runs, and its report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medkit import RecipeContext
from medkit.runner import execute_trial, fail_study, plan_trials
from medkit.runs import SUMMARY_FILE, read_json

from ..studies import Trial, trial_dir, trial_layers, trials
from ..study_report import TrialResult, plot_accuracy, plot_dice_accuracy, summarise, write_tables


def run_trial(ctx: RecipeContext, train: Any, trial: Trial, config: Any) -> TrialResult:
    out = Path(config.out)
    relative = out.relative_to(ctx.run.dir).as_posix()
    error = execute_trial(ctx.plugin, train, config, ctx.console)
    if error:
        return TrialResult(trial.arch, trial.size, trial.seed, relative, error=error)
    summary = read_json(out / SUMMARY_FILE)
    figures = {
        **{k: v for k, v in summary["plateau"].items() if not k.startswith("accuracy_ci")},
        "parameters": summary["parameters"],
        "epochs": summary["epochs_run"],
        "seconds": summary["seconds"],
        "test_images": summary["test"]["images"],
    }
    return TrialResult(trial.arch, trial.size, trial.seed, relative, figures)


def study(ctx: RecipeContext) -> dict[str, Any]:
    layered = ((t, trial_layers(ctx.config, t, trial_dir(ctx.run.dir, t))) for t in trials(ctx.config))
    train, planned = plan_trials(ctx, "train", layered)
    results: list[TrialResult] = []
    for number, (trial, config) in enumerate(planned, 1):
        ctx.console.print(f"[bold]trial {number}/{len(planned)}: {trial.name}[/]")
        results.append(run_trial(ctx, train, trial, config))
        write_tables(ctx.run.dir, results, [])  # after every trial: a killed study leaves its table so far
    plots = []
    if any(r.finished for r in results):
        plots = [plot_accuracy(ctx.run.dir, results), plot_dice_accuracy(ctx.run.dir, results)]
    write_tables(ctx.run.dir, results, [p.relative_to(ctx.run.dir) for p in plots])
    summary = {
        "trials": len(results),
        "finished": sum(r.finished for r in results),
        "failed": sum(not r.finished for r in results),
        "table": str(ctx.run.dir / "study.md"),
        "by_size": summarise(results),
    }
    failed = [f"{r.arch}/n{r.size}-seed{r.seed}" for r in results if not r.finished]
    if failed:
        fail_study(ctx.run, summary, failed, len(results), "archs, sizes and seeds")
    return summary
