"""The query methods of :class:`~latentsearch.collection.Collection`: dense, lexical and hybrid
search with filters and document grouping, nearest-neighbour clusters, latent-space queries and
the corpus clustering. The work is in the modules of this package; these methods wire it to the
collection's encoder, index and store.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..stores.filters import check_where
from ..types import Cluster, Hit, Item
from .clusters import group_hits
from .filtered import FilteredSearcher, FilterStats
from .hybrid import HYBRID_DEPTH, MODES, rrf
from .search import QueryVectors, best_per_document, hits_from_ranked, to_hits

if TYPE_CHECKING:
    from pathlib import Path

    from ..config import CollectionConfig
    from ..encoders.base import Encoder
    from ..indexes.faiss_index import FaissIndex
    from ..stores.sql import SqlStore

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class QueryMethods:
    """Mixed into :class:`~latentsearch.collection.Collection`."""

    # provided by Collection
    path: Path
    store: SqlStore
    config: CollectionConfig
    index: FaissIndex
    encoder: Encoder | None
    last_filter_stats: FilterStats | None
    _writer: Callable[[], None]

    def search(
        self,
        query: Any,
        k: int = 10,
        group_by: str | None = None,
        where: Mapping[str, Any] | None = None,
        mode: str = "dense",
        hybrid_weights: Sequence[float] = (1.0, 1.0),
    ) -> list[Hit]:
        """The ``k`` nearest items to a text, a PIL image, an image ``Path``, a vector or an item id.

        ``group_by="document"`` returns each document once, with its best passage.
        ``where`` keeps only the items a filter matches (see :mod:`latentsearch.stores.filters`),
        e.g. ``{"topic": "space", "year": {"$gte": 2020}}``; ``k`` hits come back whenever ``k``
        items match, and :attr:`last_filter_stats` says how many matched.

        ``mode="lexical"`` ranks by the words of a text query with the store's full-text index
        (BM25 on SQLite, idf-weighted ``ts_rank`` on PostgreSQL; any word may match); ``mode="hybrid"``
        fuses the dense and lexical rankings by reciprocal rank fusion, each side weighted by
        ``hybrid_weights`` (dense, lexical), and the hits' scores are the fused scores.
        See :mod:`latentsearch.query.hybrid`.
        """
        if isinstance(query, np.ndarray) and query.ndim > 1 and query.shape[0] != 1:
            raise InvalidInputError(f"search() takes one query; for {query.shape[0]} vectors use search_batch()")
        return self.search_batch([query], k, group_by, where, mode, hybrid_weights)[0]

    def search_batch(
        self,
        queries: Sequence[Any],
        k: int = 10,
        group_by: str | None = None,
        where: Mapping[str, Any] | None = None,
        mode: str = "dense",
        hybrid_weights: Sequence[float] = (1.0, 1.0),
    ) -> list[list[Hit]]:
        """One list of hits per query; queries are encoded together and searched in one call.
        ``where``, ``mode`` and ``hybrid_weights`` apply to every query alike (see :meth:`search`)."""
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k <= 0:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        if group_by not in (None, "document"):
            raise InvalidInputError(f"group_by must be 'document' or None, not {group_by!r}")
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if where is not None:
            check_where(where, self.store.engine.dialect.name)  # before encoding: fail fast
            self._prepare_cluster_filter(where)
        k = int(k)
        if mode != "dense":
            weights = self._check_lexical(queries, mode, hybrid_weights)
        if mode == "lexical":
            hits = self._lexical_hits(queries, k, group_by, where)
            self.last_filter_stats = FilterStats(self.store.count_where(where), "lexical") if where else None
            return hits
        index = self.index
        qv = QueryVectors.build(queries, self)
        searcher = FilteredSearcher(index, self.store, where, self.config.metric) if where else None
        search, total = (index.search, index.ntotal) if searcher is None else (searcher.search, searcher.matches)
        if mode == "dense":
            hits = self._hits(search, total, qv, k, group_by)
        else:
            depth = max(HYBRID_DEPTH, 4 * k if group_by else k)
            dense = self._hits(search, total, qv, depth, None)
            lexical = [self.store.lexical_search(q, depth, where) for q in queries]
            fused = [
                rrf([[h.id for h in d], [i for i, _ in lx]], weights)[: depth if group_by else k]
                for d, lx in zip(dense, lexical)
            ]
            hits = hits_from_ranked(fused, self.store)
            if group_by:
                hits = [best_per_document(row, k) for row in hits]
        self.last_filter_stats = searcher.stats if searcher else None
        return hits

    def _check_lexical(self, queries: Sequence[Any], mode: str, weights: Sequence[float]) -> tuple[float, float]:
        """The hybrid weights, after checking that lexical search can run on these queries."""
        if isinstance(queries, (str, bytes)):
            raise InvalidInputError("search_batch() takes a list of queries, not a single one")
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
            depth = 4 * k if group_by else k
            while True:
                ranked = self.store.lexical_search(q, depth, where)
                row = hits_from_ranked([ranked], self.store)[0]
                if group_by is None:
                    out.append(row[:k])
                    break
                grouped = best_per_document(row, k)
                if len(grouped) >= k or len(ranked) < depth:
                    out.append(grouped)
                    break
                depth *= 4
        return out

    def _hits(
        self, search: SearchFn, total: int, qv: QueryVectors, k: int, group_by: str | None
    ) -> list[list[Hit]]:
        """Hits from ``search(xq, depth) -> (D, I)`` over ``total`` candidates."""
        if group_by is None:
            D, I = search(qv.vectors, k + qv.extra)
            return to_hits(D, I, qv.exclude, k, self.store)
        # Documents: search deeper until k distinct documents come back or nothing is left.
        depth = 4 * k
        while True:
            D, I = search(qv.vectors, min(depth, max(total, 1)) + qv.extra)
            rows = to_hits(D, I, qv.exclude, depth, self.store)
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
        matrix = np.stack([by_id[h.id] for h in hits]) if hits else np.zeros((0, self.config.dim))
        return group_hits(hits, matrix, n_clusters=n_clusters, seed=seed)

    # -- latent-space queries (the work is in query/latent.py) ----------------------------------

    def search_combination(
        self, terms: Any, k: int = 10, where: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """The ``k`` items nearest a weighted sum of queries, e.g.
        ``[("beach", 1.0), (42, 1.0), ("people", -1.0)]`` or the string
        ``'"beach" + #42 - "people"'``; each query is anything :meth:`search` takes (for the
        cosine metric each is normalised before summing). Items given by id are left out."""
        from .latent import combination_search

        return combination_search(self, terms, k, where)

    def interpolate(self, a: Any, b: Any, steps: int = 5, k: int = 1) -> list[tuple[float, list[Hit]]]:
        """``(t, hits)`` for ``steps`` points t from ``a`` (0) to ``b`` (1): the ``k`` items
        nearest each point, spherically interpolated for the cosine metric, linearly otherwise."""
        from .latent import interpolation_search

        return interpolation_search(self, a, b, steps, k)

    def search_mmr(
        self,
        query: Any,
        k: int = 10,
        fetch_k: int = 50,
        lambda_: float = 0.5,
        where: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """``k`` of the ``fetch_k`` nearest items to ``query`` chosen by maximal marginal
        relevance (cosine similarity of the stored vectors): ``lambda_=1`` keeps the plain
        search order, lower values trade relevance for variety."""
        from .latent import mmr_search

        return mmr_search(self, query, k, fetch_k, lambda_, where)

    # -- corpus clusters (the work is in query/corpus_clusters.py) -------------------------------

    def cluster(self, n: int, seed: int = 0, sample: int | None = None) -> list[Any]:
        """Cluster every stored vector into ``n`` clusters with FAISS k-means (spherical for
        cosine; trained on ``sample`` vectors, at most 100,000 unless told, then every item
        assigned), store centroids, labels and assignments (replacing any previous
        clustering) and return their summary, largest first: each a
        :class:`~latentsearch.query.corpus_clusters.CorpusCluster` with id, label, size and the
        items nearest its centroid. Later adds get a cluster lazily (see :meth:`assign_new`)."""
        from .corpus_clusters import cluster_corpus

        self._writer()  # one writer: no add lands between reading the vectors and the change seq
        return cluster_corpus(self, n, seed, sample)

    def assign_new(self) -> int:
        """Give items added or updated since the clustering their nearest cluster (and forget
        deleted ones); returns how many. Cluster reads do this first, so adds stay as fast as
        without a clustering; call it to do the work at a time of your choosing."""
        from .corpus_clusters import assign_new

        return assign_new(self)

    def corpus_clusters(self) -> list[Any]:
        """The stored clustering's summary by id ([] when the collection was never clustered)."""
        from .corpus_clusters import stored_clusters

        return stored_clusters(self)

    def nearest_clusters(self, query: Any, k: int = 3) -> list[Any]:
        """The ``k`` stored clusters whose centroids are nearest ``query`` (anything
        :meth:`search` takes), nearest first, each with its ``score``."""
        from .corpus_clusters import nearest_clusters

        return nearest_clusters(self, query, k)

    def cluster_members(self, cluster_id: int, limit: int | None = 100) -> list[Item]:
        """Up to ``limit`` items of a stored cluster, in id order."""
        from .corpus_clusters import members

        return members(self, cluster_id, limit)

    def _prepare_cluster_filter(self, where: Mapping[str, Any] | None) -> None:
        """A ``cluster`` filter reads the assignments: make sure they exist and are current."""
        from .corpus_clusters import assign_new, mentions_cluster

        if where and mentions_cluster(where):
            self.store.ensure_cluster_tables()
            assign_new(self)
