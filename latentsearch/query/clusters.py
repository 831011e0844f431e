"""Nearest-neighbour clusters: the k hits of a query grouped by their vectors.

Small pure functions over arrays, then :func:`group_hits` to turn a search result into clusters.
:func:`kmeans` keeps the best of several starts (k-means++ seedings, and average linkage's
partition, which suits the small sets a search returns), so one unlucky seeding cannot split a
topic and merge two others; :func:`choose_clusters` picks the number of clusters by silhouette;
:func:`distinctive_terms` labels a cluster with the words that set it apart from the other hits.

Rows of unit length (what a cosine collection stores) are compared by cosine similarity, others by
Euclidean distance; on unit rows the two orders agree (``|a - b|² = 2 - 2 cos``), so an ``l2`` or
``ip`` collection of unit vectors loses nothing by the guess.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..vectors import normalize
from ..types import Cluster, Hit

N_INIT = 10  # k-means++ starts per clustering; on a hundred rows each takes a few milliseconds
# Up to this many rows, average linkage (O(m³)) seeds k-means and Hartigan's moves (a Python loop
# over the rows) refine each start: small sets are where k-means has the most bad local optima.
SMALL = 500

# Function words, auxiliaries, fillers and small number words: they say nothing about a topic.
# Tokens under three characters never become terms, so the list leaves them out.
STOPWORDS = frozenset(
    """
    about above across after afterwards again against ago all almost alone along already also
    although always among amongst and another any anybody anyhow anyone anything anyway anywhere
    are aren around became because become becomes becoming been before beforehand behind being
    below beside besides between beyond both but can cannot cant could couldn did didn does doesn
    doing done don dont down during each either else elsewhere enough etc even ever every
    everybody everyone everything everywhere except few for former formerly from further
    furthermore get gets getting got had hadn has hasn have haven having hence her here hereby
    herein hers herself him himself his how however indeed into isn isnt its itself just least
    less let lets like made make makes many may maybe meanwhile might mine more moreover most
    mostly much must myself namely neither never nevertheless new next nobody none noone nor not
    nothing now nowhere off often once one ones only onto other others otherwise ought our ours
    ourselves out over own per perhaps please quite rather really said same say says see seem
    seemed seems several shall she should shouldn since some somehow someone something sometime
    sometimes somewhere still such than that the their theirs them themselves then thence there
    thereafter thereby therefore therein these they thing things this those though through
    throughout thru thus till together too toward towards under unless until unto upon use used
    uses using very via was wasn way ways well were weren what whatever when whence whenever where
    whereas whereby wherein whereupon wherever whether which while whither who whoever whole whom
    whose why will with within without won wont would wouldn yes yet you your yours yourself
    yourselves two three four five six seven eight nine ten hundred thousand first second third
    """.split()
)

# A word: letters and digits, apostrophes inside (contractions and possessives stay one token).
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def terms(text: str) -> list[str]:
    """The candidate label words of ``text`` in order, lower-cased, possessive ``'s`` dropped.

    Left out: stop words, contractions (``don't``), tokens under three characters and tokens that
    do not start with a letter (``2024``, ``3rd``, ``1990s``), none of which name a topic.
    """
    out = []
    for token in _TOKEN.findall(text.lower()):
        token = re.sub(r"['’]s$", "", token)
        if len(token) >= 3 and token[0].isalpha() and token.isalnum() and token not in STOPWORDS:
            out.append(token)
    return out


def _fold(word: str) -> str:
    """A plural's singular, crudely (``stars`` -> ``star``, ``galaxies`` -> ``galaxy``): a small
    cluster often uses both, and counted apart neither would seem shared by its members."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def distinctive_terms(texts: Sequence[str], background: Sequence[str], top: int = 3) -> list[str]:
    """Up to ``top`` words that set ``texts`` apart from ``background``, best first.

    A word weighs ``p · log((p + 0.01) / (q + 0.01))``, ``p`` and ``q`` the shares of ``texts`` and
    of ``background`` that use it: common here and rare there, as tf-idf contrasts a document with
    a corpus. Only words more common here than there, and used by two texts or more (any word,
    when ``texts`` is one text), are kept. A plural counts with its singular and the commoner
    spelling is shown. Ties go to the word seen first, so callers put their most typical texts
    first. See :func:`terms` for what counts as a word.
    """
    mine: Counter[str] = Counter()
    spellings: dict[str, Counter[str]] = {}
    for text in texts:
        words = terms(text)
        for w in words:
            spellings.setdefault(_fold(w), Counter())[w] += 1  # dicts keep first-seen order
        mine.update({_fold(w) for w in words})
    rest = Counter(key for text in background for key in {_fold(w) for w in terms(text)})
    n, m = max(len(texts), 1), max(len(background), 1)

    def score(key: str) -> float:
        p, q = mine[key] / n, rest[key] / m
        return p * math.log((p + 0.01) / (q + 0.01))

    least = 1 if len(texts) == 1 else 2
    order = {key: i for i, key in enumerate(spellings)}
    keys = sorted((k for k in order if mine[k] >= least and score(k) > 0), key=lambda k: (-score(k), order[k]))
    return [spellings[k].most_common(1)[0][0] for k in keys[:top]]


def common_metadata(hits: Sequence[Hit], top: int = 2) -> list[str]:
    """The most frequent ``key=value`` pairs of the members' metadata (scalar values only)."""
    counts = Counter(
        f"{k}={v}" for h in hits for k, v in h.metadata.items() if isinstance(v, (str, int, float, bool))
    )
    return [kv for kv, c in counts.most_common(top) if c > 1 or len(hits) == 1]


# -- geometry ------------------------------------------------------------------------------------


def on_sphere(x: np.ndarray) -> bool:
    """Whether every row has unit length (or is zero), as a cosine collection stores them."""
    norms = np.linalg.norm(x, axis=1)  # the tolerance admits float16 storage
    return len(x) > 0 and bool(np.all((np.abs(norms - 1) < 1e-2) | (norms < 1e-12)))


def _costs(x: np.ndarray, c: np.ndarray, spherical: bool) -> np.ndarray:
    """``(len(x), len(c))``: ``1 - cos`` on the sphere, else squared Euclidean distance (what
    k-means minimises), without an ``(m, n, d)`` intermediate."""
    if spherical:
        return 1.0 - x @ c.T
    return np.maximum((x * x).sum(1)[:, None] + (c * c).sum(1)[None, :] - 2 * x @ c.T, 0.0)


def distances(x: np.ndarray, spherical: bool) -> np.ndarray:
    """``(m, m)`` dissimilarities for linkage and silhouette: cosine distance on the sphere, else
    Euclidean distance."""
    d = np.maximum(_costs(x, x, spherical), 0.0)
    d = d if spherical else np.sqrt(d)
    np.fill_diagonal(d, 0.0)
    return d


def _centroids(x: np.ndarray, labels: np.ndarray, n: int, spherical: bool) -> np.ndarray:
    """Each cluster's mean, projected onto the sphere when ``spherical`` (a zero mean stays zero)."""
    onehot = np.eye(n)[labels]
    c = (onehot.T @ x) / np.maximum(onehot.sum(0), 1)[:, None]
    return normalize(c, np.float64) if spherical else c


def _plus_plus(x: np.ndarray, n: int, rng: np.random.Generator, spherical: bool) -> np.ndarray:
    """k-means++ seeding: each next centre drawn with probability proportional to its cost."""
    m = len(x)
    idx = [int(rng.integers(m))]
    cost = np.maximum(_costs(x, x[idx], spherical)[:, 0], 0.0)
    for _ in range(1, n):
        total = cost.sum()
        i = int(rng.choice(m, p=cost / total)) if total > 0 else int(rng.integers(m))
        idx.append(i)
        cost = np.minimum(cost, np.maximum(_costs(x, x[[i]], spherical)[:, 0], 0.0))
    return x[idx].copy()


def _lloyd(x: np.ndarray, c: np.ndarray, spherical: bool, iters: int) -> np.ndarray:
    """Labels after Lloyd steps from centres ``c``; no cluster is left empty."""
    m, n = len(x), len(c)
    labels = None
    for _ in range(iters):
        cost = _costs(x, c, spherical)
        new = cost.argmin(1)
        sizes = np.bincount(new, minlength=n)
        for j in np.flatnonzero(sizes == 0):
            # the worst-served row of a cluster that can spare one restarts the empty cluster
            own = np.where(sizes[new] > 1, cost[np.arange(m), new], -np.inf)
            i = int(own.argmax())
            sizes[new[i]] -= 1
            new[i], sizes[j] = j, 1
        if labels is not None and (new == labels).all():
            break
        labels = new
        c = _centroids(x, labels, n, spherical)
    assert labels is not None
    return labels


def _hartigan(x: np.ndarray, labels: np.ndarray, n: int, spherical: bool, passes: int = 20) -> np.ndarray:
    """Labels after Hartigan's moves: one row at a time goes to the cluster where the objective
    drops most, counting the change to both centroids. Lloyd's steps ignore that a row pulls its
    own centroid, and on small, diffuse sets (sentence embeddings) they stop in local optima that
    these moves leave; every optimum of Hartigan's is also one of Lloyd's."""
    labels = labels.copy()
    count = np.bincount(labels, minlength=n).astype(np.float64)
    sums = np.zeros((n, x.shape[1]))
    np.add.at(sums, labels, x)
    row_sq = (x * x).sum(1)
    for _ in range(passes):
        moved = False
        sq = (sums * sums).sum(1)  # |cluster sum|², kept current through the moves below
        for i, row in enumerate(x):
            a = labels[i]
            if count[a] <= 1:
                continue  # no cluster is emptied
            dot = sums @ row
            if spherical:
                # objective = rows - sum of |cluster sums|: only two of the lengths change
                norms = np.sqrt(sq)
                leave = norms[a] - math.sqrt(max(sq[a] - 2 * dot[a] + row_sq[i], 0.0))
                join = norms - np.sqrt(np.maximum(sq + 2 * dot + row_sq[i], 0.0))
            else:
                d2 = np.maximum(sq / count**2 - 2 * dot / count + row_sq[i], 0.0)  # to each centroid
                leave = -count[a] / (count[a] - 1) * d2[a]
                join = count / (count + 1) * d2
            join[a] = np.inf
            b = int(join.argmin())
            if leave + join[b] < -1e-10:
                labels[i] = b
                sq[a] += row_sq[i] - 2 * dot[a]
                sq[b] += row_sq[i] + 2 * dot[b]
                sums[a] -= row
                sums[b] += row
                count[a], count[b], moved = count[a] - 1, count[b] + 1, True
        if not moved:
            break
    return labels


def kmeans(
    x: np.ndarray, n: int, seed: int = 0, iters: int = 50, *, n_init: int = N_INIT,
    init: np.ndarray | None = None, spherical: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (m,), centroids (n, d))`` of ``x (m, d)``: the lowest objective of ``n_init``
    k-means++ starts, plus one from the partition ``init`` (labels) when given.

    ``spherical`` (default: :func:`on_sphere`) clusters by cosine, with unit centroids
    (spherical k-means); otherwise by squared Euclidean distance. Deterministic for a seed; every
    cluster keeps at least one member.
    """
    x = np.asarray(x, dtype=np.float64)
    spherical = on_sphere(x) if spherical is None else spherical
    n = max(1, min(int(n), len(x)))
    rng = np.random.default_rng(seed)
    starts = [] if init is None else [_centroids(x, np.asarray(init), n, spherical)]
    starts += [_plus_plus(x, n, rng, spherical) for _ in range(max(n_init, 1))]
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for c in starts:
        labels = _lloyd(x, c, spherical, iters)
        if len(x) <= SMALL:
            labels = _hartigan(x, labels, n, spherical)
        c = _centroids(x, labels, n, spherical)
        objective = float(_costs(x, c, spherical)[np.arange(len(x)), labels].sum())
        if best is None or objective < best[2] - 1e-9:  # equal objectives: the earlier start wins
            best = (labels, c, objective)
    assert best is not None
    return best[0], best[1]


def average_linkage(d: np.ndarray, counts: Iterable[int]) -> dict[int, np.ndarray]:
    """Average-linkage (UPGMA) agglomerative clustering of the ``(m, m)`` dissimilarities ``d``,
    cut at each number of clusters in ``counts``: ``{n: labels (m,)}``.

    Merging the two groups of least mean pairwise distance suits small sets (no seeding to go
    wrong), but one outlier can end up alone; :func:`kmeans` therefore uses it as one start among
    others, judged by the same objective. O(m³) time, O(m²) memory.
    """
    m = len(d)
    want = {int(c) for c in counts if 1 <= c <= m}
    out: dict[int, np.ndarray] = {}
    dist = np.array(d, dtype=np.float64)
    np.fill_diagonal(dist, np.inf)
    size = np.ones(m)
    root = np.arange(m)  # the row that stands for each item's group
    for k in range(m, 0, -1):
        if k in want:
            out[k] = np.unique(root, return_inverse=True)[1].reshape(-1)
        if not want or k <= min(want):
            break
        i, j = divmod(int(dist.argmin()), m)
        # the mean distance from any group to i ∪ j weighs i's and j's by their sizes
        row = (size[i] * dist[i] + size[j] * dist[j]) / (size[i] + size[j])
        dist[i], dist[:, i] = row, row
        dist[i, i] = np.inf
        dist[j], dist[:, j] = np.inf, np.inf
        size[i] += size[j]
        root[root == j] = i
    return out


def silhouettes(
    x: np.ndarray, labels: np.ndarray, *, spherical: bool | None = None, d: np.ndarray | None = None
) -> np.ndarray:
    """Each row's silhouette ``(b - a) / max(a, b)``: ``a`` its mean distance to its own cluster,
    ``b`` to the nearest other. Cosine distance for rows on the sphere, Euclidean otherwise, or
    the given ``(m, m)`` dissimilarities ``d``. All 0 with fewer than two clusters; a row alone
    in its cluster scores 0, so splitting off single rows is not rewarded."""
    labels = np.asarray(labels)
    m = len(labels)
    if m == 0 or len(set(labels.tolist())) < 2:
        return np.zeros(m)
    if d is None:
        x = np.asarray(x, dtype=np.float64)
        d = distances(x, on_sphere(x) if spherical is None else spherical)
    onehot = np.eye(int(labels.max()) + 1)[labels]
    sizes = onehot.sum(0)
    sums = d @ onehot  # (m, n): each row's summed distance to each cluster
    own = sizes[labels]
    a = sums[np.arange(m), labels] / np.maximum(own - 1, 1)
    mean = np.where(sizes > 0, sums / np.maximum(sizes, 1), np.inf)
    mean[np.arange(m), labels] = np.inf
    b = mean.min(1)
    return np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)


def silhouette(
    x: np.ndarray, labels: np.ndarray, *, spherical: bool | None = None, d: np.ndarray | None = None
) -> float:
    """Mean silhouette coefficient (see :func:`silhouettes`); 0 with fewer than two clusters."""
    return float(silhouettes(x, labels, spherical=spherical, d=d).mean()) if len(labels) else 0.0


def choose_clusters(
    x: np.ndarray, seed: int = 0, most: int = 8, *, spherical: bool | None = None
) -> tuple[np.ndarray, int]:
    """Labels for the number of clusters with the best silhouette, and that number.

    Tries 2 to ``most`` clusters, but at most half the rows (a cluster of a small set averages two
    members or more; below four rows everything is one cluster). Each candidate is the best
    k-means of several starts, one from average linkage, so the silhouette compares good
    partitions of each size rather than lucky and unlucky seedings. Fewer clusters win unless more
    score better by over a standard error.
    """
    x = np.asarray(x, dtype=np.float64)
    spherical = on_sphere(x) if spherical is None else spherical
    top = min(most, len(x) // 2)
    if top < 2:
        return np.zeros(len(x), dtype=np.int64), 1
    d = distances(x, spherical)
    tree = average_linkage(d, range(2, top + 1)) if len(x) <= SMALL else {}
    runs = []
    for n in range(2, top + 1):
        labels, _ = kmeans(x, n, seed, init=tree.get(n), spherical=spherical)
        runs.append((silhouettes(x, labels, d=d), labels, n))
    scores = [float(s.mean()) for s, _, _ in runs]
    best = int(np.argmax(scores))
    # One-standard-error rule: on a few dozen rows the mean silhouette is noisy, and a topic split
    # in two can edge out the topics by a hair; the fewest clusters within one standard error of
    # the best score win. On large sets the error shrinks and this is the plain maximum.
    error = float(runs[best][0].std(ddof=1) / np.sqrt(len(x)))
    chosen = next(i for i, score in enumerate(scores) if score >= scores[best] - error)
    return runs[chosen][1], runs[chosen][2]


def group_hits(
    hits: Sequence[Hit], vectors: np.ndarray, n_clusters: int | None = None, seed: int = 0
) -> list[Cluster]:
    """Clusters of ``hits`` (closest first) by their ``vectors (len(hits), d)``, largest mean
    score first; each has its members by score, the member nearest its centroid, and a label.

    ``n_clusters`` None chooses the number by silhouette (:func:`choose_clusters`). Unit rows (a
    cosine collection's) are grouped by cosine similarity, others by Euclidean distance. A label
    is the cluster's :func:`distinctive_terms` against the other hits, else its members' common
    metadata, else its representative's snippet. Deterministic for a seed.
    """
    if not hits:
        return []
    x = np.asarray(vectors, dtype=np.float64)
    spherical = on_sphere(x)
    if n_clusters is None:
        labels, n = choose_clusters(x, seed, spherical=spherical)
    else:
        n = max(1, min(int(n_clusters), len(hits)))
        labels = np.zeros(len(hits), dtype=np.int64)
        if n > 1:
            init = average_linkage(distances(x, spherical), [n])[n] if len(x) <= SMALL else None
            labels, _ = kmeans(x, n, seed, init=init, spherical=spherical)
    texts = [h.text or "" for h in hits]
    clusters = []
    for j in range(n):
        idx = np.flatnonzero(labels == j)
        if not len(idx):
            continue
        members = [hits[i] for i in idx]  # hits come closest first, so members do too
        centre = _centroids(x[idx], np.zeros(len(idx), dtype=np.int64), 1, spherical)
        cost = _costs(x[idx], centre, spherical)[:, 0]
        rep = members[int(cost.argmin())]
        # most central members first: distinctive_terms gives ties to the words seen first
        mine = [texts[i] for i in idx[np.argsort(cost, kind="stable")]]
        others = [texts[i] for i in range(len(hits)) if labels[i] != j]
        words = distinctive_terms(mine, others) if any(mine) else []
        label = ", ".join(words or common_metadata(members) or [rep.snippet(40)])
        clusters.append(Cluster(
            id=j, label=label, size=len(members), score=float(np.mean([h.score for h in members])),
            representative=rep, members=members,
        ))
    clusters.sort(key=lambda c: -c.score)
    return [Cluster(i, c.label, c.size, c.score, c.representative, c.members) for i, c in enumerate(clusters)]


def cluster_summary(clusters: Sequence[Cluster]) -> list[dict[str, Any]]:
    return [c.to_dict() for c in clusters]
