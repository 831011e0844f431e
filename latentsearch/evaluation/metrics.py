"""Information-retrieval metrics computed exactly as trec_eval / pytrec_eval compute them.

Inputs everywhere:

* ``qrels``: query id -> doc id -> relevance (an int; ``<= 0`` means not relevant).
* ``run``: query id -> doc id -> score (higher is better).

Conventions, all taken from trec_eval (``form_res_rels.c`` and the ``m_*.c`` measures):

* **Ranking.** A query's documents are sorted by score descending; equal scores are ordered by
  document id *descending* (reverse lexicographic, as ``strcmp(b, a)``), so among ties ``"d9"``
  ranks above ``"d10"`` and ``"b"`` above ``"a"``. See :func:`ranked_ids`.
* **Relevant** means relevance ``>= 1``. The number of relevant documents ``R`` of a query counts
  every judged document with relevance ``>= 1``, retrieved or not.
* **Which queries count.** Queries in ``qrels`` with ``R == 0`` are skipped. Queries in ``qrels``
  that are missing from ``run`` score 0 on every metric (trec_eval's ``-c``). Queries in ``run``
  that are not in ``qrels`` are ignored. Means are over the queries that count.

Metric definitions at cutoff ``k`` (ranks start at 1):

* ``ndcg@k`` (trec_eval ``ndcg_cut.k``): DCG = sum over the top k of ``rel / log2(rank + 1)``
  (linear gain, not ``2**rel - 1``), divided by the DCG of the judged relevant documents sorted
  by relevance, also cut at k.
* ``mrr@k``: ``1 / rank`` of the first relevant document within the top k, else 0. trec_eval's
  ``recip_rank`` has no cutoff; it equals ``mrr@k`` on a run truncated to its top k.
* ``map@k`` (trec_eval ``map_cut.k``): sum of precision@rank at each relevant rank within the
  top k, divided by ``R`` (all relevant documents, *not* ``min(k, R)``).
* ``recall@k`` (trec_eval ``recall.k``): relevant documents in the top k divided by ``R``.
* ``precision@k`` (trec_eval ``P.k``): relevant documents in the top k divided by ``k``, even
  when fewer than k documents were retrieved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import InvalidInputError

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

DEFAULT_KS = (1, 3, 5, 10, 100)


def ranked_ids(scores: Mapping[str, float]) -> list[str]:
    """Doc ids by score descending, ties by doc id descending (trec_eval's ``comp_sim_docno``).

    Python compares ``str`` by code point, which is the byte order ``strcmp`` sees in UTF-8.
    """
    return [doc for doc, _ in sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def num_relevant(rels: Mapping[str, int]) -> int:
    """``R``: the number of judged documents with relevance ``>= 1``."""
    return sum(1 for rel in rels.values() if rel > 0)


# Per-query metrics: ``rels`` is one query's judgments, ``ranking`` its ranked doc ids.


def query_ndcg(rels: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    dcg = sum(
        rels.get(doc, 0) / math.log2(rank + 1)
        for rank, doc in enumerate(ranking[:k], start=1)
        if rels.get(doc, 0) > 0
    )
    ideal = sorted((rel for rel in rels.values() if rel > 0), reverse=True)[:k]
    idcg = sum(rel / math.log2(rank + 1) for rank, rel in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def query_mrr(rels: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    for rank, doc in enumerate(ranking[:k], start=1):
        if rels.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def query_map(rels: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    r = num_relevant(rels)
    if r == 0:
        return 0.0
    found, total = 0, 0.0
    for rank, doc in enumerate(ranking[:k], start=1):
        if rels.get(doc, 0) > 0:
            found += 1
            total += found / rank
    return total / r


def query_recall(rels: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    r = num_relevant(rels)
    return _hits(rels, ranking, k) / r if r else 0.0


def query_precision(rels: Mapping[str, int], ranking: Sequence[str], k: int) -> float:
    return _hits(rels, ranking, k) / k


def _hits(rels: Mapping[str, int], ranking: Sequence[str], k: int) -> int:
    return sum(1 for doc in ranking[:k] if rels.get(doc, 0) > 0)


QueryMetric = Callable[[Mapping[str, int], Sequence[str], int], float]

METRICS: dict[str, QueryMetric] = {
    "ndcg": query_ndcg,
    "mrr": query_mrr,
    "map": query_map,
    "recall": query_recall,
    "precision": query_precision,
}


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks:
        raise InvalidInputError("no cutoffs given; pass ks such as (1, 10, 100)")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"cutoff k must be a positive integer, got {k!r}")
    return tuple(int(k) for k in ks)


def evaluate_per_query(
    qrels: Qrels,
    run: Run,
    ks: Iterable[int] = DEFAULT_KS,
    metrics: Iterable[str] = tuple(METRICS),
) -> dict[str, dict[str, float]]:
    """Query id -> ``{"ndcg@10": ..., ...}`` for every query that counts (see module docstring).

    Keys are ``f"{metric}@{k}"`` for each metric in ``metrics`` (names of :data:`METRICS`) and
    each ``k`` in ``ks``; each query's ranking is sorted once.
    """
    ks = _check_ks(ks)
    names = tuple(metrics)
    for name in names:
        if name not in METRICS:
            raise InvalidInputError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    out: dict[str, dict[str, float]] = {}
    for qid, rels in qrels.items():
        if num_relevant(rels) == 0:
            continue
        ranking = ranked_ids(run.get(qid, {}))
        out[qid] = {f"{name}@{k}": METRICS[name](rels, ranking, k) for name in names for k in ks}
    return out


def evaluate(
    qrels: Qrels,
    run: Run,
    ks: Iterable[int] = DEFAULT_KS,
    metrics: Iterable[str] = tuple(METRICS),
) -> dict[str, float]:
    """Mean of :func:`evaluate_per_query` over the queries that count, e.g. ``{"ndcg@10": 0.65}``.

    Raises :class:`InvalidInputError` when no query in ``qrels`` has a relevant document.
    """
    per_query = evaluate_per_query(qrels, run, ks, metrics)
    if not per_query:
        raise InvalidInputError("qrels has no query with a relevant document; nothing to evaluate")
    keys = next(iter(per_query.values())).keys()
    return {key: math.fsum(q[key] for q in per_query.values()) / len(per_query) for key in keys}


def _mean_metric(name: str, qrels: Qrels, run: Run, k: int) -> float:
    return evaluate(qrels, run, ks=(k,), metrics=(name,))[f"{name}@{k}"]


def ndcg_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """Mean nDCG@k, linear gain and ``log2(rank + 1)`` discount (trec_eval ``ndcg_cut.k``)."""
    return _mean_metric("ndcg", qrels, run, k)


def mrr_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """Mean reciprocal rank of the first relevant document within the top k (0 if none)."""
    return _mean_metric("mrr", qrels, run, k)


def map_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """Mean average precision cut at k, divided by all relevant docs (trec_eval ``map_cut.k``)."""
    return _mean_metric("map", qrels, run, k)


def recall_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """Mean fraction of each query's relevant documents found in its top k (``recall.k``)."""
    return _mean_metric("recall", qrels, run, k)


def precision_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """Mean fraction of the top k that is relevant, always divided by k (trec_eval ``P.k``)."""
    return _mean_metric("precision", qrels, run, k)


def recall_against_exact(I_approx: np.ndarray, I_exact: np.ndarray, k: int) -> float:  # noqa: N803
    """ANN recall: the fraction of the exact top-k neighbours that the approximate top-k contains.

    ``I_approx``: ids from the index under test, shape ``(nq, >= k)``, best first.
    ``I_exact``: ids from exact search, shape ``(nq, >= k)``, best first.
    Only the first ``k`` columns of each are used. ``-1`` (FAISS's padding when fewer than k
    results exist) is never a match, and padded exact slots leave the denominator, so the
    result is ``sum_q |exact_q ∩ approx_q| / sum_q |exact_q|`` over non-padding ids.
    Order within the top k does not matter; a repeated approximate id counts once.
    """
    approx, exact = np.asarray(I_approx), np.asarray(I_exact)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    if approx.ndim != 2 or exact.ndim != 2:
        raise InvalidInputError(
            f"id arrays must be 2-D (nq, k); got shapes {approx.shape} and {exact.shape}"
        )
    if approx.shape[0] != exact.shape[0]:
        raise InvalidInputError(
            f"approximate ids have {approx.shape[0]} rows but exact ids have {exact.shape[0]}"
        )
    if approx.shape[1] < k or exact.shape[1] < k:
        raise InvalidInputError(
            f"k={k} needs at least {k} columns; got shapes {approx.shape} and {exact.shape}"
        )
    approx, exact = approx[:, :k], exact[:, :k]
    valid = exact != -1
    wanted = int(valid.sum())
    if wanted == 0:
        raise InvalidInputError("the exact ids are all -1 padding; recall is undefined")
    found = 0
    step = max(1, (1 << 22) // (k * k))  # rows per chunk: keeps the (rows, k, k) mask near 4 MB
    for start in range(0, exact.shape[0], step):
        e, a = exact[start : start + step], approx[start : start + step]
        hit = (e[:, :, None] == a[:, None, :]).any(axis=2)
        found += int((hit & valid[start : start + step]).sum())
    return found / wanted
