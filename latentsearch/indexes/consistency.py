"""Does an index hold the store's vectors? Checked by content, not only by ids.

Ids alone cannot tell an index built from another collection's store: ids are assigned from 1
everywhere. So :class:`~latentsearch.indexes.sync.IndexSync` compares a few vectors read back
from a snapshot with the store's before using it, and ``verify()`` compares many. Index types
that keep vectors exactly (Flat, HNSW over flat storage, and the flat stand-in of an IVF or PQ
index until it trains) can give them back; quantised and IVF storage cannot, and are not
compared (None).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .faiss_index import DEAD, FaissIndex

if TYPE_CHECKING:
    from ..stores.sql import SqlStore

SAMPLE_ON_LOAD = 8  # vectors of a snapshot compared with the store's before it is used
VERIFY_SAMPLE = 10_000  # vectors verify() compares at most (all of them in a smaller collection)


def exact_vectors(index: FaissIndex, ids: np.ndarray) -> np.ndarray | None:
    """The vectors ``index`` holds for ``ids`` (ids it holds), exactly as added; None when this
    index type cannot give them back exactly."""
    import faiss

    if not isinstance(index.index, faiss.IndexIDMap2):
        return None  # IVF keeps its own ids, and no direct map to read vectors back by id
    inner = faiss.downcast_index(index.index.index)
    if isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
    if type(inner) not in (faiss.IndexFlat, faiss.IndexFlatIP, faiss.IndexFlatL2):
        return None  # quantised: the vectors come back only approximately
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if not len(ids):
        return np.zeros((0, index.dim), dtype=np.float32)
    return np.asarray(index.index.reconstruct_batch(ids), dtype=np.float32)


def differing(index: FaissIndex, store: SqlStore, ids: np.ndarray) -> list[int] | None:
    """Of ``ids`` (ids the index holds), those whose vector in the index is not the store's,
    or that the store does not have; None when the index cannot give its vectors back."""
    ids = np.asarray(ids, dtype=np.int64)
    held = exact_vectors(index, ids)
    if held is None:
        return None
    found, stored = store.vectors(ids)
    row = {int(i): n for n, i in enumerate(found)}
    # The index may hold a float16 store's vectors before their rounding (a write hands the index
    # the float32 vectors it stores): equal to within float16's precision.
    rtol = 1e-5 if store.dtype == np.float32 else 2e-3
    bad = []
    for i, vector in zip(ids.tolist(), held):
        n = row.get(i)
        if n is None or not np.allclose(vector, stored[n], rtol=rtol, atol=1e-6):
            bad.append(i)
    return bad


def not_changed_since(store: SqlStore, watermark: int, ids: list[int]) -> list[int]:
    """``ids`` less those that a change after ``watermark`` touched (a write by another
    process between two reads is no disagreement)."""
    if not ids:
        return ids
    touched, _ = store.changed_since(watermark)
    return sorted(set(ids) - set(touched.tolist()))


def snapshot_differs(index: FaissIndex, store: SqlStore, watermark: int, n: int = SAMPLE_ON_LOAD) -> list[int]:
    """Up to ``n`` ids, sampled from a snapshot's ``index`` (complete up to change
    ``watermark``) and untouched by later changes, whose vectors are not the store's: empty
    when the sample agrees or the index type cannot give its vectors back."""
    import faiss

    if exact_vectors(index, np.zeros(0, dtype=np.int64)) is None:
        return []
    id_map = index.index.id_map  # an IndexIDMap2's: read in place, not copied (it may be large)
    if not id_map.size():
        return []
    ids = faiss.rev_swig_ptr(id_map.data(), id_map.size())
    rng = np.random.default_rng()
    sample = np.unique(ids[rng.integers(0, len(ids), size=4 * n)])
    sample = sample[sample != DEAD]
    touched, _ = store.changed_since(watermark)
    sample = sample[~np.isin(sample, touched)][:n]
    return not_changed_since(store, watermark, differing(index, store, sample) or [])


def vector_sample(ids: np.ndarray, limit: int) -> np.ndarray:
    """All of ``ids`` when there are at most ``limit``, else ``limit`` of them at random, sorted."""
    if limit <= 0:
        return ids[:0]
    if len(ids) <= limit:
        return ids
    return np.sort(np.random.default_rng().choice(ids, size=limit, replace=False))
