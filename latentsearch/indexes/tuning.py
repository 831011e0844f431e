"""Recall targets: tune an index's efSearch (HNSW) or nprobe (IVF) to a measured recall@10.

``HNSW32?recall=0.95`` (and ``auto``, whose target is 0.95 unless its spec fixes the search
options) asks for the smallest search depth whose recall@10 against exact search reaches 0.95 on
the collection's own data. :func:`tune` measures it: up to :data:`HELD_OUT` stored vectors, drawn
with a fixed seed, serve as queries, held out of a second index of the same type built for the
measurement from the other stored vectors; their exact neighbours among those come from the store
by :func:`~latentsearch.vectors.exact_search`. (Searching the index itself for its own vectors
overstates recall: an HNSW search for a stored vector lands on its node, whose links are its
neighbours — recall@10 0.98 at efSearch 16 on uniform data where new queries get 0.78.) The
second index costs one more build, and its memory while it lives, each time the index is tuned:
after a build and at each doubling, so about as much again as building. The candidate depths are tried from the
shallowest up (HNSW: 16, 24, 32, 48, … up to :data:`MAX_TUNED_EF`; IVF: 1, 2, 4, … up to nlist,
then bisected), and the first that reaches the target with two standard errors of the measurement
to spare is kept. When none does the deepest is kept, with its recall, and a warning.

An index of compressed codes (SQ, PQ, binary) whose spec does not fix ``rescore=`` has a second
knob: the candidates re-ranked by their stored vectors (``rescore`` R, from
:data:`RESCORE_STEPS`). An index with no search depth (``binary``, ``SQ8``) tunes R alone; an
HNSW or IVF index over codes tunes its depth without rescoring first and, when even the deepest
search misses the target, the smallest R that meets it at the deepest search, then the smallest
depth with that R.

Only the write path tunes (:meth:`IndexSync.tune`, under the writer lock): after a build or a
rebuild, and once the index has grown to :data:`RETUNE_GROWTH` times its size at the last tuning.
The result (:class:`Tuning`) goes into the manifest, so that opening the collection, searching or
rebuilding the index in a reading process uses it without measuring again.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..vectors import exact_search
from .selection import is_lossy

if TYPE_CHECKING:
    from ..stores.sql import SqlStore
    from .faiss_index import FaissIndex

log = logging.getLogger(__name__)

TUNE_K = 10  # recall@10
HELD_OUT = 300  # held-out queries (one standard error of recall 0.95 on 3,000 neighbours: 0.004)
TUNE_MIN_VECTORS = 1_000  # below this an index is not tuned: its defaults search most of it anyway
RETUNE_GROWTH = 2.0  # tune again once the index holds this many times the vectors it was tuned on
MAX_TUNED_EF = 4096  # deeper HNSW searches cost more than exact search on any index worth a graph
TUNE_SEED = 0
RESCORE_STEPS = (1, 2, 4, 8, 16, 32, 64, 100)  # rescore R tried, the first that meets the target kept


@dataclass(frozen=True)
class Tuning:
    """The outcome of one tuning, as the manifest records it (``index_tuning``)."""

    spec: str  # the index spec tuned (the manifest's ``index``)
    factory: str  # the concrete index tuned ("Flat" when ``auto`` fell back to exact search)
    target: float
    param: str | None  # "efSearch", "nprobe"; None for Flat
    value: int | None
    recall: float  # measured recall@10 at ``value`` on the held-out queries
    met: bool  # whether ``recall`` reached ``target``
    queries: int  # held-out queries measured
    ntotal: int  # vectors in the index when tuned
    tuned_at: str  # UTC, ISO 8601
    replaces: str | None = None  # for ``auto``: the index type it chose by size, when another was kept
    rescore: int | None = None  # candidates per result re-ranked, when tuned beside ``param``
    qps: float | None = None  # held-out queries per second at the tuned setting (one batch, best of 5)

    @classmethod
    def from_dict(cls, data: Any) -> Tuning | None:
        """The tuning a manifest holds, or None when it holds none (or one this version cannot read)."""
        if not isinstance(data, dict):
            return None
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            return None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def options(self) -> dict[str, int]:
        """The search options it tuned (none for Flat)."""
        options = {self.param: int(self.value)} if self.param and self.value else {}
        return {**options, "rescore": int(self.rescore)} if self.rescore else options

    def due(self, ntotal: int) -> bool:
        """Whether the index has grown enough since this tuning to tune it again."""
        return ntotal >= RETUNE_GROWTH * max(self.ntotal, 1)

    def describe(self) -> str:
        what = f"{self.param} {self.value}" if self.param else self.factory
        if self.rescore:
            what += f", rescore {self.rescore}"
        if self.replaces:
            what += f" (in place of {self.replaces})"
        missed = "" if self.met else ", target missed"
        return (
            f"{what}: recall@{TUNE_K} {self.recall:.3f} (target {self.target:g}{missed}; {self.queries} held-out "
            f"queries, {self.ntotal:,} vectors, {self.tuned_at})"
        )


def search_param(index: FaissIndex) -> str | None:
    """The search option that trades recall for speed in ``index``: "efSearch" (HNSW), "nprobe"
    (a trained IVF index), or None (exact search, or an IVF index not trained yet)."""
    import faiss

    from .faiss_index import _ivf

    if not index.trained or index.binary:
        return None
    if _ivf(index.index) is not None:
        return "nprobe"
    inner = index.index.index if isinstance(index.index, faiss.IndexIDMap2) else index.index
    return "efSearch" if isinstance(faiss.downcast_index(inner), faiss.IndexHNSW) else None


def rescore_tunable(index: FaissIndex, rescore_free: bool) -> bool:
    """Whether a recall target tunes the rescore of ``index``: its spec fixes none
    (``rescore_free``) and it keeps compressed codes, trained, with stored vectors to rescore by."""
    return rescore_free and is_lossy(index.factory) and index.trained and index.vectors is not None


def candidates(param: str, index: FaissIndex) -> list[int]:
    """The depths to try, shallowest first: HNSW 16, 24, 32, 48, … ; IVF 1, 2, 4, … nlist."""
    from .faiss_index import _ivf

    if param == "nprobe":
        nlist = int(_ivf(index.index).nlist)
        steps = [1 << i for i in range(max(1, nlist).bit_length()) if 1 << i < nlist]
        return steps + [nlist]
    steps, ef = [], 16
    while ef < MAX_TUNED_EF:
        steps += [ef, ef * 3 // 2]
        ef *= 2
    return steps + [MAX_TUNED_EF]


@dataclass
class HeldOut:
    """Held-out queries: stored vectors, their ids, and their exact neighbours among the others."""

    ids: np.ndarray
    vectors: np.ndarray
    truth: np.ndarray  # (nq, TUNE_K)

    def recall(self, index: FaissIndex, options: dict[str, int]) -> float:
        from ..evaluation.metrics import recall_against_exact

        _, found = index.search(self.vectors, TUNE_K, options={**index.search_options, **options})
        return recall_against_exact(found, self.truth, TUNE_K)

    def others(self, store: SqlStore) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored ``(ids, vectors)`` batch but the held-out items."""
        for ids, vectors in store.iter_vectors():
            keep = ~np.isin(ids, self.ids)
            yield ids[keep], vectors[keep]


