"""anomaly-backbones tests keep generated data sets in a temporary cache folder, never in the user's ~/.cache,
and can run on one thread."""

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _user_cache(medkit_user_cache):
    return medkit_user_cache


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """The CI machine's two cores are shared; tiny ops run far faster on one thread than fighting for two
    (a batch of small matrix inverses took seconds instead of milliseconds)."""
    import faiss
    import torch

    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)
