"""medkit run around any recipe: the run directory it writes, and how failures inside a run are reported."""

from __future__ import annotations

import json
import math
import types
from dataclasses import dataclass

import pytest
import yaml

from medkit import ArchitectureEntry, Recipe, RecipeConfig, hookimpl, option
from medkit.config import TrainingConfig
from medkit.errors import UsageError
from medkit.plugins import get_plugins
from medkit.runner import config_from_layers, execute
from medkit.testing import run_cli


@dataclass(kw_only=True)
class CountConfig(RecipeConfig):
    count: int = option(3, help="how many numbers to log")
    explode: bool = option(False, help="raise inside the run")


def count_recipe(ctx) -> dict:
    for step in range(1, ctx.config.count + 1):
        ctx.run.log_metrics({"epoch": step, "value": step * step})
    if ctx.config.explode:
        raise ZeroDivisionError("inside the recipe")
    return {"total": sum(r["value"] for r in ctx.run.read_metrics())}


def count_twice_recipe(ctx) -> dict:
    """A recipe that runs another, as a study does: `count` once per size, each into a folder of this run."""
    count = ctx.plugin.entry("recipe", "count")
    totals = {}
    for size in (2, 3):
        layers = [
            (f"trial count={size}", {"count": size}),
            ("caller", {"out": str(ctx.run.dir / f"count{size}")}),
        ]
        _, summary = execute(ctx.plugin, count, config_from_layers(ctx.plugin, count, layers))
        totals[f"count{size}"] = summary["total"]
    return totals


@dataclass(kw_only=True)
class NoArchConfig(TrainingConfig):
    pass


def counting_plugin() -> types.ModuleType:
    module = types.ModuleType("counting")
    module.MEDKIT_API = ">=1.0,<2"

    @hookimpl
    def register_recipes(register):
        register(Recipe(name="count", target=count_recipe, config=CountConfig, default=True))
        register(Recipe(name="noarch", target=count_recipe, config=NoArchConfig))
        register(Recipe(name="twice", target=count_twice_recipe, config=CountConfig))
        register(Recipe(name="growing", target=count_recipe, config=CountConfig, resumable=("count",)))
        register(Recipe(name="unimportable", target="medkit_no_such_module:run", config=CountConfig))

    @hookimpl
    def register_architectures(register):
        register(ArchitectureEntry(name="net", target="medkit_example.model:TinyCNN", task="segmentation"))

    module.register_recipes = register_recipes
    module.register_architectures = register_architectures
    return module


