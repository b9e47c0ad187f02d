"""Installed, not only from the source tree: wheels of the core, the example (third-party) plugin and a broken
plugin go into a fresh virtual environment, and medkit works there as a user would get it.

The fresh environment borrows the heavy dependencies (torch, ...) of the test environment through a ``.pth``
file listing symlinks to them - everything medkit itself ships comes from the wheels alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("medkit", "__editable__", "_medkit")  # names of our own distributions and editable-install hooks


def build_wheel(source: Path, wheels: Path, scratch: Path) -> Path:
    """Build from a copy, so that setuptools leaves no build/ or egg-info in the repository."""
    copy = scratch / source.name
    shutil.copytree(
        source,
        copy,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            str(copy),
        ],
        check=True,
        capture_output=True,
    )
    return copy


def borrow_dependencies(venv: Path, deps: Path) -> None:
    site = Path(sysconfig.get_paths()["purelib"])
    deps.mkdir()
    for item in site.iterdir():
        if item.name.lower().startswith(OURS) or item.suffix == ".pth":
            continue
        (deps / item.name).symlink_to(item)
    target_site = next(venv.glob("lib/python*/site-packages"))
    (target_site / "borrowed-dependencies.pth").write_text(f"{deps}\n")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("install")
    wheels, scratch = root / "wheels", root / "src"
    scratch.mkdir()
    build_wheel(REPO, wheels, scratch)
    for plugin in (
        REPO / "examples" / "medkit-example",
        REPO / "tests" / "fixtures" / "medkit-broken-fixture",
    ):
        build_wheel(plugin, wheels, scratch)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            *map(str, sorted(wheels.glob("*.whl"))),
        ],
        check=True,
    )
    borrow_dependencies(venv, root / "deps")
    return venv


def in_venv(venv: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    completed = subprocess.run(args, capture_output=True, text=True, env=env, cwd=venv.parent, check=False)
    if check:
        assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


@pytest.mark.slow
def test_wheels_install_and_medkit_imports_from_the_environment_not_the_source_tree(installed):
    where = in_venv(
        installed,
        "python",
        "-c",
        "import medkit, medkit.cli, medkit.cache.sampler, medkit_example; print(medkit.__file__); print(medkit_example.__file__)",
    ).stdout.split()
    assert all(str(installed) in path for path in where), where
    assert not any(str(REPO) in path for path in where)


@pytest.mark.slow
def test_installed_list_plugins_reports_the_broken_plugin_and_keeps_the_example(installed):
    records = {
        r["name"]: r for r in json.loads(in_venv(installed, "medkit", "list-plugins", "--json").stdout)
    }
    assert records["example"]["status"] == "ok" and records["example"]["recipes"] == ["train"]
    assert records["broken"]["status"] == "failed"
    assert "medkit_dependency_that_does_not_exist" in records["broken"]["error"]
    assert records["broken"]["distribution"] == "medkit-broken-fixture"


@pytest.mark.slow
def test_the_catalogue_ships_inside_the_wheel(installed):
    catalogue = json.loads(in_venv(installed, "medkit", "list-plugins", "--all", "--json").stdout)
    entries = {r["name"]: r for r in catalogue}
    assert entries["ct-seg"]["status"] == "not installed"
    assert entries["ct-seg"]["distribution"] == "medkit-ct-seg"


@pytest.mark.slow
def test_the_installed_example_plugin_runs_its_recipe(installed, tmp_path):
    out = tmp_path / "run"
    in_venv(
        installed,
        "medkit",
        "run",
        "example",
        "--out",
        str(out),
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--set",
        "samples=16",
        "--set",
        "image_size=16",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["train_samples"] + summary["val_samples"] == 16
    failed = in_venv(installed, "medkit", "run", "broken", check=False)
    assert failed.returncode == 1 and "failed to load" in failed.stderr
