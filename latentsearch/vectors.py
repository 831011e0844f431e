"""Vectors at the door (invariant 6): shape, dtype, dimension, finiteness, normalisation."""

from __future__ import annotations

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


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (zero rows stay zero). Norms are taken in float64,
    so rows of huge float32 values do not overflow to infinity and collapse to zero."""
    x = np.asarray(x)
    norms = np.linalg.norm(x.astype(np.float64, copy=False), axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def prepare(vectors: Any, dim: int, metric: str, what: str = "vector") -> np.ndarray:
    """Validated vectors, L2-normalised when the metric is cosine (zero vectors stay zero)."""
    x = as_matrix(vectors, dim, what)
    return normalize(x) if metric == "cosine" else x
