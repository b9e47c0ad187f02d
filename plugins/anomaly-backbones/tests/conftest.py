"""anomaly-backbones tests keep generated data sets in a temporary cache folder, never in the user's ~/.cache."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _user_cache(medkit_user_cache):
    return medkit_user_cache
