"""Running a recipe: resolve and validate its config, open the run directory, seed, call it, write the summary.

The CLI's ``medkit run`` is a thin layer over :func:`resolve` and :func:`execute`; notebooks and tests can call
them directly. A study recipe runs another recipe once per trial with :func:`plan_trials`, :func:`execute_trial`
and :func:`fail_study`.
"""

from __future__ import annotations

import inspect
import shutil
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from .config import Layer, load_yaml_file, parse_set, resolve_config, to_plain
from .entries import ArchitectureEntry, DatasetEntry, Recipe
from .errors import MedkitError, RunError, UsageError
from .plugins import PluginRecord
from .runs import (
    RESUMABLE_CHANGES,
    SUMMARY_FILE,
    Run,
    check_run_dir,
    config_changes,
    default_run_dir,
    environment,
    is_run_dir,
    latest_run_dir,
    stored_config,
)
from .suggest import did_you_mean

FLAG_KEYS = ("arch", "data", "out", "epochs", "init", "freeze", "seed", "device")
"""Explicit command-line flags and the config keys they set (highest precedence)."""


@dataclass
class RecipeContext:
    """Everything a recipe function receives: its validated config, its run directory, and its plugin."""

    plugin: PluginRecord
    recipe: Recipe
    config: Any
    run: Run
    device: str
    console: Console = field(default_factory=Console)

    def architecture(self) -> ArchitectureEntry:
        return self.plugin.entry("architecture", self.config.arch, "--arch")  # type: ignore[return-value]

    def build_model(self, **options: Any) -> Any:
        """The model named by ``config.arch``, built with ``config.model`` options (then ``options``)."""
        return self.architecture().build(**{**getattr(self.config, "model", {}), **options})

    def dataset_entry(self, name: str | None = None) -> DatasetEntry:
        """The named dataset entry, or the plugin's embedded default when ``name`` is None."""
        table = self.plugin.of_kind("dataset")
        if name is not None:
            return self.plugin.entry("dataset", name)  # type: ignore[return-value]
        embedded = [e for e in table.values() if getattr(e, "embedded", False)]
        if not embedded:
            raise UsageError(f"plugin {self.plugin.name!r} has no embedded default data; pass --data PATH")
        return embedded[0]  # type: ignore[return-value]


def resolve(
    plugin: PluginRecord,
    recipe: Recipe,
    config_files: Sequence[Path] = (),
    sets: Sequence[str] = (),
    flags: dict[str, Any] | None = None,
    resume: bool = False,
) -> Any:
    """The validated config: defaults < (resumed run's config) < config files < --set < flags."""
    schema = recipe.load_config_class()
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    layers: list[Layer] = []
    if resume:
        run_dir = Path(flags["out"]) if "out" in flags else latest_run_dir(plugin.name, recipe.name)
        check_run_dir(run_dir, plugin.name, recipe.name, resume=True)
        stored = stored_config(run_dir)
        stored.pop("out", None)
        layers.append((f"{run_dir}/config.yaml (the resumed run)", stored))
        flags["out"] = str(run_dir)
    layers += [(f"config file {path}", load_yaml_file(Path(path))) for path in config_files]
    layers += [(f"--set {expression}", parse_set(expression)) for expression in sets]
    schema_keys = set(schema.__dataclass_fields__)
    for key in flags:
        if key not in schema_keys:
            raise UsageError(f"--{key}: recipe {plugin.name} {recipe.name} has no {key!r} option")
    if flags:
        layers.append(
            ("command-line flags", {k: str(v) if isinstance(v, Path) else v for k, v in flags.items()})
        )
    config = config_from_layers(plugin, recipe, layers)
    if resume:
        allowed = RESUMABLE_CHANGES | set(recipe.resumable)
        changed = [k for k in config_changes(stored, to_plain(config)) if k.split(".")[0] not in allowed]
        if changed:
            raise UsageError(
                f"--resume: the config differs from the run's own in {', '.join(changed)}; a resumed run must "
                f"keep its config (only {', '.join(sorted(allowed))} may change)"
            )
    return config


def config_from_layers(plugin: PluginRecord, recipe: Recipe, layers: Sequence[Layer]) -> Any:
    """The validated config of ``recipe`` from named layers of plain options over its defaults, checked as
    `medkit run` checks it (known architecture, existing --data).

    With :func:`execute` this runs a recipe from code into a chosen folder: set ``out`` in the last layer.
    A recipe that runs others (a study runs one `train` per trial) validates every trial's config this way
    before the first one starts; errors name the layer that set the wrong key.
    """
    config, _ = resolve_config(recipe.load_config_class(), list(layers))
    check_architecture(plugin, config)
    data = getattr(config, "data", None)
    if data is not None and not Path(data).exists():
        raise UsageError(
            f"--data {data} does not exist; give a file or folder, or leave --data out for the demo data"
        )
    return config


def check_architecture(plugin: PluginRecord, config: Any) -> None:
    """``--arch`` must name a registered architecture; suggest the closest names otherwise."""
    arch = getattr(config, "arch", None)
    if arch is None:
        return
    table = plugin.of_kind("architecture")
    if arch == "":
        raise UsageError(
            f"this recipe has no default architecture; pass --arch NAME (known: {', '.join(sorted(table))})"
        )
    if arch not in table:
        raise UsageError(
            f"--arch {arch!r}: plugin {plugin.name!r} has no such architecture.{did_you_mean(arch, table)} "
            f"Known: {', '.join(sorted(table)) or 'none'}."
        )


