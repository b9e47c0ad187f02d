"""Test helpers for plugin authors: register a plugin object directly, and call the CLI in-process.

Installed as a pytest plugin (entry point ``pytest11``), so any test suite gets the ``medkit_plugin``
fixture::

    from medkit.testing import run_cli

    def test_my_recipe_runs(medkit_plugin, tmp_path):
        medkit_plugin(my_plugin_module, name="mine")
        result = run_cli(["run", "mine", "--out", str(tmp_path / "run")])
        assert result.exit_code == 0
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from .plugins import PluginRecord, add_direct_plugin, get_plugins, remove_direct_plugin, reset_plugins


@pytest.fixture
def medkit_plugin() -> Iterator[Callable[..., PluginRecord]]:
    """``register(plugin_object, name=...)`` adds a plugin for the test's duration and returns its record."""
    added: list[str] = []

    def register(plugin: Any, name: str | None = None) -> PluginRecord:
        name = name or getattr(plugin, "__name__", type(plugin).__name__)
        add_direct_plugin(name, plugin)
        added.append(name)
        return get_plugins().records[name]

    yield register
    for name in added:
        remove_direct_plugin(name)
    reset_plugins()


@pytest.fixture(scope="session")
def medkit_user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Points ``MEDKIT_CACHE_DIR`` (generated data sets, converted caches) at a temporary folder for the session,
    so tests never fill the user's ~/.cache. A plugin's conftest makes it automatic::

        @pytest.fixture(autouse=True, scope="session")
        def _user_cache(medkit_user_cache): ...
    """
    import os

    previous = os.environ.get("MEDKIT_CACHE_DIR")
    folder = tmp_path_factory.mktemp("medkit-cache")
    os.environ["MEDKIT_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("MEDKIT_CACHE_DIR", None)
    else:
        os.environ["MEDKIT_CACHE_DIR"] = previous


def run_cli(args: Sequence[str], env: dict[str, str] | None = None) -> Any:
    """Invoke ``medkit ARGS`` in-process; returns click's Result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from medkit.cli.main import app

    reset_plugins()
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def free_port() -> int:
    """A free TCP port on the loopback interface, for a torchrun rendezvous in a test."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_and_kill(args: Sequence[str], run_dir: Path, epochs_logged: int = 1, delay: float = 0.2) -> None:
    """Start ``python -m medkit ARGS`` (which writes ``run_dir``) and kill it with SIGKILL once its
    metrics.jsonl holds ``epochs_logged`` lines, ``delay`` seconds later (inside the next epoch): the kill a
    resume test needs. Fails the test when the run ends before the kill."""
    import signal
    import subprocess
    import sys
    import time

    log = Path(run_dir) / "metrics.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "medkit", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if log.is_file() and len(log.read_text(encoding="utf-8").splitlines()) >= epochs_logged:
            break
        time.sleep(0.02)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (Path(run_dir) / "summary.json").exists(), "the run finished before it could be killed"


def logged_figures(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir``'s metrics.jsonl without their timings: what two runs that are the same run
    share."""
    from .runs import read_metrics

    return [{k: v for k, v in record.items() if k != "seconds"} for record in read_metrics(Path(run_dir))]


@contextlib.contextmanager
def process_locale_kept() -> Iterator[None]:
    """Put the process's LC_CTYPE back after the block: GDCM's DICOM writer (SimpleITK) switches it to "C" and
    leaves it there, which turns later text decoding in the test session (subprocess output) into ASCII."""
    import locale

    saved = locale.setlocale(locale.LC_CTYPE)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)
