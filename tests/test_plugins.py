"""The plugin manager: each plugin loads on its own; a broken one is recorded and skipped, never fatal
(unless strict mode asks for it); allow/deny lists and the API version gate work."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

import medkit
from medkit import ArchitectureEntry, PluginError, Recipe, UsageError, hookimpl
from medkit.plugins import get_plugins
from medkit.testing import run_cli

GOOD = """
from medkit import Recipe, hookimpl
MEDKIT_API = ">=1.0,<2"

@hookimpl
def register_recipes(register):
    register(Recipe(name="go", target="x:y", config="x:Z", default=True))
"""


def plugin_module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.MEDKIT_API = ">=1.0,<2"
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def test_the_installed_example_plugin_loads_with_what_it_registers():
    record = get_plugins().get("example")
    assert record.status == "ok"
    assert record.distribution == "medkit-example"
    assert set(record.recipes) == {"train"}
    assert set(record.of_kind("architecture")) == {"tiny_cnn"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("raise ImportError('no module named nothing_here')", "import failed: ImportError"),
        ("import sys; sys.exit(3)", "import failed: SystemExit"),
        (
            GOOD.replace("def register_recipes(register)", "def register_recipes(register, extra)"),
            "invalid hook implementation",
        ),
        (GOOD.replace("register_recipes", "register_recipez"), "unknown hook(s) register_recipez"),
        (
            GOOD.replace("register(Recipe(", "raise RuntimeError('boom'); register(Recipe("),
            "registration failed: RuntimeError: boom",
        ),
        (GOOD.replace('MEDKIT_API = ">=1.0,<2"', 'MEDKIT_API = ">=2.0,<3"'), "provides API 1.0"),
        (GOOD.replace('MEDKIT_API = ">=1.0,<2"', ""), "declares no MEDKIT_API"),
        (
            GOOD.replace(
                'register(Recipe(name="go", target="x:y", config="x:Z", default=True))',
                "register('not an entry')",
            ),
            "registers Recipe objects, got str",
        ),
    ],
    ids=[
        "import-error",
        "system-exit",
        "wrong-signature",
        "unknown-hook",
        "hook-raises",
        "incompatible-api",
        "no-api",
        "wrong-entry-type",
    ],
)
def test_a_broken_plugin_is_recorded_and_the_others_keep_working(fake_dist, source, expected):
    fake_dist("medkit-broken", {"broken": "medkit_broken_mod"}, {"medkit_broken_mod": source}, version="9.9")
    plugins = get_plugins()
    broken = plugins.records["broken"]
    assert broken.status == "failed"
    assert expected in broken.error
    assert (broken.distribution, broken.version) == ("medkit-broken", "9.9")
    assert broken.entries == {}
    assert plugins.records["example"].status == "ok"


def test_incompatible_api_message_says_which_versions_fit(fake_dist):
    fake_dist(
        "medkit-future",
        {"future": "medkit_future_mod"},
        {"medkit_future_mod": GOOD.replace('">=1.0,<2"', '">=2.0,<3"')},
    )
    error = get_plugins().records["future"].error
    assert f"this medkit {medkit.__version__} provides API {medkit.API_VERSION}" in error
    assert "supports API 1.x" in error and ">=2.0,<3" in error


def test_using_a_failed_plugin_names_its_error(fake_dist):
    fake_dist(
        "medkit-broken", {"broken": "medkit_broken_mod"}, {"medkit_broken_mod": "raise ValueError('bad')"}
    )
    with pytest.raises(PluginError, match="failed to load: import failed: ValueError: bad"):
        get_plugins().get("broken")
    result = run_cli(["run", "broken"])
    assert result.exit_code == 1
    assert "ValueError: bad" in result.output


def test_strict_mode_makes_a_failure_fatal(fake_dist, monkeypatch):
    fake_dist(
        "medkit-broken", {"broken": "medkit_broken_mod"}, {"medkit_broken_mod": "raise ImportError('x')"}
    )
    monkeypatch.setenv("MEDKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"1 plugin\(s\) failed: broken \(medkit-broken 0\.1\)"):
        get_plugins()
    assert run_cli(["list-plugins"]).exit_code == 1


def test_deny_list_blocks_a_plugin_without_importing_it(fake_dist, monkeypatch):
    fake_dist("medkit-loud", {"loud": "medkit_loud_mod"}, {"medkit_loud_mod": GOOD})
    monkeypatch.setenv("MEDKIT_DISABLE_PLUGINS", "loud")
    record = get_plugins().records["loud"]
    assert record.status == "blocked" and "MEDKIT_DISABLE_PLUGINS" in record.error
    assert "medkit_loud_mod" not in sys.modules
    with pytest.raises(UsageError, match="blocked"):
        get_plugins().get("loud")


def test_allow_list_loads_only_the_named_plugins(fake_dist, monkeypatch):
    fake_dist("medkit-other", {"other": "medkit_other_mod"}, {"medkit_other_mod": GOOD})
    monkeypatch.setenv("MEDKIT_PLUGINS", "other")
    plugins = get_plugins()
    assert plugins.records["other"].status == "ok"
    assert plugins.records["example"].status == "blocked"
    assert "MEDKIT_PLUGINS=other" in plugins.records["example"].error


def test_of_two_plugins_with_one_name_the_second_is_refused(fake_dist):
    fake_dist("medkit-twin", {"example": "medkit_twin_mod"}, {"medkit_twin_mod": GOOD})
    same_name = [r for r in get_plugins() if r.name == "example"]
    assert [(r.distribution, r.status) for r in same_name] == [
        ("medkit-twin", "ok"),
        ("medkit-example", "failed"),
    ]
    assert "already used by medkit-twin" in same_name[1].error
    assert get_plugins().get("example").distribution == "medkit-twin"


def test_a_plugin_object_registered_directly_is_used_like_an_installed_one(medkit_plugin):
    @hookimpl
    def register_architectures(register):
        register(ArchitectureEntry(name="net", target="medkit_example.model:TinyCNN", task="segmentation"))

    record = medkit_plugin(
        plugin_module("direct", register_architectures=register_architectures), name="direct"
    )
    assert record.status == "ok"
    assert get_plugins().get("direct").entry("architecture", "net").name == "net"


def test_registering_one_name_twice_fails_that_plugin(medkit_plugin):
    @hookimpl
    def register_recipes(register):
        for _ in range(2):
            register(Recipe(name="same", target="a:b", config="a:C"))

    record = medkit_plugin(plugin_module("twice", register_recipes=register_recipes), name="twice")
    assert record.status == "failed" and "registered twice" in record.error


def test_list_plugins_json_works_with_a_broken_plugin_installed(fake_dist):
    site = fake_dist("medkit-broken", {"broken": "medkit_broken_mod"}, {"medkit_broken_mod": "1/0"})
    completed = subprocess.run(
        [sys.executable, "-m", "medkit", "list-plugins", "--json"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    records = {r["name"]: r for r in json.loads(completed.stdout)}
    assert records["broken"]["status"] == "failed"
    assert "ZeroDivisionError" in records["broken"]["error"]
    assert records["example"]["status"] == "ok" and records["example"]["recipes"] == ["train"]
    assert {"name", "version", "status", "error", "recipes"} <= set(records["broken"])


def test_a_directly_registered_plugin_replaces_the_installed_one_of_its_name(medkit_plugin):
    import medkit_example.plugin

    record = medkit_plugin(medkit_example.plugin, name="example")
    assert record.status == "ok" and record.distribution is None
    assert [r.name for r in get_plugins()].count("example") == 1
