"""`medkit run ct-seg study`: the paper's studies (appendix), each a grid of `train` runs, and their report.

Every trial is a normal train run in ``trials/<study>/<trial>/`` of the study's run directory (config.yaml,
metrics.jsonl, summary.json, checkpoints). A trial with a summary.json is finished and kept on ``--resume``; one
without is resumed from its last epoch, so a killed study continues where it stopped.
"""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from medkit import MedkitError, RecipeContext, RunError, UsageError, distributed
from medkit.runner import config_from_layers, execute
from medkit.runs import SUMMARY_FILE, is_run_dir, read_json, read_metrics

from ..studies import Trial, settings, trial_dir, trial_layers, trials
from ..study_report import FOREGROUND, TrialResult, plot_studies, write_tables


def study(ctx: RecipeContext) -> dict[str, Any]:
    if distributed.current().enabled:
        raise UsageError(
            "the study runs its trials one after another in one process; start it without torchrun"
        )
    train = ctx.plugin.entry("recipe", "train")
    planned = []  # every trial's config is made (and checked) before the first one trains
    for trial in trials(ctx.config):
        layers = trial_layers(ctx.config, trial, trial_dir(ctx.run.dir, trial))
        planned.append((trial, config_from_layers(ctx.plugin, train, layers)))
    results: list[TrialResult] = []
    for number, (trial, config) in enumerate(planned, 1):
        ctx.console.print(f"[bold]trial {number}/{len(planned)}: {trial.study}/{trial.name}[/]")
        results.append(run_trial(ctx, train, trial, config))
        write_tables(ctx.run.dir, results, {})  # after every trial: a killed study leaves its table so far
    plots = plot_studies(ctx.run.dir, results)
    write_tables(ctx.run.dir, results, plots)
    summary = study_summary(ctx.run.dir, results)
    failed = [r for r in results if not r.finished]
    if failed:
        # A study with failed trials exits 1, after its table, plots and summary are written: a script sees
        # that the study is incomplete, and `--resume` retries just the failed trials (they have no summary).
        ctx.run.write_summary({**summary, "run_dir": str(ctx.run.dir)})
        names = ", ".join(f"{r.study}/{r.trial}" for r in failed)
        raise RunError(
            f"{len(failed)} of {len(results)} trials failed ({names}); their errors are in "
            f"{ctx.run.dir / 'study.md'}. `--resume --out {ctx.run.dir}` retries them and keeps the finished "
            "trials; the grid (studies, archs, widths, ...) may change on resume."
        )
    return summary


def run_trial(ctx: RecipeContext, train: Any, trial: Trial, config: Any) -> TrialResult:
    """Train one trial (or keep it, when it finished earlier) and read its figures; a failure is recorded."""
    out = Path(config.out)
    relative = out.relative_to(ctx.run.dir).as_posix()
    if (out / SUMMARY_FILE).is_file():
        ctx.console.print(f"finished earlier: {out / SUMMARY_FILE}")
    else:
        try:
            execute(ctx.plugin, train, config, resume=is_run_dir(out), console=ctx.console)
        except MedkitError as err:  # out of memory, a width the architecture refuses, ...: the study goes on
            ctx.console.print(f"[red]failed:[/] {escape(str(err))}")
            return TrialResult(trial.study, trial.name, relative, settings(config), error=str(err))
        finally:
            release_memory()
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


def release_memory() -> None:
    """Free what a trial left (a failed one's tensors too) before the next one starts."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
