"""The 2-D maps the web UI draws (``GET /api/collections/{name}/map``), computed once and kept.

A map of a few thousand sampled items costs a k-means and a PCA (a fraction of a second to a few
seconds), so each (collection, sample, seed) map is kept and reused while the collection has not
changed; after a write it is recomputed at most once every :data:`REFRESH_SECONDS`, so a stream of
writes does not make every map request pay for it. Maps are computed one at a time (concurrent
requests wait for it and then share it), and at most :data:`MAX_MAPS` are kept.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from ..query.map import CollectionMap, build_map

REFRESH_SECONDS = 10.0
MAX_MAPS = 16  # kept maps; the oldest is dropped beyond this


class MapCache:
    def __init__(self) -> None:
        self._building = threading.Lock()  # one map is computed at a time (CPU-bound; rare)
        self._maps: dict[tuple[str, int, int], tuple[int, float, CollectionMap]] = {}

    def get(self, name: str, col: Any, sample: int, seed: int) -> CollectionMap:
        key = (name, sample, seed)
        with self._building:
            seq = col.store.max_seq()
            kept = self._maps.get(key)
            if kept is not None and (kept[0] == seq or time.monotonic() - kept[1] < REFRESH_SECONDS):
                return kept[2]
            made = build_map(col.searcher, sample=sample, seed=seed)
            self._maps[key] = (seq, time.monotonic(), made)
            while len(self._maps) > MAX_MAPS:  # a client asking for many seeds holds no more than this
                self._maps.pop(min(self._maps, key=lambda k: self._maps[k][1]))
            return made


def map_answer(m: CollectionMap, query_point: np.ndarray | None, marked: list[tuple[int, np.ndarray]]) -> dict[str, Any]:
    """The JSON of a map: parallel arrays of the points (compact for thousands), the clusters
    with their labels and sizes on the map, and the query and marked items placed on it."""
    sizes = m.cluster_sizes()
    return {
        "projection": m.projection,
        "items": m.items,
        "sampled": int(len(m.ids)),
        "stored_clustering": m.stored_clustering,
        "ids": [int(i) for i in m.ids],
        "x": [round(float(v), 6) for v in m.points[:, 0]],
        "y": [round(float(v), 6) for v in m.points[:, 1]],
        "cluster": [int(c) for c in m.labels],
        "clusters": [
            {"id": int(c), "label": m.names.get(int(c), "no cluster") if c >= 0 else "no cluster", "size": n}
            for c, n in sorted(sizes.items())
        ],
        "query": None if query_point is None else {"x": float(query_point[0]), "y": float(query_point[1])},
        "marked": [{"id": int(i), "x": float(p[0]), "y": float(p[1])} for i, p in marked],
    }
