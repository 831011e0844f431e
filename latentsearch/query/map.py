"""A 2-D map of a collection: its vectors (a sample when large) projected by PCA, or UMAP when
asked and installed, coloured by cluster and written as a PNG with matplotlib's Agg backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def render_map(
    searcher: Searcher,
    out: str | Path,
    query: Any = None,
    sample: int = 5000,
    use_umap: bool = False,
    seed: int = 0,
) -> MapResult:
    """Write a scatter of the collection to ``out`` (PNG) and describe it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1:
        raise InvalidInputError(f"sample must be a positive integer, got {sample!r}")
    if use_umap and not umap_available():
        raise InvalidInputError("--umap needs the umap-learn package (pip install umap-learn)")
    metric = searcher.metric
    parts = [ids for ids, _ in searcher.store.iter_where(None)]
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if not len(ids):
        raise InvalidInputError("the collection is empty; there is nothing to map")
    if len(ids) > sample:
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

    qpoint = None
    if query is not None:
        qvec = _prepare(searcher.query_vectors([query]).vectors, metric)
    if use_umap:
        import umap

        reducer = umap.UMAP(n_components=2, random_state=seed, metric="cosine" if metric == "cosine" else "euclidean")
        points = reducer.fit_transform(x)
        if query is not None:
            qpoint = reducer.transform(qvec)[0]
    else:
        points, mean, comps = pca_2d(x)
        if query is not None:
            qpoint = ((qvec[0] - mean) @ comps.T)

    fig = Figure(figsize=(8, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    from matplotlib import colormaps

    count = max(labels.max() + 1, 1)
    cmap, period = (colormaps["tab10"], 10) if count <= 10 else (colormaps["tab20"], 20)
    shown: dict[int, str] = {}
    for j in sorted(set(labels.tolist())):
        mask = labels == j
        label = names.get(j, "no cluster") if j >= 0 else "no cluster"
        label = f"{j}: {label}" if j >= 0 else label
        if len(label) > 40:
            label = label[:39] + "…"
        colour = cmap(j % period) if j >= 0 else (0.6, 0.6, 0.6, 1.0)
        ax.scatter(points[mask, 0], points[mask, 1], s=8, color=colour, label=label, alpha=0.8)
        shown[j] = names.get(j, "")
    if qpoint is not None:
        ax.scatter([qpoint[0]], [qpoint[1]], marker="*", s=300, color="black", edgecolors="yellow", label="query", zorder=5)
    ax.set_title(f"{searcher.path.name}: {len(ids)} items ({'UMAP' if use_umap else 'PCA'})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize="small", markerscale=2)
    out = Path(out)
    try:
        fig.savefig(out, format="png")
    except OSError as exc:
        raise LatentSearchError(f"cannot write the map to {out}: {exc}") from exc
    return MapResult(out, int(len(ids)), "umap" if use_umap else "pca", shown, stored)
