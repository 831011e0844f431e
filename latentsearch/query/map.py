"""A 2-D map of a collection: its vectors (a sample when large) projected by PCA, or UMAP when
asked and installed, each point with its cluster (the stored clustering, else a quick k-means).

:func:`build_map` computes the map once; :meth:`CollectionMap.place` puts more vectors (a query,
the hits of a search) on the same plane. :func:`render_map` draws it as a PNG with matplotlib's
Agg backend (``latentsearch map``); the server answers it as JSON (``GET …/map``) for the web UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import InvalidInputError, LatentSearchError
from .corpus_clusters import _prepare, centroid_index, cluster_of, train_kmeans

if TYPE_CHECKING:
    from .searcher import Searcher

QUICK_CLUSTERS = 8  # clusters of the quick k-means when nothing is stored


@dataclass
class MapResult:
    path: Path
    points: int
    projection: str  # "pca" or "umap"
    clusters: dict[int, str]  # cluster id -> label, as in the legend
    stored_clustering: bool


@dataclass
class CollectionMap:
    """The sampled items of a collection on a plane: ``ids`` (m,), ``points`` (m, 2) and
    ``labels`` (m,; -1 for an item without a stored cluster), ``names`` (cluster id -> label),
    how it was projected, and how many items the collection held."""

    ids: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    names: dict[int, str]
    projection: str
    stored_clustering: bool
    items: int
    metric: str
    dim: int
    _transform: Callable[[np.ndarray], np.ndarray] = field(repr=False)

    def place(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, 2)``: where ``vectors`` (queries or items of the collection) fall on this map."""
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if not len(vectors):
            return np.zeros((0, 2))
        return np.asarray(self._transform(_prepare(vectors, self.metric)), dtype=np.float64).reshape(-1, 2)

    def cluster_sizes(self) -> dict[int, int]:
        """Points per cluster on the map (of the sample, not the whole collection)."""
        values, counts = np.unique(self.labels, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except Exception:
        return False
    return True


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(points (m, 2), mean (d,), components (2, d))`` of ``x`` by numpy's SVD."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    centred = x - mean
    if len(x) < 2:
        comps = np.eye(2, x.shape[1])
    else:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        comps = np.zeros((2, x.shape[1]))
        comps[: min(2, len(vt))] = vt[:2]
        # A deterministic sign: the largest loading of each component is positive.
        for i in range(2):
            j = int(np.abs(comps[i]).argmax())
            if comps[i, j] < 0:
                comps[i] = -comps[i]
    return centred @ comps.T, mean, comps


def build_map(searcher: Searcher, sample: int = 5000, use_umap: bool = False, seed: int = 0) -> CollectionMap:
    """Project at most ``sample`` items of the collection (a seeded random sample) to 2-D."""
    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1:
        raise InvalidInputError(f"sample must be a positive integer, got {sample!r}")
    if use_umap and not umap_available():
        raise InvalidInputError("--umap needs the umap-learn package (pip install umap-learn)")
    metric = searcher.metric
    parts = [ids for ids, _ in searcher.store.iter_where(None)]
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    total = int(len(ids))
    if not total:
        raise InvalidInputError("the collection is empty; there is nothing to map")
    if total > sample:
        ids = np.sort(np.random.default_rng(seed).choice(ids, size=int(sample), replace=False))
    ids, vectors = searcher.store.vectors(ids)
    x = _prepare(vectors, metric)

    assigned = cluster_of(searcher.store, ids.tolist())
    stored = bool(assigned)
    if stored:
        labels = np.array([assigned.get(int(i), -1) for i in ids], dtype=np.int64)
        names = {c["id"]: c["label"] for c in searcher.store.load_clusters()}
    else:
        n = max(1, min(QUICK_CLUSTERS, len(x)))
        centroids = train_kmeans(x, n, metric, seed) if n > 1 else x[:1]
        _, I = centroid_index(centroids, metric).search(x, 1)
        labels = I[:, 0].astype(np.int64)
        names = {j: f"cluster {j}" for j in range(n)}

    transform: Callable[[np.ndarray], np.ndarray]
    if use_umap:
        import umap

        reducer = umap.UMAP(n_components=2, random_state=seed, metric="cosine" if metric == "cosine" else "euclidean")
        points = reducer.fit_transform(x)
        transform = reducer.transform
    else:
        points, mean, comps = pca_2d(x)
        transform = lambda v: (np.asarray(v, dtype=np.float64) - mean) @ comps.T  # noqa: E731
    return CollectionMap(
        ids=np.asarray(ids, dtype=np.int64), points=np.asarray(points, dtype=np.float64), labels=labels,
        names=names, projection="umap" if use_umap else "pca", stored_clustering=stored, items=total,
        metric=metric, dim=int(x.shape[1]), _transform=transform,
    )


def render_map(
    searcher: Searcher,
    out: str | Path,
    query: Any = None,
    sample: int = 5000,
    use_umap: bool = False,
    seed: int = 0,
) -> MapResult:
    """Write a scatter of the collection to ``out`` (PNG) and describe it."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = build_map(searcher, sample, use_umap, seed)
    qpoint = m.place(searcher.query_vectors([query]).vectors)[0] if query is not None else None
    points, labels = m.points, m.labels

    fig = Figure(figsize=(8, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    count = max(labels.max() + 1, 1)
    cmap, period = (colormaps["tab10"], 10) if count <= 10 else (colormaps["tab20"], 20)
    shown: dict[int, str] = {}
    for j in sorted(set(labels.tolist())):
        mask = labels == j
        label = m.names.get(j, "no cluster") if j >= 0 else "no cluster"
        label = f"{j}: {label}" if j >= 0 else label
        if len(label) > 40:
            label = label[:39] + "…"
        colour = cmap(j % period) if j >= 0 else (0.6, 0.6, 0.6, 1.0)
        ax.scatter(points[mask, 0], points[mask, 1], s=8, color=colour, label=label, alpha=0.8)
        shown[j] = m.names.get(j, "")
    if qpoint is not None:
        ax.scatter([qpoint[0]], [qpoint[1]], marker="*", s=300, color="black", edgecolors="yellow", label="query", zorder=5)
    ax.set_title(f"{searcher.path.name}: {len(m.ids)} items ({m.projection.upper()})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize="small", markerscale=2)
    out = Path(out)
    try:
        fig.savefig(out, format="png")
    except OSError as exc:
        raise LatentSearchError(f"cannot write the map to {out}: {exc}") from exc
    return MapResult(out, int(len(m.ids)), m.projection, shown, m.stored_clustering)
