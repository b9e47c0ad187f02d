"""ph-ensemble tests keep generated phantoms and feature caches in a temporary folder, never in ~/.cache."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _user_cache(medkit_user_cache):
    return medkit_user_cache
