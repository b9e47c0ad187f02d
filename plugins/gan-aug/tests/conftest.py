"""gan-aug tests keep generated data in a temporary cache folder and use one torch thread (a 2-core machine)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _user_cache(medkit_user_cache):
    torch.set_num_threads(1)
    return medkit_user_cache
