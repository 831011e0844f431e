"""Corpus clusters: FAISS k-means over every stored vector, kept in the store.

:func:`cluster_corpus` trains k-means (on a sample when the collection is large), assigns every
item in batches, labels each cluster and stores centroids and assignments in one transaction,
replacing any previous clustering.

New items get their cluster from the write that adds them: at the end of every write operation
(still holding the writer lock) :func:`assign_new` looks up the store's change log after the seq
the assignments were made at, and in one pass assigns the added and updated items to their
nearest centroid and drops the rows of deleted ones (one cheap query when the collection was
never clustered). Reads never write: they see the assignments as the last write left them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..types import Item
from ..vectors import normalize
from .clusters import common_metadata, distinctive_terms

if TYPE_CHECKING:
    from ..stores.sql import SqlStore
    from .searcher import Searcher

TRAIN_SAMPLE = 100_000  # k-means trains on at most this many vectors unless told otherwise
ASSIGN_BATCH = 50_000
LABEL_SAMPLE = 100  # member texts per cluster for its label
REPRESENTATIVES = 3


@dataclass
class CorpusCluster:
    """One cluster of the corpus: its id, label, size, the items nearest its centroid, and
    (from :meth:`Collection.nearest_clusters`) the query's similarity to its centroid."""

    id: int
    label: str
    size: int
    representatives: list[Item] = field(default_factory=list)
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "label": self.label,
            "size": self.size,
            "representatives": [
                {"id": r.id, "key": r.key, "source": r.source, "text": r.text, "metadata": r.metadata}
                for r in self.representatives
            ],
        }
        if self.score is not None:
            out["score"] = self.score
        return out


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    return normalize(x) if metric == "cosine" else np.ascontiguousarray(x, dtype=np.float32)


