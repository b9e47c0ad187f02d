"""The CLI start-up path stays light: `medkit --help`, `list-plugins` and `run PLUGIN --help` import no heavy
library (their speed is measured in benchmarks/cli_startup.py, not here)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "timm", "sklearn", "faiss", "matplotlib", "h5py", "numpy")


def imported_modules(*args: str) -> set[str]:
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "medkit", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    names = set()
    for line in completed.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert "medkit.cli.main" in names  # the probe does see our own imports
    return names


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["list-plugins"],
        ["list-plugins", "--json", "--all"],
        ["run", "example", "--help"],
        ["run", "ct-seg", "study", "--help"],
        ["cache", "build", "--help"],
    ],
)
def test_the_start_up_path_imports_no_heavy_library(args):
    heavy = {name for name in imported_modules(*args) if name.split(".")[0] in HEAVY}
    assert not heavy, f"medkit {' '.join(args)} imported {sorted(heavy)[:5]}"
