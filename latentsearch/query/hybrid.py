"""Lexical and hybrid search: the store's full-text index, and fusing it with the vector index.

Lexical search ranks items by their text with the database's own full-text search (SQLite FTS5
``bm25()``, PostgreSQL ``ts_rank`` weighted by each word's BM25 idf); any query word may match, so long natural-language
queries still find documents. A query string is never read as query syntax: FTS5 gets every
word as a quoted string joined by ``OR``, PostgreSQL a ``tsquery`` of the quoted lexemes of
``to_tsvector('english', query)`` joined by ``|``. Hybrid search fuses the dense and lexical
ranked lists by reciprocal rank fusion: ``score = sum(weight / (60 + rank))``, rank from 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MODES = ("dense", "lexical", "hybrid")
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al., 2009)
HYBRID_DEPTH = 100  # each side's ranked list is at least this deep before fusion
MAX_TERMS = 256  # query words kept (the first ones), so a pasted document stays a cheap query
_WORD = re.compile(r"\w+", re.UNICODE)


def words(query: str) -> list[str]:
    """The distinct words of ``query`` in order, lower-cased, at most :data:`MAX_TERMS`."""
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:MAX_TERMS]


def fts5_query(query: str) -> str | None:
    """An FTS5 MATCH expression for ``query``: each word a quoted string, joined by OR.

    Quoting makes every FTS5 operator (``OR``, ``NEAR(``, ``*``, ``-``, ``^``, column filters)
    plain text; None when the query has no words.
    """
    terms = words(query)
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms) or None


def tsquery_or(lexemes: Iterable[str]) -> str | None:
    """A PostgreSQL ``tsquery`` text matching any of ``lexemes`` (already normalized), each quoted."""
    quoted = ["'" + lex.replace("\\", "\\\\").replace("'", "''") + "'" for lex in lexemes if lex]
    return " | ".join(quoted) or None


def rrf(
    ranked: Sequence[Sequence[int]], weights: Sequence[float], k0: int = RRF_K
) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of ranked id lists: ``(id, sum of weight / (k0 + rank))``, best
    first (ties by the first list the id ranks in, then by id)."""
    scores: dict[int, float] = {}
    for ids, weight in zip(ranked, weights):
        for rank, item_id in enumerate(ids, start=1):
            scores[item_id] = scores.get(item_id, 0.0) + float(weight) / (k0 + rank)
    return sorted(scores.items(), key=lambda pair: (-pair[1], pair[0]))