def held_out(store: SqlStore, metric: str, n: int = HELD_OUT, seed: int = TUNE_SEED) -> HeldOut:
    """Up to ``n`` stored vectors (drawn by ``seed``) and their exact top-10 among the others."""
    ids = store.ids()
    picked = np.sort(np.random.default_rng(seed).choice(ids, size=min(n, len(ids)), replace=False))
    found, vectors = store.vectors(picked)
    queries = HeldOut(found, np.ascontiguousarray(vectors, dtype=np.float32), np.zeros((0, TUNE_K), np.int64))
    _, queries.truth = exact_search(queries.vectors, queries.others(store), TUNE_K, metric)
    return queries


def holdout_index(index: FaissIndex, store: SqlStore, queries: HeldOut, factory: str | None = None) -> FaissIndex:
    """An index like ``index`` (same type unless ``factory`` names another, same build settings)
    of every stored vector but the held-out ones."""
    from .faiss_index import FaissIndex

    rescoring = {"rescore": index.rescore} if index.rescore > 1 else {}
    copy = FaissIndex(factory or index.factory, index.dim, index.metric, rescoring)
    copy.vectors = index.vectors  # measured as searched: rescored when the spec rescores
    for ids, vectors in queries.others(store):
        copy.add(ids, vectors)
    return copy


def meets(recall: float, target: float, queries: int) -> bool:
    """Whether a measured ``recall`` reaches ``target`` with two standard errors to spare (0.958
    for 0.95 on 300 queries): the tuned setting then holds on new queries, not only on these."""
    error = math.sqrt(target * (1 - target) / max(queries * TUNE_K, 1))
    return recall >= target + 2 * error


