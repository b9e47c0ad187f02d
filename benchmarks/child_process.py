"""Run a benchmark's measurement in a fresh Python process, so its memory and warm-up are its own."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_child(script: str, *args: str) -> dict[str, Any]:
    """``python script --child *args``; the child prints its result as JSON on its last line of stdout."""
    completed = subprocess.run(
        [sys.executable, script, "--child", *args], capture_output=True, text=True, check=False
    )
    if completed.returncode:
        raise RuntimeError(completed.stderr[-3000:])
    return json.loads(completed.stdout.strip().splitlines()[-1])
