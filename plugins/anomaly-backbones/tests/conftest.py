"""anomaly-backbones tests keep generated data sets in a temporary cache folder, never in the user's ~/.cache."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _anomaly_cache_folder(tmp_path_factory):
    previous = os.environ.get("MEDKIT_CACHE_DIR")
    os.environ["MEDKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("medkit-cache"))
    yield
    if previous is None:
        os.environ.pop("MEDKIT_CACHE_DIR", None)
    else:
        os.environ["MEDKIT_CACHE_DIR"] = previous
