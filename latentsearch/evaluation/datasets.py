"""Reading BEIR-format retrieval datasets (the layout MTEB's retrieval tasks also use).

A BEIR folder holds::

    corpus.jsonl        {"_id": ..., "title": ..., "text": ...} per line
    queries.jsonl       {"_id": ..., "text": ...} per line
    qrels/<split>.tsv   header "query-id<TAB>corpus-id<TAB>score", then one judgment per line
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

@dataclass(frozen=True)
class BeirDataset:
    """One split of a BEIR dataset.

    ``corpus``: doc id -> ``{"title": str, "text": str}`` (a missing title is ``""``).
    ``queries``: query id -> text, only the queries judged in this split's qrels.
    ``qrels``: query id -> doc id -> relevance, as in the file (zero scores kept).
    """

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def document_text(doc: Mapping[str, Any]) -> str:
    """The string MTEB and BEIR embed for a document: ``(title + " " + text).strip()``.

    This is BEIR's ``SentenceBERT.encode_corpus`` / MTEB's corpus encoding with ``sep=" "``.
    The strip applies to the joined string, so an empty or missing title gives
    ``text.strip()``, and surrounding whitespace of the text itself is removed too.
    """
    title = doc.get("title") or ""
    return (title + " " + (doc.get("text") or "")).strip()


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    """Read the BEIR dataset in ``folder`` for ``split``; queries are those judged in the split.

    Raises :class:`InvalidInputError` naming the missing file, or the file and line number of
    a malformed line (bad JSON, no ``_id``, a duplicate id, a non-integer score), or a judged
    query that ``queries.jsonl`` lacks. The qrels header line is skipped when present
    (recognised by a non-integer third column).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInputError(f"no BEIR dataset folder at {folder}")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        found = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        hint = f"; splits found: {', '.join(found)}" if found else ""
        raise InvalidInputError(f"missing qrels file {qrels_path} for split {split!r}{hint}")
    qrels = _read_qrels(qrels_path)

    queries_path = folder / "queries.jsonl"
    all_queries = {qid: _text(row, path, n) for qid, row, path, n in _jsonl(queries_path)}
    missing = [qid for qid in qrels if qid not in all_queries]
    if missing:
        raise InvalidInputError(
            f"{len(missing)} judged queries are missing from {queries_path}, "
            f"e.g. {missing[0]!r}"
        )
    queries = {qid: all_queries[qid] for qid in qrels}

    corpus = {
        did: {"title": _text(row, path, n, "title", default=""), "text": _text(row, path, n)}
        for did, row, path, n in _jsonl(folder / "corpus.jsonl")
    }
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


def _jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any], Path, int]]:
    """``(_id, row, path, line number)`` per non-blank line, checking JSON and unique ids."""
    if not path.is_file():
        raise InvalidInputError(f"missing file {path}")
    seen: set[str] = set()
    with path.open(encoding="utf-8") as lines:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or row.get("_id") in (None, ""):
                raise InvalidInputError(f"{path}:{n}: expected a JSON object with an \"_id\"")
            rid = str(row["_id"])
            if rid in seen:
                raise InvalidInputError(f"{path}:{n}: duplicate _id {rid!r}")
            seen.add(rid)
            yield rid, row, path, n


def _text(
    row: Mapping[str, Any], path: Path, n: int, key: str = "text", default: str | None = None
) -> str:
    """``row[key]`` as a string (``default`` when absent or null); an error names the line."""
    value = row.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, str):
        raise InvalidInputError(f"{path}:{n}: \"{key}\" must be a string, got {value!r}")
    return value


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as lines:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != 3:
                raise InvalidInputError(
                    f"{path}:{n}: expected 3 tab-separated fields (query-id, corpus-id, score), "
                    f"got {len(fields)}"
                )
            qid, did, score = (f.strip() for f in fields)
            try:
                rel = int(score)
            except ValueError:
                if n == 1:  # the header line
                    continue
                raise InvalidInputError(f"{path}:{n}: score {score!r} is not an integer") from None
            if not qid or not did:
                raise InvalidInputError(f"{path}:{n}: empty query-id or corpus-id")
            judged = qrels.setdefault(qid, {})
            if did in judged:
                raise InvalidInputError(
                    f"{path}:{n}: duplicate judgment of {did!r} for query {qid!r}"
                )
            judged[did] = rel
    return qrels
