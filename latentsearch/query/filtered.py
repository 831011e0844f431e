"""Filtered search: the nearest items among those a ``where`` filter matches, at any selectivity.

The store counts the matches first (one query). Few matches are searched exactly from their
stored vectors, which is exact and cheaper than any index at that size. Many matches go through
the index with a FAISS ID selector of the matching ids; approximate indexes search deeper the
rarer the matches are (HNSW ``efSearch``, IVF ``nprobe``), a row that comes back short is
searched again deeper, and what is still short is finished exactly. So a filtered query returns
``k`` results whenever ``k`` items match.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..indexes.selection import DEFAULT_EF_SEARCH
from ..vectors import exact_search
from ..stores.diagnose import explain_no_match

if TYPE_CHECKING:
    from ..indexes.faiss_index import FaissIndex
    from ..stores.sql import SqlStore

EXACT_LIMIT = 4096  # at most this many matches: exact search over their stored vectors
EF_LIMIT = 4096  # HNSW needing a deeper candidate list than this for the filter: exact instead
DEEPER_ROUNDS = 3  # index searches per query before the exact fallback, each 4x deeper
BITMAP_SPAN = 64  # an IDSelectorBitmap when the largest id is below 64x the match count


@dataclass(frozen=True)
class FilterStats:
    """What a filtered search did.

    ``matches``: items the filter matched (a query shows fewer hits only when fewer match);
    ``strategy``: ``none`` (nothing matched), ``exact`` (stored vectors of the matches) or
    ``index`` (the index with an ID selector); ``rounds``: index searches, deeper retries
    included; ``exact_rows``: queries the index left short, finished by exact search;
    ``explanation``: when nothing matched, why (see :func:`~latentsearch.stores.diagnose.explain_no_match`).
    """

    matches: int
    strategy: str
    rounds: int = 0
    exact_rows: int = 0
    explanation: str | None = None  # why nothing matched (a field no item has, a type mismatch)


class FilteredSearcher:
    """Searches ``index`` restricted to the items of ``store`` that match ``where``.

    The matches are counted when it is made; their ids are read once, on first need.
    """

    def __init__(
        self,
        index: FaissIndex,
        store: SqlStore,
        where: Mapping[str, Any],
        metric: str,
        options: Mapping[str, int] | None = None,
    ):
        self.index, self.store, self.where, self.metric = index, store, where, metric
        self.options = dict(index.search_options if options is None else options)  # before going deeper
        self.matches = store.count_where(where)
        self.explanation = None if self.matches else explain_no_match(store, where)
        self.stats = FilterStats(self.matches, "none", explanation=self.explanation)
        self._selector: Any = None

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(D, I)`` of shape ``(nq, k)`` among the matches, closest first, ``-1`` padded."""
        nq = len(xq)
        if not self.matches:
            self.stats = FilterStats(0, "none", explanation=self.explanation)
            return _empty(nq, k, self.metric)
        if self.matches <= EXACT_LIMIT or not self._index_pays(k):
            self.stats = FilterStats(self.matches, "exact")
            return self._exact(xq, k)
        return self._indexed(xq, k)

    @property
    def selectivity(self) -> float:
        return self.matches / max(self.index.ntotal, self.matches)

    def _index_pays(self, k: int) -> bool:
        """False where HNSW would need a candidate list over EF_LIMIT long to find k matches:
        it visits the graph's non-matching nodes too, so exact search costs less there."""
        if not _is_hnsw(self.index):
            return True  # IVF probes at most all lists, each with the selector: a flat scan at worst
        return deeper(self.index, self.selectivity, 1, k, self.options)["efSearch"] <= EF_LIMIT

    def _exact(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        batches = self.store.iter_where(self.where, vectors=True)
        return exact_search(xq, ((ids, v) for ids, v in batches if v is not None), k, self.metric)

    def _indexed(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._selector is None:
            ids = np.concatenate([ids for ids, _ in self.store.iter_where(self.where)])
            self._selector = id_selector(ids)
        want = min(k, self.matches)
        D, I = _empty(len(xq), k, self.metric)
        todo = np.arange(len(xq))
        rounds = 0
        for boost in (4**r for r in range(DEEPER_ROUNDS)):
            rounds += 1
            options = deeper(self.index, self.selectivity, boost, k, self.options)
            d, i = self.index.search(xq[todo], k, self._selector, options)
            D[todo], I[todo] = d, i
            todo = todo[(i >= 0).sum(axis=1) < want]
            if not len(todo):
                break
        if len(todo):
            D[todo], I[todo] = self._exact(xq[todo], k)
        self.stats = FilterStats(self.matches, "index", rounds, len(todo))
        return D, I


def deeper(
    index: FaissIndex, selectivity: float, boost: int, k: int, base: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Search options for ``index`` deep enough to find ``k`` results among a ``selectivity``
    share of its vectors, ``boost`` times deeper still (``base``: the options to deepen, the
    index's own by default).

    A filter independent of the vectors puts the k-th nearest match about as far away as the
    (k/selectivity)-th nearest vector: HNSW's candidate list and IVF's probed lists grow by
    1/selectivity.
    """
    import faiss

    options = dict(index.search_options if base is None else base)
    scale = boost / max(selectivity, 1e-9)
    ef = max(options.get("efSearch", DEFAULT_EF_SEARCH), k)
    options["efSearch"] = int(min(math.ceil(ef * scale), max(index.ntotal, ef)))
    try:
        nlist = faiss.extract_index_ivf(index.index).nlist if index.trained and not index.binary else 0
    except RuntimeError:
        nlist = 0
    if nlist:
        options["nprobe"] = int(min(math.ceil(index.nprobe(nlist, options) * scale), nlist))
    return options


def _is_hnsw(index: FaissIndex) -> bool:
    import faiss

    if not index.trained:
        return False
    if index.binary:
        return bool(index.hnsw_m)  # type: ignore[attr-defined]
    inner = index.index.index if isinstance(index.index, faiss.IndexIDMap) else index.index
    return isinstance(faiss.downcast_index(inner), faiss.IndexHNSW)


def id_selector(ids: np.ndarray) -> Any:
    """A FAISS selector of ``ids``: a bitmap when they are dense, else a hashed batch."""
    import faiss

    ids = np.ascontiguousarray(ids, dtype=np.int64)
    span = int(ids.max()) + 1 if len(ids) else 0
    if len(ids) and span <= BITMAP_SPAN * len(ids):
        mask = np.zeros(span, dtype=bool)
        mask[ids] = True
        return faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))  # keeps the array alive
    return faiss.IDSelectorBatch(ids)


def _empty(nq: int, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    worst = np.inf if metric == "l2" else -np.inf
    return np.full((nq, k), worst, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)
