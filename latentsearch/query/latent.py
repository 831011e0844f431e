"""Queries in the latent space itself: vector arithmetic, interpolation and diversified search.

The maths is plain numpy (:func:`combine`, :func:`interpolation_points`, :func:`mmr_order`,
:func:`parse_expression`); the ``*_search`` functions wire it to a collection and are what
:meth:`Collection.search_combination`, :meth:`Collection.interpolate` and
:meth:`Collection.search_mmr` call.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..types import Hit
from ..vectors import normalize
from .search import show_int
from .searcher import MAX_K, check_k

if TYPE_CHECKING:
    from .searcher import Searcher

Term = tuple[Any, float]  # (anything a search takes, weight)

MAX_STEPS = 1000  # points on an interpolation: each is a search
MAX_ID_DIGITS = 40  # a #ID longer than this is no item's id (and int() refuses 4,300 digits)
EXPRESSION_HELP = 'quoted texts and #ID item ids joined by + and -, with optional weights: \'"beach" + 0.5*#42 - "people"\''

# -- vector arithmetic ------------------------------------------------------------------------


def combine(vectors: np.ndarray, weights: Sequence[float], metric: str) -> np.ndarray:
    """The weighted sum of the rows of ``vectors``; for ``cosine`` each row is L2-normalised
    first (so every term counts by its weight, not its length) and so is the sum."""
    x = np.asarray(vectors, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(w) or len(w) == 0:
        raise InvalidInputError(f"need one weight per vector, got {len(w)} weights for shape {x.shape}")
    if metric == "cosine":
        x = _unit(x)
    out = w @ x
    if metric == "cosine":
        norm = np.linalg.norm(out)
        if norm <= 1e-9 * max(1.0, float(np.abs(w).sum())):
            raise InvalidInputError("the terms cancel out: their weighted sum is the zero vector")
        out = out / norm
    return out.astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return normalize(x, np.float64)  # float64: slerp and MMR compare angles closely


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
      | (?P<id>\#\d+)
      | "(?P<dq>(?:[^"\\]|\\.)*)"
      | '(?P<sq>(?:[^'\\]|\\.)*)'
      | (?P<op>[+\-*])
    )""",
    re.VERBOSE,
)


def parse_expression(text: str) -> list[Term]:
    """``'"beach" + #42 - 0.5*"people"'`` → ``[("beach", 1.0), (42, 1.0), ("people", -0.5)]``.

    Terms are quoted texts (``"..."`` or ``'...'``, backslash escapes the quote) and item ids
    (``#42``), joined by ``+`` and ``-``, each optionally weighted as ``0.5*term``; the first
    term may carry a sign. Anything else is an :class:`InvalidInputError` that says where.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError(f"empty expression; write {EXPRESSION_HELP}")
    tokens: list[tuple[str, str, int]] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            at = len(text) - len(text[pos:].lstrip())
            what = "this quote is never closed" if text[at:at + 1] in "\"'" else "cannot read this (texts must be quoted)"
            raise InvalidInputError(_syntax(text, at, what))
        kind = m.lastgroup or ""
        value = m.group(kind)
        start = m.start(kind) - (1 if kind in ("dq", "sq") else 0)
        tokens.append(("text" if kind in ("dq", "sq") else kind, value, start))
        pos = m.end()

    terms: list[Term] = []
    i, sign = 0, 1.0
    if tokens[0][0] == "op" and tokens[0][1] in "+-":  # a sign before the first term
        sign, i = (-1.0 if tokens[0][1] == "-" else 1.0), 1
    while True:
        weight = 1.0
        if i < len(tokens) and tokens[i][0] == "num":
            weight = float(tokens[i][1])
            if i + 1 >= len(tokens) or tokens[i + 1][1] != "*":
                raise InvalidInputError(_syntax(text, tokens[i][2], "a weight needs '*' and a term after it"))
            i += 2
        if i >= len(tokens):
            raise InvalidInputError(_syntax(text, len(text), "a term is missing at the end"))
        kind, value, at = tokens[i]
        if kind == "text":
            terms.append((re.sub(r"\\(.)", r"\1", value), sign * weight))
        elif kind == "id":
            if len(value) - 1 > MAX_ID_DIGITS:
                raise InvalidInputError(
                    f"no item with id {value[:13]}… ({len(value) - 1} digits) in this collection; "
                    "item ids are 64-bit integers"
                )
            terms.append((int(value[1:]), sign * weight))
        else:
            raise InvalidInputError(_syntax(text, at, "expected a quoted text or #ID here"))
        i += 1
        if i == len(tokens):
            return terms
        kind, value, at = tokens[i]
        if kind != "op" or value == "*":
            raise InvalidInputError(_syntax(text, at, "expected + or - between terms"))
        sign, i = (-1.0 if value == "-" else 1.0), i + 1


def _syntax(text: str, pos: int, what: str) -> str:
    return f"bad expression at character {pos + 1} of {text!r}: {what}; write {EXPRESSION_HELP}"


def check_terms(terms: Any) -> list[Term]:
    """``terms`` as ``(query, weight)`` pairs; a string is parsed by :func:`parse_expression`."""
    if isinstance(terms, str):
        return parse_expression(terms)
    out: list[Term] = []
    for t in terms:
        if not (isinstance(t, tuple) and len(t) == 2 and isinstance(t[1], numbers.Real) and not isinstance(t[1], bool)):
            raise InvalidInputError(f"each term is a (query, weight) pair, not {t!r}")
        if not np.isfinite(float(t[1])):
            raise InvalidInputError(f"the weight of a term must be finite, got {t[1]!r}")
        out.append((t[0], float(t[1])))
    if not out:
        raise InvalidInputError("give at least one (query, weight) term")
    return out


def combination_search(
    searcher: Searcher, terms: Any, k: int = 10, where: Mapping[str, Any] | None = None
) -> list[Hit]:
    """The ``k`` items nearest the weighted combination of ``terms``; items named as terms
    (by id) are left out of the results."""
    check_k(k)
    pairs = check_terms(terms)
    qv = searcher.query_vectors([q for q, _ in pairs])
    target = combine(qv.vectors, [w for _, w in pairs], searcher.metric)
    skip = {e for e in qv.exclude if e is not None}
    hits = searcher.search(target, k=min(k + len(skip), MAX_K), where=where)
    return [h for h in hits if h.id not in skip][:k]


# -- interpolation ------------------------------------------------------------------------------


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between the directions of ``a`` and ``b`` (a unit vector);
    straight-line between the unit vectors where they (nearly) coincide or are opposite."""
    a, b = _unit(np.asarray(a, np.float64)), _unit(np.asarray(b, np.float64))
    omega = float(np.arccos(np.clip(a @ b, -1.0, 1.0)))
    s = np.sin(omega)
    if s < 1e-6:
        out = (1 - t) * a + t * b
    else:
        out = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / s
    return _unit(out)


