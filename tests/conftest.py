"""Shared fixtures: fake installed distributions with medkit entry points, and a clean plugin state per test."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from medkit.plugins import reset_plugins

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for variable in ("MEDKIT_STRICT_PLUGINS", "MEDKIT_PLUGINS", "MEDKIT_DISABLE_PLUGINS", "MEDKIT_DEBUG"):
        monkeypatch.delenv(variable, raising=False)
    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Install a distribution the cheap way: a ``*.dist-info`` folder and modules on sys.path.

    ``fake_dist("medkit-bad", {"bad": "medkit_bad_mod"}, {"medkit_bad_mod": "raise ImportError('x')"})``
    is found by ``importlib.metadata`` exactly like a pip-installed plugin.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    created: list[str] = []

    def make(
        distribution: str, entry_points: dict[str, str], modules: dict[str, str], version: str = "0.1"
    ) -> Path:
        info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
        lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[medkit.plugins]\n{lines}\n")
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            created.append(module)
        reset_plugins()
        return site

    yield make
    for module in created:
        sys.modules.pop(module, None)
