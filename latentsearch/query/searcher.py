"""Searcher: dense, lexical and hybrid search with filters and document grouping, and the
nearest-neighbour clusters of a query. It reads and never writes.

Any number of threads may search at once. A search encodes its queries first (outside every
lock), then holds the index's read lock while it searches and turns ids into hits, so no write
lands between the two: every hit's item exists, and an item deleted before the search began
never comes back. What a search found about its filter is returned with its hits
(:meth:`Searcher.search_batch_with_stats`), never kept on the object.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..encoders.lazy import LazyEncoder
from ..errors import InvalidInputError
from ..indexes.faiss_index import FaissIndex
from ..indexes.overrides import search_overrides
from ..indexes.sync import IndexSync
from ..stores.diagnose import explain_no_match
from ..stores.filters import check_where
from ..stores.sql import SqlStore
from ..types import Cluster, Hit
from .clusters import group_hits
from .filtered import FilteredSearcher, FilterStats
from .hybrid import HYBRID_DEPTH, MODES, rrf
from .items import ItemCache
from .search import QueryVectors, best_per_document, hits_from_ranked, show_int, to_hits

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


MAX_K = 2**63 - 1  # FAISS counts results in int64; a search is clamped to the items there are
MAX_WHERE_NESTING = 64  # dicts and lists inside one another (24 logical levels take at most 53)
MAX_WHERE_LOGIC = 24  # $and/$or/$not inside one another: SQLite's parser overflows from 27
LOGIC_KEYS = ("$and", "$or", "$not")
MAX_WHERE_NODES = 1_000_000  # conditions and values in one filter (a shared sub-filter counts each time)


def check_k(k: Any, name: str = "k") -> int:
    """``k`` as an int, or an error saying what a count of results must be. Any positive
    64-bit integer is a valid ``k``: a search returns at most the items there are."""
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k <= 0:
        shown = show_int(k) if isinstance(k, numbers.Integral) else repr(k)[:80]
        raise InvalidInputError(f"{name} must be a positive integer, got {shown}")
    if k > MAX_K:
        raise InvalidInputError(
            f"{name} is {show_int(k)}, beyond 64-bit integers; give at most {MAX_K} "
            "(a search returns at most the items in the collection anyway)"
        )
    return int(k)


def check_where_shape(where: Any) -> None:
    """Refuse a ``where`` nested too deeply or too large to compile, before anything walks it
    recursively: Python's recursion limit, SQLite's parser stack and a filter that shares one
    sub-filter many times over would otherwise fail with a RecursionError, a database error
    or a hang. Walks the filter without recursion, depth first, stopping at the first excess."""
    stack: list[tuple[Any, int, int]] = [(where, 1, 0)]  # (node, nesting, logical nesting)
    seen = 0
    while stack:
        node, depth, logic = stack.pop()
        seen += 1
        if depth > MAX_WHERE_NESTING:
            raise InvalidInputError(
                f"the where filter nests objects and lists more than {MAX_WHERE_NESTING} levels deep; "
                "flatten it (a list under one $and or $or takes any number of conditions)"
            )
        if logic > MAX_WHERE_LOGIC:
            raise InvalidInputError(
                f"the where filter nests $and, $or and $not more than {MAX_WHERE_LOGIC} levels deep; "
                "flatten it: one $and or $or takes a list of any number of conditions, and two $not cancel out"
            )
        if seen > MAX_WHERE_NODES:
            raise InvalidInputError(
                f"the where filter has more than {MAX_WHERE_NODES} conditions and values; "
                "split the search or filter on a field that groups the items"
            )
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1, logic + (k in LOGIC_KEYS)) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1, logic) for v in node)


class Searcher:
    """Searches one collection: its encoder, index and store, explicitly given."""

    def __init__(self, path: Path, dim: int, metric: str, store: SqlStore, encoder: LazyEncoder, sync: IndexSync):
        self.path, self.dim, self.metric = path, dim, metric
        self.store, self.encoder, self.sync = store, encoder, sync
        self.items = ItemCache(store)
        sync.on_change(self.items.forget)

    def query_vectors(self, queries: Sequence[Any]) -> QueryVectors:
        """The queries as vectors of this collection (see :class:`QueryVectors`)."""
        return QueryVectors.build(queries, self.encoder, self.store, self.dim, self.metric)

    def vectors(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(found_ids, vectors)`` of stored items, in the order of ``ids``."""
        return self.store.vectors(ids)

    def search(
        self,
        query: Any,
        k: int = 10,
        group_by: str | None = None,
        where: Mapping[str, Any] | None = None,
        mode: str = "dense",
        hybrid_weights: Sequence[float] = (1.0, 1.0),
        params: Mapping[str, int] | str | None = None,
    ) -> list[Hit]:
        """The ``k`` nearest items to a text, a PIL image, an image ``Path``, a vector or an item id.

        ``group_by="document"`` returns each document once, with its best passage.
        ``where`` keeps only the items a filter matches (see :mod:`latentsearch.stores.filters`),
        e.g. ``{"topic": "space", "year": {"$gte": 2020}}``; ``k`` hits come back whenever ``k``
        items match (:meth:`search_batch_with_stats` says how many matched).

        ``mode="lexical"`` ranks by the words of a text query with the store's full-text index
        (BM25 on SQLite, idf-weighted ``ts_rank`` on PostgreSQL; any word may match); ``mode="hybrid"``
        fuses the dense and lexical rankings by reciprocal rank fusion, each side weighted by
        ``hybrid_weights`` (dense, lexical), and the hits' scores are the fused scores.
        See :mod:`latentsearch.query.hybrid`.

        ``params`` overrides the index's search options for this query: ``{"efSearch": 512}``
        (HNSW), ``{"nprobe": 64}`` (IVF), ``{"rescore": 4}``, or the same as ``"efSearch=512"``;
        options the index type has no use for are ignored.
        """
        if isinstance(query, np.ndarray) and query.ndim > 1 and query.shape[0] != 1:
            raise InvalidInputError(f"search() takes one query; for {query.shape[0]} vectors use search_batch()")
        return self.search_batch_with_stats([query], k, group_by, where, mode, hybrid_weights, params)[0][0]

    def search_batch(
        self,
        queries: Sequence[Any],
        k: int = 10,
        group_by: str | None = None,
        where: Mapping[str, Any] | None = None,
        mode: str = "dense",
        hybrid_weights: Sequence[float] = (1.0, 1.0),
        params: Mapping[str, int] | str | None = None,
    ) -> list[list[Hit]]:
        """One list of hits per query; queries are encoded together and searched in one call.
        ``where``, ``mode``, ``hybrid_weights`` and ``params`` apply to every query alike (see
        :meth:`search`)."""
        return self.search_batch_with_stats(queries, k, group_by, where, mode, hybrid_weights, params)[0]

    def search_batch_with_stats(
        self,
        queries: Sequence[Any],
        k: int = 10,
        group_by: str | None = None,
        where: Mapping[str, Any] | None = None,
        mode: str = "dense",
        hybrid_weights: Sequence[float] = (1.0, 1.0),
        params: Mapping[str, int] | str | None = None,
    ) -> tuple[list[list[Hit]], FilterStats | None]:
        """:meth:`search_batch`, and what its filter did (None without ``where``): how many
        items matched, how they were searched, and why nothing matched when nothing did."""
        k = check_k(k)
        if isinstance(queries, (str, bytes)):
            raise InvalidInputError("search_batch() takes a list of queries, not a single one")
        if group_by not in (None, "document"):
            raise InvalidInputError(f"group_by must be 'document' or None, not {group_by!r}")
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        overrides = search_overrides(params)
        if where is not None:
            check_where_shape(where)  # check_where recurses: bound its depth first
            check_where(where, self.store.engine.dialect.name)  # before encoding: fail fast
        weights = self._check_lexical(queries, mode, hybrid_weights) if mode != "dense" else (1.0, 1.0)
        if mode == "lexical":
            with self.sync.reading():
                hits = self._lexical_hits(queries, k, group_by, where)
            if where is None:
                return hits, None
            matches = self.store.count_where(where)
            why = None if matches else explain_no_match(self.store, where)
            return hits, FilterStats(matches, "lexical", explanation=why)
        qv = self.query_vectors(queries)
        with self.sync.reading() as index:
            options = {**index.search_options, **overrides}
            searcher = FilteredSearcher(index, self.store, where, self.metric, options) if where else None
            search, total = (
                (partial(index.search, options=options), index.ntotal)
                if searcher is None
                else (searcher.search, searcher.matches)
            )
            if mode == "dense":
                hits = self._hits(search, total, qv, k, group_by)
            else:
                hits = self._hybrid_hits(queries, search, total, qv, k, group_by, where, weights)
        return hits, (searcher.stats if searcher else None)

    def _hybrid_hits(
        self,
        queries: Sequence[str],
        search: SearchFn,
        total: int,
        qv: QueryVectors,
        k: int,
        group_by: str | None,
        where: Mapping[str, Any] | None,
        weights: tuple[float, float],
    ) -> list[list[Hit]]:
        depth = min(max(HYBRID_DEPTH, 4 * k if group_by else k), MAX_K)
        dense = self._hits(search, total, qv, depth, None)
        lexical = [self.store.lexical_search(q, depth, where) for q in queries]
        fused = [
            rrf([[h.id for h in d], [i for i, _ in lx]], weights)[: depth if group_by else k]
            for d, lx in zip(dense, lexical)
        ]
        hits = hits_from_ranked(fused, self.items)
        return [best_per_document(row, k) for row in hits] if group_by else hits

    def _check_lexical(self, queries: Sequence[Any], mode: str, weights: Sequence[float]) -> tuple[float, float]:
        """The hybrid weights, after checking that lexical search can run on these queries."""
        for q in queries:
            if not isinstance(q, str):
                raise InvalidInputError(
                    f"{mode} search needs text queries, not a {type(q).__name__}; use mode='dense'"
                )
        try:
            w = tuple(float(x) for x in weights)
        except (TypeError, ValueError):
            w = ()
        if len(w) != 2 or not all(np.isfinite(x) and x >= 0 for x in w) or not any(w):
            raise InvalidInputError(
                f"hybrid_weights must be two non-negative numbers (dense, lexical), not both 0; got {weights!r}"
            )
        if not self.store.has_fulltext():
            raise InvalidInputError(
                f"the collection at {self.path} has no full-text index (it was made by an older version "
                f"of latentsearch); create it again to use {mode} search"
            )
        return w  # type: ignore[return-value]

    def _lexical_hits(
        self, queries: Sequence[str], k: int, group_by: str | None, where: Mapping[str, Any] | None
    ) -> list[list[Hit]]:
        out = []
        for q in queries:
            depth = min(4 * k, MAX_K) if group_by else k  # SQL LIMITs are 64-bit
            while True:
                ranked = self.store.lexical_search(q, depth, where)
                row = hits_from_ranked([ranked], self.items)[0]
                if group_by is None:
                    out.append(row[:k])
                    break
                grouped = best_per_document(row, k)
                if len(grouped) >= k or len(ranked) < depth:
                    out.append(grouped)
                    break
                depth = min(depth * 4, MAX_K)
        return out

    def _hits(
        self, search: SearchFn, total: int, qv: QueryVectors, k: int, group_by: str | None
    ) -> list[list[Hit]]:
        """Hits from ``search(xq, depth) -> (D, I)`` over ``total`` candidates. FAISS allocates
        ``nq x depth`` results up front, so no search asks for more than ``total``: no more exist."""
        if group_by is None:
            D, I = search(qv.vectors, min(k + qv.extra, max(total, 1)))
            return to_hits(D, I, qv.exclude, k, self.items)
        # Documents: search deeper until k distinct documents come back or nothing is left.
        depth = 4 * k
        while True:
            D, I = search(qv.vectors, min(depth, max(total, 1)) + qv.extra)
            rows = to_hits(D, I, qv.exclude, depth, self.items)
            grouped = [best_per_document(row, k) for row in rows]
            if all(len(g) >= k for g in grouped) or depth >= total:
                return grouped
            depth *= 4

    def clusters(
        self,
        query: Any,
        k: int = 100,
        n_clusters: int | None = None,
        where: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> list[Cluster]:
        """The ``k`` nearest neighbours of ``query`` grouped into clusters (how many is chosen
        from the data by silhouette when ``n_clusters`` is None), closest clusters first; each
        has its members by score, a representative, its size, its mean score and a label."""
        hits = self.search(query, k=k, where=where)
        found, vectors = self.store.vectors([h.id for h in hits])
        by_id = dict(zip(found.tolist(), vectors))
        hits = [h for h in hits if h.id in by_id]
        matrix = np.stack([by_id[h.id] for h in hits]) if hits else np.zeros((0, self.dim))
        return group_hits(hits, matrix, n_clusters=n_clusters, seed=seed)

    def index(self) -> FaissIndex:
        """The index, loaded (from its snapshot, or rebuilt from the store) and caught up with
        the store: an explicit call, which may take a while on a large collection."""
        return self.sync.load()
