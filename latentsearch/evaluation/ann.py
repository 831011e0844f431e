"""Approximate-nearest-neighbour benchmarks: recall against exact search, speed, size, memory.

Vector files (``.fvecs``, ``.ivecs``, ``.npy``) are read by :mod:`.vecfiles`.

:func:`sweep` builds each FAISS factory once and varies only its search option, so a spec like
``HNSW32?efSearch=16,32,64`` or ``IVF256,Flat?nprobe=1,4,16`` is one build and several points.
Every point reports recall@k against the ground truth, batch throughput, single-query latency
percentiles, build time, serialized size and the growth of the process's peak memory.
"""

from __future__ import annotations

import itertools
import resource
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DimensionMismatchError, InvalidInputError, unknown_name
from ..indexes.selection import MAX_RESCORE, MAX_SEARCH_OPTION, SEARCH_OPTIONS, IndexSpec
from ..vectors import normalize
from .metrics import recall_against_exact

METRICS = ("l2", "ip", "cosine")
DEFAULT_K_VALUES = (1, 10, 100)
LATENCY_PERCENTILES = (50, 95, 99)

# -- data preparation ---------------------------------------------------------------------------


def as_float_matrix(x: np.ndarray, what: str = "vectors") -> np.ndarray:
    """``x`` as C-contiguous float32 ``(n, d)``, refusing empties and non-finite values."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or not x.size:
        raise InvalidInputError(f"{what} must be a non-empty 2-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InvalidInputError(f"{what} contain NaN or infinite values")
    return x


def split_queries(x: np.ndarray, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(base, queries)``: ``n_queries`` rows drawn without replacement by ``seed`` become the
    queries and are left out of the base, so no query finds itself."""
    if not 0 < n_queries < len(x):
        raise InvalidInputError(
            f"cannot sample {n_queries} queries from {len(x)} vectors; "
            "use fewer queries than there are vectors (and at least one)"
        )
    picked = np.random.default_rng(seed).choice(len(x), size=n_queries, replace=False)
    keep = np.ones(len(x), dtype=bool)
    keep[picked] = False
    return x[keep], x[np.sort(picked)]


def collection_vectors(path: str | Path) -> tuple[np.ndarray, str]:
    """Every stored vector of the collection at ``path`` (id order) and its metric."""
    import latentsearch

    with latentsearch.open(path) as col:
        parts = [vectors for _, vectors in col.store.iter_vectors()]
        metric, dim = col.config.metric, col.config.dim
    if not parts:
        raise InvalidInputError(f"the collection at {path} holds no vectors to benchmark")
    x = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return x.reshape(-1, dim), metric


def exact_neighbours(xb: np.ndarray, xq: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Ids ``(nq, k)`` of the exact top-k of each query by brute force (FAISS Flat)."""
    import faiss

    xb, xq = _prepare(xb, xq, metric)
    flat = faiss.IndexFlat(xb.shape[1], faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT)
    flat.add(xb)
    _, ids = flat.search(xq, k)
    return ids


def _prepare(xb: np.ndarray, xq: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    if metric not in METRICS:
        raise unknown_name("metric", metric, METRICS)
    xb, xq = as_float_matrix(xb, "base vectors"), as_float_matrix(xq, "query vectors")
    if xq.shape[1] != xb.shape[1]:
        raise DimensionMismatchError(xb.shape[1], xq.shape[1], what="the query vectors")
    if metric == "cosine":
        xb, xq = normalize(xb), normalize(xq)
    return xb, xq


# -- sweep specs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSpec:
    """A FAISS factory and, per search option, the values to try: ``HNSW32?efSearch=16,32``.

    Values are comma-separated; several options join with ``&`` and every combination becomes a
    point, though each index type honours one option (HNSW ``efSearch``, IVF ``nprobe``).
    """

    factory: str
    grid: tuple[tuple[str, tuple[int, ...]], ...] = ()
    target: float | None = None  # recall=R (and auto): built and tuned as a collection does it

    @classmethod
    def parse(cls, text: str) -> SweepSpec:
        factory, _, query = text.strip().partition("?")
        factory = factory.strip()
        if not factory:
            raise InvalidInputError(
                f"index spec {text!r} has no factory; use e.g. Flat, HNSW32?efSearch=16,64 "
                "or IVF256,Flat?nprobe=1,4,16"
            )
        if factory.lower() == "auto" or "recall=" in query:
            if "," in query:
                raise InvalidInputError(f"{text!r}: a spec with a recall target takes one value per option")
            tuned = IndexSpec.parse(text)  # auto and recall= are tuned once: no sweep of values
            return cls(factory=str(tuned), target=tuned.target)
        grid: dict[str, tuple[int, ...]] = {}
        for part in filter(None, query.split("&")):
            key, eq, values = part.partition("=")
            key = key.strip()
            if key not in (*SEARCH_OPTIONS, "rescore"):
                raise unknown_name("index search option", key, (*SEARCH_OPTIONS, "rescore"))
            if not eq or not values.strip():
                raise InvalidInputError(f"index option {key} in {text!r} has no values; write {key}=1,4,16")
            if key in grid:
                raise InvalidInputError(f"index option {key} is given twice in {text!r}")
            grid[key] = tuple(dict.fromkeys(_positive_int(key, v) for v in values.split(",")))
        return cls(factory=factory, grid=tuple(grid.items()))

    @property
    def tuned(self) -> bool:
        """Whether the spec is built and tuned like a collection's (``auto``, ``recall=``)."""
        return self.target is not None or IndexSpec.parse(self.factory).is_auto

    def points(self) -> list[dict[str, int]]:
        """Every combination of the option values, in the order written (``[{}]`` when none)."""
        keys = [key for key, _ in self.grid]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in self.grid))]

    def labels(self) -> list[str]:
        """Each point as a single-valued index spec, e.g. ``HNSW32?efSearch=64``."""
        if self.tuned:
            return [self.factory]
        return [str(IndexSpec(self.factory, point)) for point in self.points()]