def interpolation_points(a: np.ndarray, b: np.ndarray, steps: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(ts, points)``: ``steps`` values of t in [0, 1] and the point at each, slerp for
    ``cosine`` and straight lines otherwise."""
    steps = check_steps(steps)
    ts = np.linspace(0.0, 1.0, steps)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "cosine":
        points = np.stack([slerp(a, b, t) for t in ts])
    else:
        points = (1 - ts)[:, None] * a + ts[:, None] * b
    return ts, points.astype(np.float32)


def check_steps(steps: Any) -> int:
    """``steps`` as an int from 2 to :data:`MAX_STEPS`, or an error saying so."""
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or not 2 <= steps <= MAX_STEPS:
        shown = show_int(steps) if isinstance(steps, numbers.Integral) else repr(steps)[:80]
        raise InvalidInputError(
            f"steps must be an integer from 2 to {MAX_STEPS} (each step is a search), got {shown}"
        )
    return int(steps)


def interpolation_search(searcher: Searcher, a: Any, b: Any, steps: int = 5, k: int = 1) -> list[tuple[float, list[Hit]]]:
    """For each of ``steps`` points from ``a`` to ``b``, ``(t, the k nearest items)``. The
    endpoints themselves are not left out, so with item ids their own items come first."""
    check_k(k)
    check_steps(steps)  # before the endpoints are encoded
    qv = searcher.query_vectors([a, b])
    ts, points = interpolation_points(qv.vectors[0], qv.vectors[1], steps, searcher.metric)
    rows = searcher.search_batch(list(points), k=k)
    return [(float(t), hits) for t, hits in zip(ts, rows)]


# -- maximal marginal relevance -----------------------------------------------------------------


def mmr_order(query: np.ndarray, candidates: np.ndarray, k: int, lambda_: float) -> list[int]:
    """Indices of ``candidates`` chosen greedily by maximal marginal relevance: each step takes
    the one maximising ``lambda_ * cos(query, c) - (1 - lambda_) * max cos(c, chosen)``.
    The first pick is the most relevant; ties go to the earlier candidate."""
    if not 0.0 <= lambda_ <= 1.0:
        raise InvalidInputError(f"lambda must be between 0 and 1, got {lambda_!r}")
    c = _unit(np.asarray(candidates, np.float64))
    if len(c) == 0:
        return []
    relevance = c @ _unit(np.asarray(query, np.float64))
    pairwise = c @ c.T
    chosen = [int(np.argmax(relevance))]
    redundancy = pairwise[chosen[0]].copy()
    available = np.ones(len(c), dtype=bool)
    available[chosen[0]] = False
    while len(chosen) < min(k, len(c)):
        score = np.where(available, lambda_ * relevance - (1.0 - lambda_) * redundancy, -np.inf)
        best = int(np.argmax(score))
        chosen.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, pairwise[best])
    return chosen


def mmr_search(
    searcher: Searcher,
    query: Any,
    k: int = 10,
    fetch_k: int = 50,
    lambda_: float = 0.5,
    where: Mapping[str, Any] | None = None,
) -> list[Hit]:
    """``k`` of the ``fetch_k`` nearest items to ``query``, diversified by :func:`mmr_order`
    over their stored vectors (``lambda_=1``: plain relevance order; ``0``: most spread out)."""
    check_k(k)
    check_k(fetch_k, "fetch_k")
    if isinstance(lambda_, bool) or not isinstance(lambda_, numbers.Real) or not 0.0 <= lambda_ <= 1.0:
        raise InvalidInputError(f"lambda must be a number between 0 and 1, got {lambda_!r}")
    qv = searcher.query_vectors([query])
    skip = qv.exclude[0]
    depth = min(max(fetch_k, k) + qv.extra, MAX_K)  # the search returns at most the items there are
    hits = [h for h in searcher.search(qv.vectors[0], k=depth, where=where) if h.id != skip]
    hits = hits[: max(fetch_k, k)]
    found, vectors = searcher.vectors([h.id for h in hits])
    by_id = dict(zip(found.tolist(), vectors))
    hits = [h for h in hits if h.id in by_id]  # deleted since the index snapshot
    if not hits:
        return []
    order = mmr_order(qv.vectors[0], np.stack([by_id[h.id] for h in hits]), k, float(lambda_))
    return [hits[i] for i in order]
