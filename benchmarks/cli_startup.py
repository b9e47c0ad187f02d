"""How fast `medkit` answers on its start-up path, against what an eager deep-learning CLI would cost.

Each command runs N times in one process run, interleaved so machine noise hits all alike; the median wall
time and the ratio to `import torch` (the floor of any CLI that imports its deep-learning stack at start, as a
CLI built directly on torch/timm/MONAI does) are written to benchmarks/results/cli_startup.json.

    .venv/bin/python benchmarks/cli_startup.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

PYTHON = sys.executable
COMMANDS = {
    "python -c pass (interpreter floor)": [PYTHON, "-c", "pass"],
    "medkit --help": [PYTHON, "-m", "medkit", "--help"],
    "medkit list-plugins --json": [PYTHON, "-m", "medkit", "list-plugins", "--json"],
    "medkit run example --help": [PYTHON, "-m", "medkit", "run", "example", "--help"],
    "python -c 'import torch' (eager CLI floor)": [PYTHON, "-c", "import torch"],
}
BASELINE = "python -c 'import torch' (eager CLI floor)"


def measure(repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeat):
        for name, command in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cli_startup.json")
    args = parser.parse_args()
    subprocess.run(COMMANDS[BASELINE], check=True)  # warm the file cache before timing
    times = measure(args.repeat)
    medians = {name: statistics.median(values) for name, values in times.items()}
    rows = [
        {"command": name, "median_s": round(m, 4), "ratio_to_import_torch": round(m / medians[BASELINE], 3)}
        for name, m in medians.items()
    ]
    result = {
        "repeat": args.repeat,
        "machine": platform.platform(),
        "python": platform.python_version(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("| command | median (s) | x `import torch` |\n|---|---:|---:|")
    for row in rows:
        print(f"| `{row['command']}` | {row['median_s']:.3f} | {row['ratio_to_import_torch']:.2f} |")


if __name__ == "__main__":
    main()