def check_model_options(entry: ArchitectureEntry, options: dict[str, Any]) -> None:
    """``model.*`` options must be keyword arguments of the architecture's factory."""
    parameters = inspect.signature(entry.load()).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for key in options:
        if key not in parameters:
            raise UsageError(
                f"model.{key}: architecture {entry.name!r} has no option {key!r}.{did_you_mean(key, parameters)} "
                f"Options: {', '.join(parameters)}."
            )


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible on this machine; use --device cpu")
    return requested


def execute(
    plugin: PluginRecord, recipe: Recipe, config: Any, resume: bool = False, console: Console | None = None
) -> tuple[Run, dict[str, Any]]:
    """Run ``recipe`` with a validated ``config``; returns the run and its summary (also in summary.json)."""
    from . import distributed
    from .seeding import seed_everything

    console = console or Console()
    run_recipe = recipe.load()  # an import error is reported before a run directory exists
    device = resolve_device(getattr(config, "device", "cpu"))
    if getattr(config, "arch", None) is not None:  # before the run directory exists: a typo leaves none
        check_model_options(plugin.entry("architecture", config.arch), getattr(config, "model", {}))
    dist = distributed.init_from_env(device)
    label = getattr(config, "arch", None) or recipe.name
    run_dir = distributed.broadcast_object(
        Path(config.out) if config.out else default_run_dir(plugin.name, label)
    )
    created = not run_dir.exists()
    check_run_dir(run_dir, plugin.name, recipe.name, resume)
    distributed.barrier()
    run = Run(run_dir, plugin.name, recipe.name, config, resume, dist.rank, dist.world_size)
    run.start(environment(plugin.name, plugin.version, recipe.name, config, device))
    distributed.barrier()
    seed_everything(config.seed)
    context = RecipeContext(plugin, recipe, config, run, device, console)
    try:
        summary = dict(run_recipe(context) or {})
        # every rank leaves together: gloo aborts a process whose peer closed the connection first
        distributed.barrier()
    except UsageError:
        # a usage error found by the recipe (a model that refuses the image size, say) is the user's to fix:
        # a directory this call created and that holds no checkpoint yet is removed, not left half-written
        if created and run.is_main and not any(run.dir.glob("checkpoints/*")):
            shutil.rmtree(run.dir, ignore_errors=True)
        raise
    except MedkitError:
        raise
    except Exception as err:
        (run.dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
        raise RunError(
            f"{plugin.name} {recipe.name} failed: {type(err).__name__}: {err} "
            f"(traceback in {run.dir / 'error.log'})"
        ) from err
    finally:
        distributed.shutdown()
    summary["run_dir"] = str(run.dir)
    run.write_summary(summary)
    return run, summary


def plan_trials(
    context: RecipeContext, recipe_name: str, layered: Iterable[tuple[Any, Sequence[Layer]]]
) -> tuple[Recipe, list[tuple[Any, Any]]]:
    """The recipe a study runs once per trial, and each trial with its validated config (from the trial's
    layers), all made before the first trial runs: a wrong option stops the study at once, not hours in. A study
    runs its trials one after another in one process, so it refuses to start under torchrun."""
    from . import distributed

    if distributed.current().enabled:
        raise UsageError(
            "the study runs its trials one after another in one process; start it without torchrun"
        )
    recipe: Recipe = context.plugin.entry("recipe", recipe_name)  # type: ignore[assignment]
    return recipe, [(trial, config_from_layers(context.plugin, recipe, layers)) for trial, layers in layered]


def execute_trial(plugin: PluginRecord, recipe: Recipe, config: Any, console: Console) -> str:
    """Run ``recipe`` into ``config.out`` as one trial of a study; returns "" or the error that stopped it.

    A folder holding a summary.json finished earlier and is kept; one holding a run is resumed. A MedkitError
    (out of memory, a width the architecture refuses, weights without a local file) is returned for the study to
    record, so the study goes on; the memory the trial held is freed either way.
    """
    from rich.markup import escape

    out = Path(config.out)
    if (out / SUMMARY_FILE).is_file():
        console.print(f"finished earlier: {out / SUMMARY_FILE}")
        return ""
    try:
        execute(plugin, recipe, config, resume=is_run_dir(out), console=console)
    except MedkitError as err:
        console.print(f"[red]failed:[/] {escape(str(err))}")
        return str(err)
    finally:
        release_memory()
    return ""


def release_memory() -> None:
    """Free what a run left (a failed one's tensors too) before the next one starts."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fail_study(
    run: Run, summary: dict[str, Any], failed: Sequence[str], trials: int, may_change: str
) -> None:
    """End a study some of whose trials failed, after its tables and plots are written: write its summary, then
    raise a RunError (exit 1) so that a script sees the study is incomplete. ``--resume`` retries just the failed
    trials (they have no summary.json) and keeps the finished ones; ``may_change`` names the options it may change."""
    run.write_summary({**summary, "run_dir": str(run.dir)})
    raise RunError(
        f"{len(failed)} of {trials} trials failed ({', '.join(failed)}); their errors are in "
        f"{run.dir / 'study.md'}. `--resume --out {run.dir}` retries them and keeps the finished trials; "
        f"{may_change} may change on resume."
    )
