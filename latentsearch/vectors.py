"""Vectors at the door (invariant 6): shape, dtype, dimension, finiteness, normalisation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .errors import DimensionMismatchError, InvalidInputError


def as_matrix(vectors: Any, dim: int, what: str = "vector") -> np.ndarray:
    """``vectors`` as a finite ``(n, dim)`` float32 C-contiguous array; a 1-D vector is one row."""
    try:
        raw = np.asarray(vectors)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what}s must be arrays of numbers: {exc}") from None
    if raw.dtype.kind not in "iuf":
        raise InvalidInputError(f"{what}s must be real numbers, got dtype {raw.dtype}")
    x = raw.astype(np.float32, copy=False)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InvalidInputError(f"{what}s must be 1-D or 2-D, got shape {x.shape}")
    if x.shape[1] != dim:
        raise DimensionMismatchError(dim, x.shape[1], what)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise InvalidInputError(f"{what} {int(np.argmax(bad))} contains NaN or infinity")
    return np.ascontiguousarray(x)


def normalize(x: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """Rows (the last axis) scaled to unit L2 norm, as ``dtype`` (zero rows stay zero). Norms are
    taken in float64, so rows of huge float32 values do not overflow and collapse to zero."""
    x = np.asarray(x)
    norms = np.linalg.norm(x.astype(np.float64, copy=False), axis=-1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=dtype)


def prepare(vectors: Any, dim: int, metric: str, what: str = "vector") -> np.ndarray:
    """Validated vectors, L2-normalised when the metric is cosine (zero vectors stay zero)."""
    x = as_matrix(vectors, dim, what)
    return normalize(x) if metric == "cosine" else x


def exact_search(
    xq: np.ndarray, batches: Iterable[tuple[np.ndarray, np.ndarray]], k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(D, I)`` of shape ``(nq, k)`` over ``(ids, vectors)`` batches, best first, ``-1``
    where fewer exist; scores as FAISS gives them (squared distance for ``l2``). FAISS's
    ``knn`` per batch merged by its ``ResultHeap``, as ``faiss/contrib/exhaustive_search.py`` does."""
    import faiss

    xq = np.ascontiguousarray(xq, dtype=np.float32)
    l2 = metric == "l2"
    heap = faiss.ResultHeap(len(xq), k, keep_max=not l2)
    for ids, xb in batches:
        if not len(xb):
            continue
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        D, pos = faiss.knn(xq, xb, min(k, len(xb)), metric=faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT)
        heap.add_result(D, np.where(pos >= 0, np.asarray(ids, dtype=np.int64)[np.maximum(pos, 0)], -1))
    heap.finalize()
    return heap.D, heap.I


def knn(xq: np.ndarray, xb: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(D, I)`` of the ``k`` nearest rows of ``xb`` ``(nb, d)`` for each row of ``xq`` ``(nq, d)``;
    ``I`` indexes ``xb``, ``-1`` pads when ``nb < k``."""
    return exact_search(xq, [(np.arange(len(xb), dtype=np.int64), xb)], k, metric)