def centroid_index(centroids: np.ndarray, metric: str) -> Any:
    """A flat FAISS index over the centroids: inner product for cosine (unit centroids), else L2."""
    import faiss

    c = np.ascontiguousarray(centroids, dtype=np.float32)
    index = faiss.IndexFlatIP(c.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(c.shape[1])
    index.add(c)
    return index


def train_kmeans(x: np.ndarray, n: int, metric: str, seed: int = 0) -> np.ndarray:
    """``(n, d)`` centroids of ``x`` by FAISS k-means (spherical for cosine; on a GPU when FAISS has one)."""
    import faiss

    from ..devices import faiss_gpu_count

    x = _prepare(x, metric)
    km = faiss.Kmeans(
        x.shape[1], int(n), niter=20, seed=int(seed), spherical=metric == "cosine",
        gpu=faiss_gpu_count() > 0, verbose=False,
        max_points_per_centroid=max(256, -(-len(x) // int(n))),  # we sample ourselves
    )
    km.train(x)
    return np.asarray(km.centroids, dtype=np.float32).reshape(int(n), x.shape[1])


def _all_ids(store: SqlStore) -> np.ndarray:
    parts = [ids for ids, _ in store.iter_where(None)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def cluster_corpus(store: SqlStore, metric: str, n: int, seed: int = 0, sample: int | None = None) -> list[CorpusCluster]:
    """Cluster every stored vector into ``n`` clusters, store them, and return their summary
    (largest first; cluster ids are 0..n-1 in that order)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInputError(f"the number of clusters must be a positive integer, got {n!r}")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1):
        raise InvalidInputError(f"sample must be a positive integer, got {sample!r}")
    seq = store.max_seq()  # later changes are assigned by assign_new
    ids = _all_ids(store)
    if len(ids) < n:
        raise InvalidInputError(f"cannot make {n} clusters of {len(ids)} items; ask for at most {len(ids)}")
    cap = int(sample) if sample is not None else TRAIN_SAMPLE
    if len(ids) > cap:
        rng = np.random.default_rng(seed)
        train_ids = np.sort(rng.choice(ids, size=cap, replace=False))
        _, train = store.vectors(train_ids)
    else:
        train = np.concatenate([v for _, v in store.iter_vectors()])
    centroids = train_kmeans(train, n, metric, seed)
    del train
    index = centroid_index(centroids, metric)

    # Assign every item in batches; keep each one's distance to find representatives.
    all_ids, labels, dists = [], [], []
    for batch_ids, vectors in store.iter_vectors(ASSIGN_BATCH):
        D, I = index.search(_prepare(vectors, metric), 1)
        all_ids.append(batch_ids)
        labels.append(I[:, 0].astype(np.int64))
        dists.append(-D[:, 0] if metric == "cosine" else D[:, 0])  # lower is nearer
    item_ids = np.concatenate(all_ids)
    raw = np.concatenate(labels)
    dist = np.concatenate(dists)

    # Ids 0..n-1 by size, largest first (ties by centroid order): deterministic for a seed.
    sizes = np.bincount(raw, minlength=n)
    order = sorted(range(n), key=lambda j: (-sizes[j], j))
    renumber = np.empty(n, dtype=np.int64)
    renumber[order] = np.arange(n)
    cluster_ids = renumber[raw]
    centroids = centroids[order]

    rng = np.random.default_rng(seed)
    reps: list[list[int]] = []
    label_ids: list[np.ndarray] = []
    for j in range(n):
        members = np.flatnonzero(cluster_ids == j)
        near = members[np.argsort(dist[members], kind="stable")[:REPRESENTATIVES]]
        reps.append([int(item_ids[i]) for i in near])
        pick = members if len(members) <= LABEL_SAMPLE else rng.choice(members, LABEL_SAMPLE, replace=False)
        label_ids.append(item_ids[np.sort(pick)])
    items = store.get(np.concatenate(label_ids + [np.array(r, dtype=np.int64) for r in reps]).tolist())
    texts = [[items[int(i)].text or "" for i in ids_j if int(i) in items] for ids_j in label_ids]
    label_list = []
    for j in range(n):
        others = [t for k, ts in enumerate(texts) if k != j for t in ts]
        words = distinctive_terms(texts[j], others) if any(texts[j]) else []
        members = [items[int(i)] for i in label_ids[j] if int(i) in items]
        rep = items.get(reps[j][0]) if reps[j] else None
        fallback = [_snippet(rep)] if rep is not None else [f"cluster {j}"]
        label_list.append(", ".join(words or common_metadata(members) or fallback))  # type: ignore[arg-type]

    rows = [
        {"id": j, "label": label_list[j], "size": int(sizes[order[j]]), "centroid": centroids[j],
         "representatives": reps[j]}
        for j in range(n)
    ]
    store.replace_clusters(rows, item_ids, cluster_ids, seq)
    return [
        CorpusCluster(j, label_list[j], int(sizes[order[j]]), [items[i] for i in reps[j] if i in items])
        for j in range(n)
    ]


def _snippet(item: Item, width: int = 40) -> str:
    if item.text is None:
        return item.source or item.key or f"#{item.id}"
    flat = " ".join(item.text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def assign_new(store: SqlStore, metric: str) -> int:
    """Assign items added or updated since the stored clustering to their nearest centroid and
    drop the rows of deleted ones, in one transaction; returns how many were (re)assigned.
    Nothing happens (one cheap query) when there is no clustering or nothing changed. A write:
    call it holding the writer lock."""
    if not store.has_clusters():
        return 0
    seq = store.clusters_seq()
    changed, newest = store.changed_since(seq)
    if not len(changed):
        return 0
    centroids = np.stack([c["centroid"] for c in store.load_clusters()])
    index = centroid_index(centroids, metric)
    assigned: dict[int, int] = {}
    found_all: list[int] = []
    for start in range(0, len(changed), ASSIGN_BATCH):
        found, vectors = store.vectors(changed[start : start + ASSIGN_BATCH])
        if len(found):
            _, I = index.search(_prepare(vectors, metric), 1)
            assigned.update(zip(found.tolist(), I[:, 0].tolist()))
            found_all += found.tolist()
    gone = sorted(set(changed.tolist()) - set(found_all))
    store.update_assignments(assigned, gone, newest)
    return len(assigned)


def stored_clusters(store: SqlStore) -> list[CorpusCluster]:
    """The stored clustering's summary, by id; [] if none."""
    rows = store.load_clusters()
    items = store.get([i for r in rows for i in r["representatives"]])
    return [
        CorpusCluster(r["id"], r["label"], r["size"], [items[i] for i in r["representatives"] if i in items])
        for r in rows
    ]


def nearest_clusters(searcher: Searcher, query: Any, k: int = 3) -> list[CorpusCluster]:
    """The ``k`` clusters whose centroids are nearest ``query`` (anything search takes), nearest
    first, each with ``score``: cosine/ip similarity to the centroid, or squared L2 distance."""
    from .searcher import check_k

    k = check_k(k)
    rows = searcher.store.load_clusters()
    if not rows:
        raise InvalidInputError("the collection has no clustering yet; run Collection.cluster(n) first")
    qv = searcher.query_vectors([query]).vectors
    metric = searcher.metric
    centroids = np.stack([r["centroid"] for r in rows])
    D, I = centroid_index(centroids, metric).search(_prepare(qv, metric), min(int(k), len(rows)))
    by_pos = {int(i): float(d) for d, i in zip(D[0], I[0]) if i >= 0}
    summary = {c.id: c for c in stored_clusters(searcher.store)}
    out = []
    for pos, score in by_pos.items():
        c = summary[rows[pos]["id"]]
        out.append(CorpusCluster(c.id, c.label, c.size, c.representatives, score))
    return out


def mentions_cluster(where: Any) -> bool:
    """Whether a ``where`` filter has a ``cluster`` key anywhere."""
    if isinstance(where, Mapping):
        return any(k == "cluster" or mentions_cluster(v) for k, v in where.items())
    if isinstance(where, (list, tuple)):
        return any(mentions_cluster(v) for v in where)
    return False


def members(store: SqlStore, cluster_id: int, limit: int | None = 100) -> list[Item]:
    """Items of a stored cluster, in id order."""
    if isinstance(cluster_id, bool) or not isinstance(cluster_id, (int, np.integer)):
        raise InvalidInputError(f"cluster id must be an integer, got {cluster_id!r}")
    if not store.has_clusters():
        raise InvalidInputError("the collection has no clustering yet; run Collection.cluster(n) first")
    ids = store.cluster_item_ids(int(cluster_id), limit)
    found = store.get(ids)
    return [found[i] for i in ids if i in found]


def cluster_of(store: SqlStore, ids: Sequence[int]) -> dict[int, int]:
    """``item id -> cluster id``; {} without a clustering."""
    if not store.has_clusters():
        return {}
    return store.assignments(ids)
