"""list-plugins, describe and shell completion, as a user sees them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from medkit import ArchitectureEntry, Recipe, hookimpl
from medkit.catalogue import ENV_REGISTRY, load_catalogue
from medkit.plugins import add_direct_plugin, get_plugins, remove_direct_plugin
from medkit.testing import run_cli


def test_list_plugins_shows_each_plugin_with_version_status_and_what_it_registers():
    result = run_cli(["list-plugins"])
    assert result.exit_code == 0
    row = next(line for line in result.stdout.splitlines() if "example" in line)
    assert "0.1.0" in row and "ok" in row and "tiny_cnn" in result.stdout


def test_list_plugins_all_adds_catalogue_entries_with_how_to_install_them(tmp_path, monkeypatch):
    # the shipped catalogue's plugins are all installed here: add one that is not, and one not released
    shipped = (Path(__file__).parents[1] / "registry.yaml").read_text()
    extra = """  - name: future-plugin
    distribution: medkit-future-plugin
    summary: "A plugin from PyPI that is not installed"
    api: ">=1.0,<2"
  - name: unreleased-plugin
    distribution: medkit-unreleased-plugin
    summary: "A plugin that is announced but not released"
    api: ">=1.0,<2"
    released: false
"""
    registry = tmp_path / "registry.yaml"
    registry.write_text(shipped.rstrip("\n") + "\n" + extra)
    monkeypatch.setenv(ENV_REGISTRY, str(registry))
    records = json.loads(run_cli(["list-plugins", "--all", "--json"]).stdout)
    table = run_cli(["list-plugins", "--all"]).stdout
    catalogue = load_catalogue()
    by_name = {r["name"]: r for r in records}
    assert by_name["future-plugin"]["install"] == "pip install medkit-future-plugin"
    assert by_name["unreleased-plugin"]["install"] == "not released yet"
    assert by_name["example"]["status"] == "ok"
    assert {e.name for e in catalogue} <= set(by_name)
    for entry in catalogue:
        if entry.name in get_plugins().records:
            assert by_name[entry.name]["status"] == "ok"
        else:
            assert by_name[entry.name]["status"] == "not installed"
            assert by_name[entry.name]["install"]  # a command, or an honest "not released yet"
    assert "not installed" in table and "future-plugin" in table and "ubc" in table


def test_describe_reports_recipes_architectures_with_parameter_counts_and_datasets():
    described = json.loads(run_cli(["describe", "example", "--json"]).stdout)
    entries = described["entries"]
    assert [r["name"] for r in entries["recipe"]] == ["train"] and entries["recipe"][0]["default"]
    (arch,) = entries["architecture"]
    # TinyCNN(1 -> 3 classes, width 24): 3 conv blocks (216 + 5184 + 5184 weights, 3 x 48 BN) + 1x1 head (72 + 3)
    assert arch == {**arch, "name": "tiny_cnn", "parameters": 216 + 5184 * 2 + 3 * 48 + 72 + 3}
    assert {d["name"] for d in entries["dataset"]} == {"shapes", "npz_folder"}
    assert "10,803" in run_cli(["describe", "example"]).stdout


def test_describe_an_unknown_plugin_is_a_usage_error():
    result = run_cli(["describe", "exampel"])
    assert result.exit_code == 2 and "Did you mean 'example'" in result.output


def complete(words: str) -> list[str]:
    env = {
        **os.environ,
        "_MEDKIT_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "medkit"], env=env, capture_output=True, text=True, check=False
    )
    return completed.stdout.split()


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("medkit run ex", ["example"]),
        ("medkit run example t", ["train"]),
        ("medkit run example --arch ti", ["tiny_cnn"]),
        ("medkit run example --set optim.l", ["optim.lr="]),
        ("medkit describe exa", ["example"]),
        ("medkit list-pl", ["list-plugins"]),
    ],
)
def test_shell_completion_knows_plugins_recipes_architectures_and_config_keys(words, expected):
    assert complete(words) == expected


def broken_plugin(name: str, module: str) -> types.ModuleType:
    """A plugin whose ``register_recipes`` hook calls ``sys.exit(3)``, and whose architecture lives in ``module``."""

    @hookimpl
    def register_recipes(register):
        sys.exit(3)

    @hookimpl
    def register_architectures(register):
        register(ArchitectureEntry(name="net", target=f"{module}:build", task="segmentation"))

    plugin = types.ModuleType(name)
    plugin.MEDKIT_API = ">=1.0,<2"
    plugin.register_recipes = register_recipes
    plugin.register_architectures = register_architectures
    return plugin


def lazy_plugin(name: str, module: str) -> types.ModuleType:
    """A plugin whose recipe and architecture live in ``module``, imported only when they are used."""

    @hookimpl
    def register_recipes(register):
        register(Recipe(name="go", target=f"{module}:run", config=f"{module}:Config", default=True))

    @hookimpl
    def register_architectures(register):
        register(ArchitectureEntry(name="net", target=f"{module}:build", task="segmentation"))

    plugin = types.ModuleType(name)
    plugin.MEDKIT_API = ">=1.0,<2"
    plugin.register_recipes = register_recipes
    plugin.register_architectures = register_architectures
    return plugin


@pytest.fixture
def exiting_module(tmp_path, monkeypatch):
    """A module that calls ``sys.exit(4)`` when imported."""
    (tmp_path / "medkit_exiting_impl.py").write_text("import sys\nsys.exit(4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "medkit_exiting_impl"
    sys.modules.pop("medkit_exiting_impl", None)


@pytest.fixture
def direct_plugin():
    """``add(name, plugin)`` registers a plugin without loading it, so a failure shows in the test itself."""
    added: list[str] = []

    def add(name: str, plugin: types.ModuleType) -> None:
        add_direct_plugin(name, plugin)
        added.append(name)

    yield add
    for name in added:
        remove_direct_plugin(name)


@pytest.fixture
def halting(direct_plugin, exiting_module):
    """Plugin ``halting``: its register_recipes hook calls sys.exit(3)."""
    direct_plugin("halting", broken_plugin("halting", exiting_module))


@pytest.fixture
def lazy(direct_plugin, exiting_module):
    """Plugin ``lazy``: loads, but the module of its recipe and architecture calls sys.exit(4) on import."""
    direct_plugin("lazy", lazy_plugin("lazy", exiting_module))


def test_list_plugins_shows_a_plugin_whose_hook_exits_as_failed_and_the_others_as_usual(halting, lazy):
    result = run_cli(["list-plugins"])
    assert result.exit_code == 0, result.output
    rows = {
        name: next(line for line in result.stdout.splitlines() if f" {name} " in line)
        for name in ("halting", "lazy", "example")
    }
    assert "failed" in rows["halting"] and "SystemExit" in result.stdout
    assert "ok" in rows["lazy"] and "ok" in rows["example"]
    assert "Traceback" not in result.output
    records = {r["name"]: r for r in json.loads(run_cli(["list-plugins", "--json"]).stdout)}
    assert records["halting"]["status"] == "failed" and "SystemExit: 3" in records["halting"]["error"]
    assert records["lazy"]["recipes"] == ["go"]


def test_describe_a_plugin_whose_hook_exits_is_a_one_line_error(halting):
    result = run_cli(["describe", "halting"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert "'halting'" in line and "SystemExit" in line


def test_describe_shows_what_it_can_of_a_plugin_whose_module_exits_at_import(lazy, exiting_module):
    result = run_cli(["describe", "lazy", "--json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)["entries"]
    assert [r["name"] for r in entries["recipe"]] == ["go"]
    (arch,) = entries["architecture"]
    assert arch["parameters"].startswith("cannot build: plugin 'lazy': architecture 'net'")
    assert exiting_module in arch["parameters"] and "SystemExit: 4" in arch["parameters"]
    table = run_cli(["describe", "lazy"])
    assert table.exit_code == 0 and "cannot build" in table.stdout and "Traceback" not in table.output
    assert run_cli(["describe", "example"]).exit_code == 0
