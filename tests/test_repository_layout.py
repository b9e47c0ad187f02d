"""The test tree stays collectable as one suite: `make test` runs tests/, plugins/ and examples/ together."""

from __future__ import annotations

import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_file_name():
    """Test folders have no __init__.py, so pytest imports each module by its bare name: a second
    plugins/*/tests/test_data.py would stop collection of the whole suite ("import file mismatch")."""
    testpaths = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"][
        "testpaths"
    ]
    places = defaultdict(list)
    for folder in testpaths:
        for path in (ROOT / folder).rglob("*.py"):
            if path.name.startswith("test_") or path.name in {"helpers.py"}:
                places[path.name].append(path.relative_to(ROOT))
    shared = {name: paths for name, paths in places.items() if len(paths) > 1}
    assert not shared, f"rename one of each (prefix the plugin's name, e.g. test_ubc_data.py): {shared}"
    assert len(places) > 30  # the walk found the suite
