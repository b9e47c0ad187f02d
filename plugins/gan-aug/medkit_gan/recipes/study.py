"""`medkit run gan-aug study`: the paper's transfer grid (section "The experiment", item 2) as train runs.

A base model is trained first on a larger set (or given with `base`); then every trial trains a GAN on the same
small set: `scratch` (random init), `pretrained` (from the base, nothing frozen) and each --freeze spec (from the
base, those blocks kept). Each trial is a normal `train` run under `trials/<name>/` with its metrics and its
classifier comparison; `study.md`/`study.csv` put them side by side. A killed study resumes with --resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medkit import RecipeContext
from medkit.config import to_plain
from medkit.runner import execute_trial, fail_study, plan_trials
from medkit.runs import SUMMARY_FILE, read_json

from ..config import StudyGanConfig
from ..study_report import TrialResult, write_tables


def trial_folder(name: str) -> str:
    return name.replace(",", "+")


def shared_layers(cfg: StudyGanConfig) -> dict[str, Any]:
    """The options every train run of the study shares (as plain values: the layers of a config)."""
    return {
        "network": to_plain(cfg.network),
        "training": to_plain(cfg.training),
        "metrics": to_plain(cfg.metrics),
        "device": cfg.device,
        "seed": cfg.seed,
        "data": to_plain(cfg.data),
    }


def base_layers(cfg: StudyGanConfig, out: Path) -> list[tuple[str, dict[str, Any]]]:
    """The base model's train run: a larger embedded set drawn with another seed (the paper's NCT-CRC-HE base
    model, in small), no classifier comparison."""
    data_options = {
        **to_plain(cfg.data_options),
        "scale": cfg.base_scale,
        "embedded_seed": cfg.data_options.embedded_seed + 1,
    }
    run = {
        **shared_layers(cfg),
        "data": None,
        "data_options": data_options,
        "compare_classifiers": False,
        "out": str(out),
    }
    run["training"] = {**run["training"], "total_images": cfg.base_images}
    return [("study base model", run)]


def trial_layers(cfg: StudyGanConfig, name: str, base: Path, out: Path) -> list[tuple[str, dict[str, Any]]]:
    run = {
        **shared_layers(cfg),
        "data_options": to_plain(cfg.data_options),
        "classify": to_plain(cfg.classify),
        "out": str(out),
        "init": None if name == "scratch" else str(base),
        "freeze": "" if name in ("scratch", "pretrained") else name,
    }
    return [(f"study trial {name}", run)]


def result_of(ctx: RecipeContext, name: str, out: Path, error: str) -> TrialResult:
    relative = out.relative_to(ctx.run.dir).as_posix()
    if error:
        return TrialResult(name, relative, error=error)
    summary = read_json(out / SUMMARY_FILE)
    return TrialResult(name, relative, metrics=summary["metrics"], classify=summary.get("classify", {}))


def base_checkpoint(ctx: RecipeContext, cfg: StudyGanConfig, train: Any) -> Path:
    if cfg.base is not None:
        return Path(cfg.base)
    out = ctx.run.dir / "base"
    _, [(_, config)] = plan_trials(ctx, "train", [("base", base_layers(cfg, out))])
    ctx.console.print("[bold]base model[/] (a larger embedded set)")
    error = execute_trial(ctx.plugin, train, config, ctx.console)
    if error:
        fail_study(ctx.run, {"base": error}, ["base"], 1, "trials")
    best = out / "checkpoints" / "best.pt"
    return best if best.is_file() else out / "checkpoints" / "last.pt"


def study(ctx: RecipeContext) -> dict[str, Any]:
    cfg: StudyGanConfig = ctx.config
    train = ctx.plugin.entry("recipe", "train")
    base = base_checkpoint(ctx, cfg, train)
    outs = {name: ctx.run.dir / "trials" / trial_folder(name) for name in cfg.trials}
    _, planned = plan_trials(ctx, "train", ((n, trial_layers(cfg, n, base, outs[n])) for n in cfg.trials))
    results: list[TrialResult] = []
    for number, (name, config) in enumerate(planned, 1):
        ctx.console.print(f"[bold]trial {number}/{len(planned)}: {name}[/]")
        error = execute_trial(ctx.plugin, train, config, ctx.console)
        results.append(result_of(ctx, name, outs[name], error))
        write_tables(ctx.run.dir, results)  # after every trial: a killed study leaves its table so far
    summary = {
        "base": str(base),
        "trials": len(results),
        "finished": sum(r.finished for r in results),
        "table": str(ctx.run.dir / "study.md"),
        "rows": [r.row() for r in results],
    }
    failed = [r.name for r in results if not r.finished]
    if failed:
        fail_study(ctx.run, summary, failed, len(results), "trials")
    return summary