def test_a_run_writes_config_env_metrics_and_summary(medkit_plugin, tmp_path):
    medkit_plugin(counting_plugin(), name="counting")
    out = tmp_path / "run"
    result = run_cli(
        ["run", "counting", "--out", str(out), "--set", "count=4", "--seed", "7", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["total"] == 1 + 4 + 9 + 16
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert (config["count"], config["seed"], config["out"]) == (4, 7, None)
    env = json.loads((out / "env.json").read_text())
    assert (env["plugin"], env["recipe"], env["seed"], env["device"]) == ("counting", "count", 7, "cpu")
    assert env["packages"]["torch"] and env["medkit_version"]
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
        3,
        4,
    ]


def test_the_saved_config_reruns_the_same_run(medkit_plugin, tmp_path):
    medkit_plugin(counting_plugin(), name="counting")
    assert run_cli(["run", "counting", "--out", str(tmp_path / "a"), "--set", "count=2"]).exit_code == 0
    again = run_cli(
        ["run", "counting", "--config", str(tmp_path / "a" / "config.yaml"), "--out", str(tmp_path / "b")]
    )
    assert again.exit_code == 0, again.output
    assert (tmp_path / "a" / "summary.json").read_text().replace("/a", "/b") == (
        tmp_path / "b" / "summary.json"
    ).read_text()


def test_without_out_a_run_goes_to_a_timestamped_folder_under_the_runs_root(
    medkit_plugin, tmp_path, monkeypatch
):
    monkeypatch.setenv("MEDKIT_RUNS_DIR", str(tmp_path / "runs"))
    medkit_plugin(counting_plugin(), name="counting")
    assert run_cli(["run", "counting"]).exit_code == 0
    (folder,) = (tmp_path / "runs" / "counting").iterdir()
    assert folder.name.endswith("-count") and (folder / "summary.json").is_file()


def test_a_failure_inside_a_run_exits_1_with_a_message_and_keeps_the_traceback(medkit_plugin, tmp_path):
    medkit_plugin(counting_plugin(), name="counting")
    out = tmp_path / "run"
    result = run_cli(["run", "counting", "--out", str(out), "--set", "explode=true"])
    assert result.exit_code == 1
    assert "ZeroDivisionError: inside the recipe" in result.output and "Traceback" not in result.output
    assert "ZeroDivisionError" in (out / "error.log").read_text()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3  # what was logged before is kept


def test_a_recipe_without_a_default_architecture_asks_for_arch(medkit_plugin, tmp_path):
    medkit_plugin(counting_plugin(), name="counting")
    result = run_cli(["run", "counting", "noarch", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "pass --arch NAME (known: net)" in result.output
    assert not (tmp_path / "run").exists()


def test_resume_without_out_continues_the_latest_run_of_that_recipe(medkit_plugin, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDKIT_RUNS_DIR", str(tmp_path / "runs"))
    medkit_plugin(counting_plugin(), name="counting")
    for _ in range(2):
        assert run_cli(["run", "counting"]).exit_code == 0
    first, latest = sorted((tmp_path / "runs" / "counting").iterdir(), key=lambda p: p.stat().st_mtime)
    assert run_cli(["run", "counting", "--resume"]).exit_code == 0
    assert "resumed" in json.loads((latest / "env.json").read_text())
    assert "resumed" not in json.loads((first / "env.json").read_text())


def test_a_recipe_that_cannot_be_imported_fails_before_a_run_directory_exists(medkit_plugin, tmp_path):
    medkit_plugin(counting_plugin(), name="counting")
    result = run_cli(["run", "counting", "unimportable", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "medkit_no_such_module" in result.output
    assert not (tmp_path / "run").exists()


def test_a_recipe_can_run_another_into_a_folder_of_its_own_run(medkit_plugin, tmp_path):
    medkit_plugin(counting_plugin(), name="counting")
    out = tmp_path / "run"
    result = run_cli(["run", "counting", "twice", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["count3"] == 1 + 4 + 9
    for size, total in ((2, 1 + 4), (3, 1 + 4 + 9)):
        inner = out / f"count{size}"
        assert json.loads((inner / "summary.json").read_text())["total"] == total
        assert json.loads((inner / "env.json").read_text())["recipe"] == "count"
        assert yaml.safe_load((inner / "config.yaml").read_text())["count"] == size


def test_a_config_from_layers_names_the_layer_of_a_wrong_key(medkit_plugin):
    medkit_plugin(counting_plugin(), name="counting")
    record = get_plugins().get("counting")
    with pytest.raises(UsageError, match=r"cont \(from trial 3\): no such option. Did you mean 'count'"):
        config_from_layers(record, record.entry("recipe", "count"), [("trial 3", {"cont": 3})])


def test_a_recipe_names_the_options_a_resumed_run_may_change(medkit_plugin, tmp_path):
    medkit_plugin(counting_plugin(), name="counting")
    for recipe in ("count", "growing"):
        out = tmp_path / recipe
        assert run_cli(["run", "counting", recipe, "--out", str(out), "--set", "count=2"]).exit_code == 0
        resumed = run_cli(["run", "counting", recipe, "--resume", "--out", str(out), "--set", "count=3"])
        if recipe == "count":
            assert resumed.exit_code == 2 and "differs from the run's own in count" in resumed.output
        else:
            assert resumed.exit_code == 0, resumed.output
            assert yaml.safe_load((out / "config.yaml").read_text())["count"] == 3
            assert "resumed" in json.loads((out / "env.json").read_text())


def strict_loads(text: str):
    """JSON as RFC 8259 defines it: NaN and Infinity are not JSON (jq, JSON.parse and pandas refuse them)."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not strict JSON")

    return json.loads(text, parse_constant=refuse)


def test_undefined_figures_are_written_as_null_and_read_back_as_nan(tmp_path):
    import numpy as np

    from medkit.runs import Run, read_metrics

    run = Run(tmp_path, "p", "r", config=None)
    run.log_metrics({"epoch": 1, "val/dice/airway": float("nan"), "val/loss": 0.5})
    run.log_metrics({"epoch": 2, "val/dice/airway": np.float32("nan"), "val/loss": float("inf")})
    run.write_summary({"best": float("nan"), "final": {"val/x": np.float64("-inf")}, "best_epoch": None})
    lines = [strict_loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [
        {"epoch": 1, "val/dice/airway": None, "val/loss": 0.5},
        {"epoch": 2, "val/dice/airway": None, "val/loss": None},
    ]
    assert strict_loads((tmp_path / "summary.json").read_text()) == {
        "best": None,
        "final": {"val/x": None},
        "best_epoch": None,
    }
    records = read_metrics(tmp_path)
    assert math.isnan(records[0]["val/dice/airway"]) and records[0]["val/loss"] == 0.5
    run.keep_metrics(1)  # a resumed run rewrites the file: still strict
    assert [strict_loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == lines[:1]
