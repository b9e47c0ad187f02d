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


class Halt(BaseException):
    """Neither an Exception nor a KeyboardInterrupt: what a plugin might raise to stop early."""


def raising_hook(error: BaseException):
    @hookimpl
    def register_recipes(register):
        raise error

    return register_recipes


@pytest.mark.parametrize("error", [SystemExit(3), Halt("stop")], ids=["system-exit", "base-exception"])
def test_a_hook_that_raises_a_base_exception_fails_only_its_plugin(medkit_plugin, error):
    record = medkit_plugin(plugin_module("halting", register_recipes=raising_hook(error)), name="halting")
    assert record.status == "failed" and record.entries == {}
    assert f"registration failed: {type(error).__name__}" in record.error
    assert get_plugins().records["example"].status == "ok"
    with pytest.raises(
        PluginError, match=f"plugin 'halting' is installed but failed to load: .*{type(error).__name__}"
    ):
        get_plugins().get("halting")


def test_running_a_plugin_whose_hook_calls_sys_exit_is_a_one_line_error(medkit_plugin):
    medkit_plugin(plugin_module("halting", register_recipes=raising_hook(SystemExit(3))), name="halting")
    result = run_cli(["run", "halting"])
    assert result.exit_code == 1
    assert "halting" in result.stderr and "SystemExit" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_strict_mode_makes_a_hook_that_calls_sys_exit_fatal(medkit_plugin, monkeypatch):
    medkit_plugin(plugin_module("halting", register_recipes=raising_hook(SystemExit(3))), name="halting")
    monkeypatch.setenv("MEDKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"1 plugin\(s\) failed: halting .*SystemExit"):
        get_plugins()
    assert run_cli(["list-plugins"]).exit_code == 1


def test_a_keyboard_interrupt_in_a_hook_stops_the_program(medkit_plugin):
    with pytest.raises(KeyboardInterrupt):
        medkit_plugin(
            plugin_module("halting", register_recipes=raising_hook(KeyboardInterrupt())), name="halting"
        )


IMPL = "medkit_lazy_impl"
"""The module a lazy plugin's recipe, config and architecture live in; imported only when they are used."""


def lazy_plugin() -> types.ModuleType:
    @hookimpl
    def register_recipes(register):
        register(Recipe(name="go", target=f"{IMPL}:run", config=f"{IMPL}:Config", default=True))

    @hookimpl
    def register_architectures(register):
        register(ArchitectureEntry(name="net", target=f"{IMPL}:build", task="segmentation"))

    return plugin_module(
        "lazy", register_recipes=register_recipes, register_architectures=register_architectures
    )


@pytest.fixture
def lazy_impl(tmp_path, monkeypatch):
    """``lazy_impl(source)`` makes ``source`` the text of the lazy plugin's implementation module."""

    def write(source: str) -> None:
        (tmp_path / f"{IMPL}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))

    yield write
    sys.modules.pop(IMPL, None)


IMPORT_FAILURES = {
    "zero-division": ("1 / 0\n", "ZeroDivisionError"),
    "system-exit": ("import sys\nsys.exit(4)\n", "SystemExit"),
    "runtime-error": ("raise RuntimeError('needs a GPU')\n", "RuntimeError: needs a GPU"),
    "multi-line-message": ("raise RuntimeError('needs\\na GPU')\n", "RuntimeError: needs a GPU"),
    "syntax-error": ("def broken(:\n", "SyntaxError: invalid syntax (at "),
}
LOADERS = {
    "recipe": ("recipe 'go'", lambda record: record.entry("recipe", "go").load()),
    "config": ("recipe 'go'", lambda record: record.entry("recipe", "go").load_config_class()),
    "architecture": ("architecture 'net'", lambda record: record.entry("architecture", "net").build()),
}


@pytest.mark.parametrize("failure", IMPORT_FAILURES.values(), ids=IMPORT_FAILURES)
@pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS)
def test_an_entry_whose_module_fails_at_import_raises_a_plugin_error_naming_it(
    medkit_plugin, lazy_impl, failure, loader
):
    source, exception = failure
    entry, load = loader
    lazy_impl(source)
    record = medkit_plugin(lazy_plugin(), name="lazy")
    assert record.status == "ok"  # the module is imported only when the entry is used
    with pytest.raises(PluginError) as caught:
        load(record)
    message = str(caught.value)
    for part in ("plugin 'lazy'", entry, IMPL, exception):
        assert part in message
    assert "\n" not in message


def test_a_keyboard_interrupt_while_importing_an_entry_stops_the_program(medkit_plugin, lazy_impl):
    lazy_impl("raise KeyboardInterrupt\n")
    record = medkit_plugin(lazy_plugin(), name="lazy")
    with pytest.raises(KeyboardInterrupt):
        record.entry("recipe", "go").load()


@pytest.mark.parametrize("failure", IMPORT_FAILURES.values(), ids=IMPORT_FAILURES)
@pytest.mark.parametrize("args", [["run", "lazy"], ["run", "lazy", "--help"]], ids=["run", "help"])
def test_running_a_recipe_whose_module_fails_at_import_is_a_one_line_error(
    medkit_plugin, lazy_impl, failure, args
):
    source, exception = failure
    lazy_impl(source)
    medkit_plugin(lazy_plugin(), name="lazy")
    result = run_cli(args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert "plugin 'lazy'" in line and IMPL in line and exception in line
