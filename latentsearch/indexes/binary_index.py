"""Binary indexes: one bit per dimension (the sign of each component), searched by hamming distance.

``binary`` is FAISS's ``IndexBinaryFlat`` (exhaustive hamming search) and ``binary,HNSW32`` its
``IndexBinaryHNSW`` (a graph over the codes, 32 links per node), each under an
``IndexBinaryIDMap2`` that holds the store's ids. A vector of dimension d takes d/8 bytes, 32x
less than float32, so d must be a multiple of 8.

Hamming distance only approximates the metric: the hamming fraction h/d estimates the angle between
two vectors over pi (random-hyperplane hashing), so scores are ``cos(pi * h / d)`` for ``cosine``
and ``ip`` and ``h / d`` for ``l2``. Use ``?rescore=R`` (e.g. ``binary?rescore=10``) for exact
scores and order: the ``R x k`` nearest codes are re-ranked by the stored float vectors.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .faiss_index import DEAD, FaissIndex, skip_dead
from .selection import DEFAULT_EF_CONSTRUCTION, DEFAULT_EF_SEARCH, binary_hnsw


class BinaryIndex(FaissIndex):
    """A :class:`FaissIndex` over the sign bits of the vectors."""

    binary = True

    def __init__(self, factory: str, dim: int, metric: str, search: dict[str, int] | None = None):
        self.vectors = None
        self.factory, self.dim, self.metric = factory, dim, metric
        self.search_options = dict(search or {})
        self.hnsw_m = binary_hnsw(factory, dim)  # refuses a dim that is not a multiple of 8
        self._target = self._fresh()
        self._native_ids = False
        self.train_size = 0
        self.index = self._wrap(self._target)
        self.dead = 0
        self._gpu: Any = False  # binary indexes stay on the CPU
        self._gpu_lock = threading.Lock()

    def _fresh(self) -> Any:
        import faiss

        if self.hnsw_m:
            index = faiss.IndexBinaryHNSW(self.dim, self.hnsw_m)
            index.hnsw.efConstruction = DEFAULT_EF_CONSTRUCTION
            return index
        return faiss.IndexBinaryFlat(self.dim)

    def _wrap(self, index: Any) -> Any:
        import faiss

        return faiss.IndexBinaryIDMap2(index)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, dim / 8)`` uint8 codes: bit i set where component i is positive."""
        return np.ascontiguousarray(np.packbits(self._check(vectors) > 0, axis=1))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        codes = self.encode(vectors)
        if len(ids) != len(codes):
            raise InvalidInputError(f"{len(ids)} ids for {len(codes)} vectors")
        if len(ids):
            self.index.add_with_ids(codes, ids)

    def _compact(self, id_map: np.ndarray) -> None:
        """Rebuild without the dead codes (HNSW cannot remove), from the codes it holds."""
        import faiss

        inner = faiss.downcast_IndexBinary(self.index.index)
        storage = faiss.downcast_IndexBinary(inner.storage) if self.hnsw_m else inner
        codes = faiss.vector_to_array(storage.xb).reshape(-1, self.dim // 8)
        alive = np.flatnonzero(id_map != DEAD)
        self.index, self.dead = self._wrap(self._fresh()), 0
        if len(alive):
            self.index.add_with_ids(np.ascontiguousarray(codes[alive]), id_map[alive])

    def _params(self, selector: Any, options: dict[str, int] | None = None) -> tuple[Any, list[Any]]:
        import faiss

        options = self.search_options if options is None else options
        selector, keep = skip_dead(selector, bool(self.dead))
        if self.hnsw_m:
            ef = options.get("efSearch", DEFAULT_EF_SEARCH)
            return faiss.SearchParametersHNSW(sel=selector, efSearch=ef), keep
        return (faiss.SearchParameters(sel=selector) if selector is not None else None), keep

    def _search(
        self, xq: np.ndarray, k: int, selector: Any = None, options: dict[str, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        codes = self.encode(xq)
        params, keep = self._params(selector, options)
        H, I = self.index.search(codes, k, params=params) if params is not None else self.index.search(codes, k)
        del keep
        frac = H.astype(np.float64) / self.dim
        if self.metric == "l2":
            D = np.where(I >= 0, frac, np.inf).astype(np.float32)
        else:
            D = np.where(I >= 0, np.cos(math.pi * np.clip(frac, 0.0, 1.0)), -np.inf).astype(np.float32)
        return D, I

    def _write(self, target: Any) -> None:
        import faiss

        faiss.write_index_binary(self.index, target)

    def _read(self, path: str) -> Any:
        import faiss

        return faiss.read_index_binary(path)

    def _fits(self, loaded: Any) -> bool:
        return loaded.d == self.dim

    def nprobe(self, nlist: int, options: dict[str, int] | None = None) -> int:
        return 0
