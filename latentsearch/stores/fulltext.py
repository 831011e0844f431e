"""The store's full-text index: SQLite FTS5 (BM25) or a PostgreSQL tsvector column with a GIN
index, kept in step with ``items.text`` by the database itself (see :mod:`latentsearch.query.hybrid`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    cast,
    column,
    func,
    inspect,
    literal,
    literal_column,
    select,
    table,
)
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import CorruptCollectionError, LatentSearchError
from .filters import compile_where
from .models import Item as ItemRow

FTS_TABLE = "items_fts"  # SQLite: the FTS5 index over items.text
TEXT_VIEW = "items_text"  # SQLite: the items that have text, the FTS5 index's content
TSV_COLUMN = "text_tsv"  # PostgreSQL: the generated tsvector column of items


def _idf(total: int, matching: int) -> float:
    """BM25's inverse document frequency (Lucene's form, never negative)."""
    return math.log(1 + (total - matching + 0.5) / (matching + 0.5))


class FullTextMixin:
    """Full-text methods of :class:`~latentsearch.stores.sql.SqlStore`."""

    engine: Engine
    schema: str | None
    safe_url: str
    _fulltext: bool | None

    def _create_fulltext(self, conn: Connection) -> None:
        """The full-text index over ``items.text`` (see :mod:`latentsearch.query.hybrid`)."""
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            # External content: the index stores only tokens; triggers keep it in step with items.
            # Its content is the items that have text (a view): a row per textless vector would
            # cost every insert a trigger run and a row of the index's own (BENCHMARKS.md) and
            # skew BM25's mean length, and FTS5 wants its index to match its content table exactly.
            conn.exec_driver_sql(
                f"CREATE VIEW IF NOT EXISTS {TEXT_VIEW} AS SELECT id, text FROM items WHERE text IS NOT NULL"
            )
            conn.exec_driver_sql(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
                f"text, content='{TEXT_VIEW}', content_rowid='id', tokenize='porter unicode61')"
            )
            add = f"INSERT INTO {FTS_TABLE}(rowid, text) SELECT new.id, new.text WHERE new.text IS NOT NULL;"
            remove = (
                f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) "
                f"SELECT 'delete', old.id, old.text WHERE old.text IS NOT NULL;"
            )
            for name, event, body in (
                ("ai", "INSERT ON items WHEN new.text IS NOT NULL", add),
                ("ad", "DELETE ON items WHEN old.text IS NOT NULL", remove),
                ("au", "UPDATE OF text ON items", remove + add),
            ):
                conn.exec_driver_sql(f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_{name} AFTER {event} BEGIN {body} END")
        elif dialect == "postgresql":
            items = f'"{self.schema}".items' if self.schema else "items"
            conn.exec_driver_sql(
                f"ALTER TABLE {items} ADD COLUMN IF NOT EXISTS {TSV_COLUMN} tsvector "
                f"GENERATED ALWAYS AS (to_tsvector('english', coalesce(text, ''))) STORED"
            )
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS items_{TSV_COLUMN}_idx ON {items} USING GIN ({TSV_COLUMN})")

    def has_fulltext(self) -> bool:
        """Whether the store has the full-text index (collections made before it had none)."""
        if self._fulltext is None:
            try:
                if self.engine.dialect.name == "sqlite":
                    with self.engine.connect() as conn:
                        found = conn.exec_driver_sql(
                            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (FTS_TABLE,)
                        ).first()
                    self._fulltext = found is not None
                elif self.engine.dialect.name == "postgresql":
                    columns = inspect(self.engine).get_columns("items", schema=self.schema)
                    self._fulltext = any(c["name"] == TSV_COLUMN for c in columns)
                else:
                    self._fulltext = False
            except SQLAlchemyError as exc:
                raise CorruptCollectionError(f"cannot read the store at {self.safe_url}: {exc}") from exc
        return self._fulltext

    def lexical_search(
        self, query: str, limit: int, where: Mapping[str, Any] | None = None
    ) -> list[tuple[int, float]]:
        """``(id, score)`` of the ``limit`` items whose text best matches ``query``, best first.

        Any query word may match (OR): SQLite ranks by FTS5's ``bm25()`` (score ``-bm25``, higher
        is better), PostgreSQL by the sum over query words of idf x ``ts_rank(..., 1)`` (BM25's idf
        from GIN-index counts: plain ``ts_rank``/``ts_rank_cd`` have no idf and score far lower
        on SciFact). The query is never parsed as query syntax:
        each word is quoted (see :mod:`latentsearch.query.hybrid`). ``where`` filters as in
        :meth:`count_where`.
        """
        from ..query.hybrid import MAX_TERMS, fts5_query, tsquery_or

        if not self.has_fulltext():
            raise LatentSearchError(
                f"the store at {self.safe_url} has no full-text index (it was made by an older version "
                "of latentsearch); create the collection again to use lexical or hybrid search"
            )
        dialect = self.engine.dialect.name
        condition = compile_where(where, dialect)
        with Session(self.engine) as session:
            if dialect == "sqlite":
                match = fts5_query(query)
                if match is None:
                    return []
                fts = table(FTS_TABLE, column("rowid"))
                rank = func.bm25(literal_column(FTS_TABLE))
                stmt = (
                    select(ItemRow.id, rank)
                    .join_from(fts, ItemRow, ItemRow.id == fts.c.rowid)
                    .where(literal_column(FTS_TABLE).op("MATCH")(match), condition)
                    .order_by(rank, ItemRow.id)
                    .limit(limit)
                )
                return [(int(i), -float(r)) for i, r in session.execute(stmt)]
            lexemes = session.scalar(
                select(func.tsvector_to_array(func.to_tsvector(literal_column("'english'"), query)))
            )
            terms = [t for t in (tsquery_or([lex]) for lex in (lexemes or [])[:MAX_TERMS]) if t]
            if not terms:
                return []
            tsv = literal_column(f"items.{TSV_COLUMN}")
            one = [cast(bindparam(f"t{i}", t), TSQUERY) for i, t in enumerate(terms)]
            # Document frequencies (GIN index lookups) for BM25's idf; ts_rank alone has no idf.
            counts = session.execute(
                select(
                    select(func.count()).select_from(ItemRow).scalar_subquery(),
                    *(select(func.count()).select_from(ItemRow).where(tsv.op("@@")(q)).scalar_subquery() for q in one),
                )
            ).one()
            total = int(counts[0])
            score = sum(
                (literal(_idf(total, int(n))) * func.ts_rank(tsv, q, 1) for q, n in zip(one, counts[1:])),
                literal(0.0),
            )
            anyterm = cast(bindparam("tsq", " | ".join(terms)), TSQUERY)
            stmt = (
                select(ItemRow.id, score.label("score"))
                .where(tsv.op("@@")(anyterm), condition)
                .order_by(literal_column("score").desc(), ItemRow.id)
                .limit(limit)
            )
            return [(int(i), float(r)) for i, r in session.execute(stmt)]
