"""Nearest-neighbour search over a bank of feature vectors, served by FAISS.

``flat`` is exact search (``IndexFlatL2``); ``ivf`` (``IndexIVFFlat``) and ``ivfpq`` (``IndexIVFPQ``) are
approximate indexes for banks too large for exact search: the vectors are split into ``nlist`` cells by k-means
trained on a sample, and a query visits the ``nprobe`` nearest cells. Distances returned are Euclidean (FAISS
computes squared L2; :meth:`NearestNeighbours.search` takes the square root).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import torch

from medkit import UsageError

IndexKind = Literal["flat", "ivf", "ivfpq"]
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "ivfpq")


def as_float32_matrix(vectors: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    """A C-contiguous float32 (n, dim) array, as FAISS wants it."""
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().cpu().numpy()
    if vectors.ndim != 2:
        raise UsageError(f"{name} must be a 2-D (n, dim) array of vectors, got shape {tuple(vectors.shape)}")
    return np.ascontiguousarray(vectors, dtype=np.float32)


class NearestNeighbours:
    """A FAISS index over a bank of vectors: ``add`` the bank once, then ``search`` queries.

    ``nlist`` defaults to about ``4 sqrt(n)`` cells (never more than ``n / 39``, FAISS's minimum of training
    points per cell); the k-means is trained on at most ``train_size`` vectors drawn with ``seed``. ``pq_m`` is the
    number of product-quantiser sub-vectors of ``ivfpq`` (it must divide the dimension; default: the largest of
    16, 8, 4, 2, 1 that does). ``gpu=True`` moves the index to the GPU when FAISS sees one
    (``faiss.get_num_gpus() > 0``) and warns and stays on the CPU otherwise.
    """

    def __init__(
        self,
        index: IndexKind = "flat",
        nlist: int | None = None,
        nprobe: int = 8,
        pq_m: int | None = None,
        train_size: int = 100_000,
        gpu: bool = False,
        seed: int = 1024,
    ) -> None:
        if index not in INDEX_KINDS:
            raise UsageError(f"unknown index {index!r}; choose one of {', '.join(INDEX_KINDS)}")
        if nprobe < 1 or (nlist is not None and nlist < 1):
            raise UsageError(f"nlist and nprobe must be >= 1, got nlist={nlist}, nprobe={nprobe}")
        self.kind, self.nlist, self.nprobe, self.pq_m = index, nlist, nprobe, pq_m
        self.train_size, self.gpu, self.seed = train_size, gpu, seed
        self._index: Any = None

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return 0 if self._index is None else int(self._index.d)

    def add(self, vectors: torch.Tensor | np.ndarray) -> NearestNeighbours:
        """Build the index over ``vectors`` (n, dim), replacing any earlier bank."""
        import faiss

        bank = as_float32_matrix(vectors, "the bank")
        n, dim = bank.shape
        if n == 0:
            raise UsageError("the bank of vectors is empty; fit on at least one normal image")
        index = faiss.IndexFlatL2(dim) if self.kind == "flat" else self._trained_ivf(bank)
        index.add(bank)
        if self.kind != "flat":
            index.make_direct_map()  # lets reconstruct() return bank vectors by id
        self._index = self._on_device(index)
        return self

    def _trained_ivf(self, bank: np.ndarray) -> Any:
        import faiss

        n, dim = bank.shape
        nlist = self.nlist or max(1, int(4 * math.sqrt(n)))
        nlist = max(1, min(nlist, n // 39))
        quantizer = faiss.IndexFlatL2(dim)
        if self.kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, dim, nlist)
        else:
            m = self.pq_m or next(m for m in (16, 8, 4, 2, 1) if dim % m == 0)
            if dim % m:
                raise UsageError(f"pq_m={m} must divide the vector dimension {dim}")
            index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, 8)
        rng = np.random.default_rng(self.seed)
        sample = bank[np.sort(rng.choice(n, size=min(n, self.train_size), replace=False))]
        index.train(sample)
        index.nprobe = min(self.nprobe, nlist)
        return index

    def _on_device(self, index: Any) -> Any:
        import faiss

        if not self.gpu:
            return index
        if faiss.get_num_gpus() == 0 or not hasattr(faiss, "index_cpu_to_gpu"):
            warnings.warn(
                "gpu=True but FAISS sees no GPU (install faiss-gpu); searching on the CPU", stacklevel=3
            )
            return index
        return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)

    def search(self, queries: torch.Tensor | np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest bank vectors of every query: Euclidean distances (q, k) and bank indices (q, k)."""
        if self._index is None:
            raise UsageError("the nearest-neighbour index is empty; call add() with the bank first")
        query = as_float32_matrix(queries, "the queries")
        if query.shape[1] != self.dim:
            raise UsageError(f"queries have dimension {query.shape[1]}, the bank has {self.dim}")
        if not 1 <= k <= self.ntotal:
            raise UsageError(f"k={k} must be between 1 and the bank size {self.ntotal}")
        squared, indices = self._index.search(query, k)
        return np.sqrt(np.maximum(squared, 0.0)), indices

    def reconstruct(self, indices: np.ndarray) -> np.ndarray:
        """The bank vectors with the given ids (approximate for ``ivfpq``), shape ``indices.shape + (dim,)``."""
        flat = np.ascontiguousarray(indices, dtype=np.int64).ravel()
        return self._cpu_index().reconstruct_batch(flat).reshape(*np.shape(indices), self.dim)

    def _cpu_index(self) -> Any:
        import faiss

        if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(self._index).__name__:
            return faiss.index_gpu_to_cpu(self._index)
        return self._index

    def state_dict(self) -> dict[str, Any]:
        """The options and the serialised index (it holds the bank), as tensors and plain values."""
        import faiss

        state: dict[str, Any] = {"index": self.kind, "nlist": self.nlist, "nprobe": self.nprobe}
        state.update(pq_m=self.pq_m, train_size=self.train_size, seed=self.seed)
        if self._index is not None:
            state["serialized"] = torch.from_numpy(faiss.serialize_index(self._cpu_index()))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import faiss

        self.kind, self.nlist, self.nprobe = state["index"], state["nlist"], state["nprobe"]
        self.pq_m, self.train_size, self.seed = state["pq_m"], state["train_size"], state["seed"]
        self._index = None
        if "serialized" in state:
            self._index = self._on_device(faiss.deserialize_index(state["serialized"].numpy()))