def _positive_int(key: str, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise InvalidInputError(f"index option {key}={value.strip()!r} is not an integer") from None
    if number <= 0:
        raise InvalidInputError(f"index option {key} must be positive, got {number}")
    if key == "rescore" and number > MAX_RESCORE:
        raise InvalidInputError(f"index option rescore={number} is too large; give at most {MAX_RESCORE}")
    if number > MAX_SEARCH_OPTION:  # the bound a collection's index spec has (IndexSpec.parse)
        raise InvalidInputError(
            f"index option {key}={number} is too large; give at most {MAX_SEARCH_OPTION} "
            f"(a larger {key} searches no deeper than the whole index)"
        )
    return number


def expand_specs(specs: Iterable[str]) -> list[str]:
    """Single-valued index specs, one per sweep point: ``["HNSW32?efSearch=16", ...]``."""
    return [label for spec in specs for label in SweepSpec.parse(spec).labels()]


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class AnnPoint:
    """One index at one search setting. The build fields repeat on every point of a factory.

    ``peak_memory_bytes`` is approximate: the growth of the process's peak resident set
    (``getrusage`` ``ru_maxrss``) while the factory was built and searched. A peak only grows,
    so a factory measured after a bigger one can read 0; run one factory per process for a
    clean number.
    """

    index: str  # the FAISS factory string
    spec: str  # factory plus search option, e.g. "HNSW32?efSearch=64"
    search: dict[str, int]
    recall: dict[str, float]  # "recall@1", "recall@10", ...
    qps: float  # batch throughput, all queries in one search call
    latency_ms: dict[str, float]  # "p50", "p95", "p99" of single-query searches
    build_seconds: float  # train + add
    index_bytes: int  # len(faiss.serialize_index(...))
    peak_memory_bytes: int
    ntotal: int
    target: float | None = None  # the recall@10 a tuned spec (auto, recall=) was tuned to
    tuning: str | None = None  # what the tuning chose, e.g. "HNSW32: efSearch 256 (recall@10 0.967 ...)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Progress = Callable[[str], None]


def sweep(
    xb: np.ndarray,
    xq: np.ndarray,
    gt: np.ndarray | None,
    specs: Sequence[str],
    metric: str = "l2",
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    *,
    min_batch_seconds: float = 0.2,
    latency_queries: int | None = 1000,
    progress: Progress | None = None,
) -> list[AnnPoint]:
    """Measure every point of every spec; see :class:`AnnPoint` for what each reports.

    ``xb``: base ``(n, d)``; ``xq``: queries ``(nq, d)``; ``gt``: exact neighbour positions in
    ``xb`` ``(nq, >= max(k_values))`` best first, or None to compute it with FAISS Flat.
    Batch throughput is the median over repeated whole-batch searches lasting at least
    ``min_batch_seconds`` in total; latency times each of the first ``latency_queries``
    queries alone (None: all of them). Searches run where :class:`FaissIndex` runs them: on
    the GPU for the index types FAISS can clone there, when faiss-gpu sees one
    (``LATENTSEARCH_DEVICE=cpu`` keeps them on the CPU).
    """
    from ..indexes.faiss_index import FaissIndex

    ks = _check_k_values(k_values, len(xb))
    depth = max(ks)
    parsed = [SweepSpec.parse(spec) for spec in specs]
    if not parsed:
        raise InvalidInputError("no index spec to benchmark; pass e.g. Flat or HNSW32?efSearch=16,64")
    xb, xq = _prepare(xb, xq, metric)
    gt = exact_neighbours(xb, xq, depth, metric) if gt is None else _check_gt(gt, len(xq), depth)
    ids = np.arange(len(xb), dtype=np.int64)
    lat_xq = xq if latency_queries is None else xq[:latency_queries]
    points: list[AnnPoint] = []
    for spec in parsed:
        if progress:
            progress(f"building {spec.factory}" + (" and tuning it as a collection does" if spec.tuned else ""))
        peak_before = peak_rss_bytes()
        started = time.perf_counter()
        if spec.tuned:
            points += _tuned_point(spec, xb, xq, gt, metric, ks, min_batch_seconds, lat_xq, peak_before)
            continue
        index = FaissIndex(spec.factory, xb.shape[1], metric)
        index.add(ids, xb)
        build_seconds = time.perf_counter() - started
        if not index.trained:
            raise InvalidInputError(
                f"{spec.factory} needs {index.train_size} vectors to train but the base has "
                f"{len(xb)}; use fewer IVF lists or a smaller PQ"
            )
        _check_options(spec, index)
        index.vectors = lambda found: (found, xb[found])  # rescore=R re-ranks by the base vectors
        index_bytes = index.memory_bytes()
        measured = []
        for search, label in zip(spec.points(), spec.labels()):
            if progress:
                progress(f"searching {label}")
            index.search_options = dict(search)
            found, qps = time_batch(index.search, xq, depth, min_batch_seconds)
            latency = time_single(index.search, lat_xq, depth)
            recall = {f"recall@{k}": recall_against_exact(found, gt, k) for k in ks}
            measured.append((label, search, recall, qps, latency))
        peak = max(0, peak_rss_bytes() - peak_before)
        for label, search, recall, qps, latency in measured:
            points.append(AnnPoint(
                index=spec.factory, spec=label, search=search, recall=recall, qps=qps,
                latency_ms=latency, build_seconds=build_seconds, index_bytes=index_bytes,
                peak_memory_bytes=peak, ntotal=index.ntotal,
            ))
        del index
    return points


def _tuned_point(spec: SweepSpec, xb: np.ndarray, xq: np.ndarray, gt: np.ndarray, metric: str, ks: tuple[int, ...],
                 min_batch_seconds: float, lat_xq: np.ndarray, peak_before: int) -> list[AnnPoint]:
    """``auto`` or a ``recall=`` spec measured as a collection builds it: the base added to a
    temporary collection of precomputed vectors (whose write builds the index and tunes it on
    held-out vectors of its own), then searched like the others. The collection's ids are the
    base's positions plus one."""
    import tempfile

    from ..collection import Collection

    with tempfile.TemporaryDirectory(prefix="latentsearch-ann-") as tmp:
        started = time.perf_counter()
        with Collection.create(Path(tmp) / "c", encoder=None, dim=xb.shape[1], index=spec.factory, metric=metric) as col:
            col.add(xb)
            build_seconds = time.perf_counter() - started
            index = col.index()

            def search(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
                D, I = index.search(x, k)
                return D, np.where(I >= 0, I - 1, -1)

            depth = max(ks)
            found, qps = time_batch(search, xq, depth, min_batch_seconds)
            latency = time_single(search, lat_xq, depth)
            tuning = col.info().get("index_tuning")
            return [AnnPoint(
                index=spec.factory, spec=spec.factory, search=dict(index.search_options),
                recall={f"recall@{k}": recall_against_exact(found, gt, k) for k in ks}, qps=qps,
                latency_ms=latency, build_seconds=build_seconds, index_bytes=index.memory_bytes(),
                peak_memory_bytes=max(0, peak_rss_bytes() - peak_before), ntotal=index.ntotal,
                target=spec.target, tuning=f"{index.factory}: {tuning}" if tuning else index.factory,
            )]


def against_hand_tuned(points: Sequence[AnnPoint], key: str = "recall@10") -> list[dict[str, Any]]:
    """For each tuned point (``auto``, ``recall=``): the fastest hand-set point of the sweep that
    reaches the same target, and the tuned point's queries/s as a share of it (None when no
    hand-set point reaches the target)."""
    out = []
    for p in points:
        if p.target is None or key not in p.recall:
            continue
        meeting = [h for h in points if h.target is None and not IndexSpec.parse(h.spec).is_auto
                   and h.recall.get(key, 0.0) >= p.target]
        best = max(meeting, key=lambda h: h.qps, default=None)
        out.append({
            "spec": p.spec, "chose": p.tuning, "target": p.target, key: p.recall[key], "qps": p.qps,
            "met": p.recall[key] >= p.target, "best_hand_tuned": best.spec if best else None,
            "best_hand_tuned_qps": best.qps if best else None,
            "qps_vs_best": round(p.qps / best.qps, 3) if best else None,
        })
    return out


def _check_k_values(k_values: Sequence[int], n: int) -> tuple[int, ...]:
    ks = tuple(sorted(set(k_values)))
    if not ks:
        raise InvalidInputError("no k given; pass k values such as 1, 10, 100")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    if ks[-1] > n:
        raise InvalidInputError(f"k={ks[-1]} is more than the {n} base vectors; use a smaller k")
    return tuple(int(k) for k in ks)


def _check_gt(gt: np.ndarray, nq: int, depth: int) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.ndim != 2 or not np.issubdtype(gt.dtype, np.integer):
        raise InvalidInputError(f"ground truth must be a 2-D integer array, got shape {gt.shape} of {gt.dtype}")
    if gt.shape[0] != nq:
        raise InvalidInputError(f"ground truth has {gt.shape[0]} rows but there are {nq} queries")
    if gt.shape[1] < depth:
        raise InvalidInputError(
            f"ground truth has {gt.shape[1]} neighbours per query but k={depth} needs {depth}; "
            f"use -k up to {gt.shape[1]} or leave out the ground truth to compute it"
        )
    return gt[:, :depth].astype(np.int64)


def _check_options(spec: SweepSpec, index: Any) -> None:
    """Refuse an option the index ignores, rather than report identical points under its name."""
    supported = index_search_options(index)
    for key, _ in spec.grid:
        if key not in supported and key != "rescore":
            tunes = {"efSearch": "HNSW indexes", "nprobe": "IVF indexes"}[key]
            raise InvalidInputError(f"{key} does not apply to {spec.factory}; it tunes {tunes}")


def index_search_options(index: Any) -> set[str]:
    """The search options a :class:`FaissIndex` honours: ``{"efSearch"}``, ``{"nprobe"}`` or none."""
    import faiss

    if index.binary:
        return {"efSearch"} if index.hnsw_m else set()
    inner = index.index.index if isinstance(index.index, faiss.IndexIDMap2) else index.index
    if isinstance(faiss.downcast_index(inner), faiss.IndexHNSW):
        return {"efSearch"}
    try:
        faiss.extract_index_ivf(index.index)
    except RuntimeError:
        return set()
    return {"nprobe"}


Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def time_batch(search: Search, xq: np.ndarray, k: int, min_seconds: float = 0.2) -> tuple[np.ndarray, float]:
    """``(ids, queries per second)``: a warm-up search gives the ids, then whole-batch searches
    repeat (at least once, at most 50 times) until ``min_seconds`` pass; the median counts."""
    _, found = search(xq, k)
    times: list[float] = []
    while not times or (sum(times) < min_seconds and len(times) < 50):
        started = time.perf_counter()
        search(xq, k)
        times.append(time.perf_counter() - started)
    return found, len(xq) / max(float(np.median(times)), 1e-9)


def time_single(search: Search, xq: np.ndarray, k: int) -> dict[str, float]:
    """Percentiles (``p50``, ``p95``, ``p99``) in ms of searching each query alone."""
    took = np.empty(len(xq))
    for i in range(len(xq)):
        started = time.perf_counter()
        search(xq[i : i + 1], k)
        took[i] = time.perf_counter() - started
    values = np.percentile(took * 1000.0, LATENCY_PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(LATENCY_PERCENTILES, values)}


def serialized_bytes(index: Any) -> int:
    import faiss

    return len(faiss.serialize_index(index))


def peak_rss_bytes() -> int:
    """The process's peak resident set so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)
