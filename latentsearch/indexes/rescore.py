"""Rescoring: re-rank an index's candidates exactly by their stored float vectors.

A quantised index (``SQ8``, ``PQ``, ``binary``) holds codes, not vectors, so its scores are
approximate and its order among close neighbours is partly wrong. With ``?rescore=R`` the index
returns ``R x k`` candidates; their float vectors are read from the store (one query by id: they
are on disk already, so memory holds them once, as codes) and the exact scores, with the
collection's metric, choose the ``k`` results. The scores returned are then exact.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# (found_ids, vectors) for the ids that exist, as the store's ``vectors(ids)`` returns them
VectorSource = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

GATHER_FLOATS = 1 << 23  # floats gathered per block of queries (32 MiB)


def rescore(
    xq: np.ndarray, I: np.ndarray, k: int, source: VectorSource, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(D, I)`` of shape ``(nq, k)``: the ``k`` best of each row of candidate ids ``I``
    (``-1`` padded) by exact score against the query (inner product for ``ip`` and ``cosine``,
    whose vectors are normalised already; squared distance for ``l2``), best first, ``-1``
    padded. Candidates whose vectors ``source`` does not return (deleted since) are dropped."""
    nq = len(xq)
    l2 = metric == "l2"
    worst = np.float32(np.inf if l2 else -np.inf)
    D_out = np.full((nq, k), worst, dtype=np.float32)
    I_out = np.full((nq, k), -1, dtype=np.int64)
    wanted = np.unique(I[I >= 0])
    if not nq or not len(wanted):
        return D_out, I_out
    found, vectors = source(wanted)
    found = np.asarray(found, dtype=np.int64)
    order = np.argsort(found, kind="stable")
    found, vectors = found[order], np.ascontiguousarray(np.asarray(vectors)[order], dtype=np.float32)
    if not len(found):
        return D_out, I_out
    pos = np.minimum(np.searchsorted(found, I), len(found) - 1)
    present = (I >= 0) & (found[pos] == I)
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    depth, dim = I.shape[1], vectors.shape[1]
    step = max(1, GATHER_FLOATS // max(1, depth * dim))
    for start in range(0, nq, step):
        rows = slice(start, start + step)
        cand = vectors[pos[rows]]  # (b, depth, dim)
        q = xq[rows, None, :]
        if l2:
            scores = ((cand - q) ** 2).sum(axis=2)
        else:
            scores = np.einsum("bcd,bd->bc", cand, xq[rows])
        scores = np.where(present[rows], scores, worst).astype(np.float32)
        best = np.argsort(scores if l2 else -scores, axis=1, kind="stable")[:, :k]
        take = min(k, depth)
        D_out[rows, :take] = np.take_along_axis(scores, best, 1)
        I_out[rows, :take] = np.where(
            np.take_along_axis(present[rows], best, 1), np.take_along_axis(I[rows], best, 1), -1
        )
    I_out[~np.isfinite(D_out)] = -1
    return D_out, I_out