def tune(index: FaissIndex, store: SqlStore, metric: str, spec: str, target: float,
         queries: HeldOut | None = None, rescore_free: bool = False, factory: str | None = None) -> Tuning | None:
    """The smallest search depth of ``index`` that reaches recall@10 ``target`` on held-out
    queries (see the module's doc), and with ``rescore_free`` (the spec fixes no ``rescore``) on
    an index of compressed codes the smallest rescore R that needs; None when the index type has
    nothing to tune. ``factory``: tune that index type for the same vectors instead (``auto``
    weighing another type). Reads the store (call it holding the writer lock, never from a
    search); never searches ``index`` itself."""
    same = factory in (None, index.factory)
    rescoring = same and rescore_tunable(index, rescore_free)
    if same and search_param(index) is None and not rescoring:
        return None  # nothing to tune: no held-out copy built
    queries = queries or held_out(store, metric)
    measured_on = holdout_index(index, store, queries, factory)
    factory, param = measured_on.factory, search_param(measured_on)
    if not measured_on.trained or (param is None and not rescoring) or (same and param != search_param(index)):
        return None  # too few vectors left to train the copy
    base = {"rescore": 1} if rescoring else {}  # not the rescore an earlier tuning chose
    measured: dict[tuple[tuple[str, int], ...], float] = {}
    nq = len(queries.ids)

    def recall_at(options: dict[str, int]) -> float:
        key = tuple(sorted({**base, **options}.items()))
        if key not in measured:
            measured[key] = queries.recall(measured_on, dict(key))
        return measured[key]

    def smallest(name: str, steps: list[int], fixed: dict[str, int]) -> tuple[int, bool]:
        """The first of ``steps`` meeting the target (nprobe: bisected below it; efSearch and
        rescore keep their ladders, whose gaps leave a margin where recall climbs steeply), else
        the last and False."""
        hit = next((v for v in steps if meets(recall_at({**fixed, name: v}), target, nq)), None)
        if hit is None:
            return steps[-1], False
        if name == "nprobe":
            lo, hi = max((v for v in steps if v < hit), default=0), hit
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if meets(recall_at({**fixed, name: mid}), target, nq) else (mid, hi)
            hit = hi
        return hit, True

    rescore: int | None = None
    if param is None:  # codes without a depth (binary, SQ8): the rescore alone
        param, (value, met) = "rescore", smallest("rescore", list(RESCORE_STEPS), {})
        chosen = {"rescore": value}
    else:
        steps = candidates(param, measured_on)
        value, met = smallest(param, steps, {})
        if not met and rescoring:
            r, met = smallest("rescore", list(RESCORE_STEPS[1:]), {param: steps[-1]})
            if met:
                rescore = r
                value, _ = smallest(param, steps, {"rescore": r})
        chosen = {param: value, **({"rescore": rescore} if rescore else {})}
    recall = recall_at(chosen)
    what = ", ".join(f"{k} {v}" for k, v in chosen.items())
    if not met:
        log.warning(
            "%s reaches recall@%d %.3f at %s, short of the target %g; "
            "use a larger index (e.g. more HNSW neighbours or IVF lists) or a lower target",
            index.factory, TUNE_K, recall, what, target,
        )
    log.info("tuned %s: %s gives recall@%d %.3f (target %g)", index.factory, what, TUNE_K, recall, target)
    return Tuning(
        spec=spec, factory=factory, target=target, param=param, value=int(value),
        recall=round(float(recall), 4), met=met, queries=nq, ntotal=int(index.ntotal),
        tuned_at=now(), rescore=rescore, qps=round(batch_qps(measured_on, queries, {**base, **chosen}), 1),
    )


def batch_qps(index: FaissIndex, queries: HeldOut, options: dict[str, int], repeat: int = 5) -> float:
    """Held-out queries per second through ``index`` at ``options``: one batch, the best of ``repeat``."""
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        index.search(queries.vectors, TUNE_K, options={**index.search_options, **options})
        best = min(best, time.perf_counter() - started)
    return len(queries.ids) / max(best, 1e-9)


def tune_auto(index: FaissIndex, store: SqlStore, metric: str, spec: str, target: float, queries: HeldOut,
              found: Tuning) -> Tuning:
    """For ``auto``: ``found`` (the tuning of the index it built) against the tunings of the
    other types it may use at this size (:func:`~.selection.auto_candidates`); the fastest that
    meets the target is kept (its ``factory`` differs from ``index.factory`` when the caller must
    build it)."""
    from .selection import auto_candidates

    candidates = auto_candidates(int(index.ntotal), index.dim)
    if index.factory not in candidates or len(candidates) < 2:
        return found
    tunings = [found if f == index.factory else tune(index, store, metric, spec, target, queries, factory=f)
               for f in candidates]
    return fastest(tunings) or found


def fastest(tunings: list[Tuning | None]) -> Tuning | None:
    """Of the tunings of several index types for ``auto``, the fastest that met the target (the
    first, the size-based choice, when none did or when it is as fast); the kept one names the
    choice it replaces."""
    first = tunings[0]
    met = [t for t in tunings if t is not None and t.met and t.qps]
    if first is None or not met:
        return first
    best = max(met, key=lambda t: t.qps or 0.0)  # the first of equals: the size-based choice wins ties
    return first if best is first else replace(best, replaces=first.factory)


def exact_tuning(spec: str, target: float, replaces: str, ntotal: int, queries: int) -> Tuning:
    """The record of ``auto`` falling back to exact search (recall 1) because ``replaces`` missed."""
    return Tuning(spec=spec, factory="Flat", target=target, param=None, value=None, recall=1.0, met=True,
                  queries=queries, ntotal=int(ntotal), tuned_at=now(), replaces=replaces)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
