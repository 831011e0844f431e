"""Nearest-neighbour clusters: the k hits of a query grouped by their vectors.

Small pure functions over arrays (k-means, a silhouette score to choose the number of clusters,
distinctive terms for labels), then :func:`group_hits` to turn a search result into clusters.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..types import Cluster, Hit

_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
STOPWORDS = frozenset(
    "the and for are but not you all any can had her was one our out has have that this with from "
    "they will would there their what about which when make like time just know take into year your "
    "some could them than then look only come its over also back after use two how work first well "
    "way even new want because these give most very been were said each such here more other "
    "although though becomes become became within without while where whose being does doing done "
    "into onto upon through during before after above below between under again further once many "
    "much every both few same than too can may might must should shall its itself they them those "
    "who whom why yes yet also often usually still just only around about across along among".split()
)


def kmeans(x: np.ndarray, n: int, seed: int = 0, iters: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (m,), centroids (n, d))`` of ``x (m, d)``: k-means++ seeding, Lloyd steps.

    Deterministic for a seed; an emptied cluster is re-seeded with the point farthest from its
    centroid, so every cluster keeps at least one member.
    """
    rng = np.random.default_rng(seed)
    m = len(x)
    centroids = [x[rng.integers(m)]]
    for _ in range(1, n):
        d2 = np.min(((x[:, None, :] - np.array(centroids)[None]) ** 2).sum(-1), axis=1)
        probs = d2 / d2.sum() if d2.sum() > 0 else np.full(m, 1 / m)
        centroids.append(x[rng.choice(m, p=probs)])
    c = np.array(centroids, dtype=np.float64)
    labels = np.zeros(m, dtype=np.int64)
    for _ in range(iters):
        d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        new = d2.argmin(1)
        for j in range(n):
            if not (new == j).any():
                far = int(d2[np.arange(m), new].argmax())
                new[far] = j
        if (new == labels).all() and _ > 0:
            break
        labels = new
        c = np.stack([x[labels == j].mean(0) for j in range(n)])
    return labels, c


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient (Euclidean); 0 when there is one cluster."""
    n = labels.max() + 1
    if n < 2:
        return 0.0
    sq = (x * x).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0))  # (m, m) without an (m, m, d)
    scores = []
    for i in range(len(x)):
        same = labels == labels[i]
        if same.sum() <= 1:
            scores.append(0.0)
            continue
        a = d[i, same].sum() / (same.sum() - 1)
        b = min(d[i, labels == j].mean() for j in range(n) if j != labels[i] and (labels == j).any())
        scores.append((b - a) / max(a, b) if max(a, b) > 0 else 0.0)
    return float(np.mean(scores))


def choose_clusters(x: np.ndarray, seed: int = 0, most: int = 8) -> tuple[np.ndarray, int]:
    """Labels for the number of clusters (2..``most``) with the best silhouette."""
    best: tuple[float, np.ndarray, int] | None = None
    for n in range(2, min(most, len(x) - 1) + 1):
        labels, _ = kmeans(x, n, seed)
        score = silhouette(x, labels)
        if best is None or score > best[0] + 1e-9:
            best = (score, labels, n)
    if best is None:
        return np.zeros(len(x), dtype=np.int64), 1
    return best[1], best[2]


def distinctive_terms(texts: Sequence[str], background: Sequence[str], top: int = 3) -> list[str]:
    """Words frequent in ``texts`` and rarer in ``background``: a smoothed log-ratio of rates."""
    mine = Counter(w for t in texts for w in set(_WORD.findall(t.lower())) if w not in STOPWORDS)
    rest = Counter(w for t in background for w in set(_WORD.findall(t.lower())) if w not in STOPWORDS)
    n, m = max(len(texts), 1), max(len(background), 1)

    def score(word: str) -> float:
        return mine[word] / n * math.log((mine[word] / n + 0.01) / (rest[word] / m + 0.01))

    return [w for w in sorted(mine, key=lambda w: (-score(w), w)) if mine[w] > 1 or len(texts) == 1][:top]


def common_metadata(hits: Sequence[Hit], top: int = 2) -> list[str]:
    """The most frequent ``key=value`` pairs of the members' metadata (scalar values only)."""
    counts = Counter(
        f"{k}={v}" for h in hits for k, v in h.metadata.items() if isinstance(v, (str, int, float, bool))
    )
    return [kv for kv, c in counts.most_common(top) if c > 1 or len(hits) == 1]


def group_hits(
    hits: Sequence[Hit], vectors: np.ndarray, n_clusters: int | None = None, seed: int = 0
) -> list[Cluster]:
    """Clusters of ``hits`` (closest first) by their ``vectors (len(hits), d)``, largest mean
    score first; each has its members by score, the member nearest its centroid, and a label."""
    if not hits:
        return []
    x = np.asarray(vectors, dtype=np.float64)
    if n_clusters is None:
        labels, n = choose_clusters(x, seed) if len(hits) >= 4 else (np.zeros(len(hits), np.int64), 1)
    else:
        n = max(1, min(int(n_clusters), len(hits)))
        labels, _ = kmeans(x, n, seed) if n > 1 else (np.zeros(len(hits), np.int64), None)
    texts = [h.text or "" for h in hits]
    clusters = []
    for j in range(n):
        idx = np.flatnonzero(labels == j)
        members = [hits[i] for i in idx]  # hits come closest first, so members do too
        centre = x[idx].mean(0)
        rep = members[int(((x[idx] - centre) ** 2).sum(1).argmin())]
        others = [texts[i] for i in range(len(hits)) if labels[i] != j]
        words = distinctive_terms([texts[i] for i in idx], others) if any(texts[i] for i in idx) else []
        label = ", ".join(words or common_metadata(members) or [rep.snippet(40)])
        clusters.append(Cluster(
            id=j, label=label, size=len(members), score=float(np.mean([h.score for h in members])),
            representative=rep, members=members,
        ))
    clusters.sort(key=lambda c: -c.score)
    return [Cluster(i, c.label, c.size, c.score, c.representative, c.members) for i, c in enumerate(clusters)]


def cluster_summary(clusters: Sequence[Cluster]) -> list[dict[str, Any]]:
    return [c.to_dict() for c in clusters]
