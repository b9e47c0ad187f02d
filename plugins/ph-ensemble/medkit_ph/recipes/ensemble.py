"""`medkit run ph-ensemble [ensemble]`: the frozen-feature ensemble of report section 8, faithful and nested."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rich.markup import escape
from rich.progress import Progress

from medkit import RecipeContext

from ..data import check_folds, load_data
from ..evaluation import FoldOutcome, SearchSettings, run_folds
from ..extractors import feature_sets
from ..features import extract
from ..report import faithful_summary, nested_summary, plot_confusions, write_report


def ensemble(ctx: RecipeContext) -> dict[str, Any]:
    cfg = ctx.config
    started = time.perf_counter()

    def say(text: str) -> None:
        ctx.console.print(escape(text))

    specs = feature_sets(cfg.features)  # a wrong name stops the run before any image is read
    data = load_data(cfg.data, cfg.phantoms.count, cfg.phantoms.size, cfg.phantoms.seed, cfg.layout)
    for note in data.notes:
        say(f"note: {note}")
    check_folds(data, cfg.folds, "folds")
    if cfg.weights == "random":
        say("weights=random: every feature set comes from an untrained network; reports say so")
    features = {
        pipeline: extract(
            data.images, data.hashes, specs, pipeline, cfg.weights, cfg.weights_dir, cfg.batch_size, say=say
        )
        for pipeline in cfg.pipelines
    }
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.cv_seed)
    splits = list(folds.split(np.zeros(len(data)), data.labels))
    modes = ["faithful", "nested"] if cfg.mode == "both" else [cfg.mode]
    settings = SearchSettings(
        tuple(cfg.reductions),
        tuple(cfg.classifiers),
        cfg.n_features,
        tuple(cfg.strategies),
        cfg.n_top,
        cfg.triplet_size,
        cfg.tolerance,
        cfg.inner_folds,
        cfg.cv_seed,
    )
    evaluation_started = time.perf_counter()
    with Progress(console=ctx.console, disable=not ctx.console.is_terminal, transient=True) as progress:
        task = progress.add_task(f"{' + '.join(modes)}: folds x pipelines", total=len(splits) * len(features))

        def done(outcome: FoldOutcome) -> None:
            progress.advance(task)
            record: dict[str, Any] = {"pipeline": outcome.pipeline, "fold": outcome.fold + 1}
            for mode in ("faithful", "nested"):
                part = getattr(outcome, mode)
                if part:
                    record[f"{mode}/accuracy"] = part["accuracy"]
            ctx.run.log_metrics(record)

        outcomes = run_folds(
            {p: f.blocks for p, f in features.items()},
            data.labels,
            splits,
            settings,
            modes,
            len(data.class_names),
            cfg.jobs,
            done,
        )
    evaluation_seconds = time.perf_counter() - evaluation_started
    summary = summarise(cfg, data, features, outcomes, modes)
    summary["seconds"] = seconds_breakdown(
        features, outcomes, evaluation_seconds, time.perf_counter() - started
    )
    report = write_report(ctx.run.dir, summary, data.class_names)
    plot_confusions(ctx.run.plots_dir / "confusion.png", summary, data.class_names)
    for mode in modes:
        part = summary[mode]
        say(f"{mode}: {100 * part['accuracy']:.2f} % +- {100 * part['std']:.2f} over {cfg.folds} folds")
    say(f"report: {report}")
    return summary


def summarise(cfg: Any, data: Any, features: dict, outcomes: list[FoldOutcome], modes: list[str]) -> dict:
    pipelines, classes = list(features), len(data.class_names)
    first = next(iter(features.values()))
    random_weights = sorted({name for f in features.values() for name in f.random_weights})
    notes = sorted({note for o in outcomes for note in o.notes} | set(data.notes))
    notes += [note for f in features.values() for note in f.notes]
    summary: dict[str, Any] = {
        "data": {
            "source": data.source,
            "images": len(data),
            "per_class": dict(zip(data.class_names, data.counts(), strict=True)),
        },
        "feature_sets": list(first.blocks),
        "feature_dims": {name: int(block.shape[1]) for name, block in first.blocks.items()},
        "weights": first.weights,
        "random_weights": random_weights,
        "folds": cfg.folds,
        "cv_seed": cfg.cv_seed,
        "base_classifiers": (2 ** len(first.blocks) - 1) * len(cfg.reductions) * len(cfg.classifiers),
        "notes": notes,
    }
    if "faithful" in modes:
        summary["faithful"] = faithful_summary(outcomes, data.labels, pipelines, classes)
        summary["faithful_accuracy"] = summary["faithful"]["accuracy"]
    if "nested" in modes:
        summary["nested"] = nested_summary(outcomes, data.labels, pipelines, classes)
        summary["nested_accuracy"] = summary["nested"]["accuracy"]
    return summary


def seconds_breakdown(features: dict, outcomes: list[FoldOutcome], evaluation: float, total: float) -> dict:
    """Wall seconds of the run's parts; the per-stage figures inside the folds are summed over the worker
    processes (CPU-side seconds, not wall), so they add up to more than the evaluation's wall time when
    folds run in parallel."""
    seconds: dict[str, float] = {f"extraction ({p}, wall)": f.seconds for p, f in features.items()}
    seconds["evaluation (wall)"] = evaluation
    stages: dict[str, float] = {}
    for outcome in outcomes:
        for stage, value in outcome.seconds.items():
            stages[stage] = stages.get(stage, 0.0) + value
    seconds.update({f"{stage} (summed over workers)": value for stage, value in stages.items()})
    seconds["total (wall)"] = total
    return seconds
