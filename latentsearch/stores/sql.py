"""SqlStore: items, vectors and the change log in any database SQLAlchemy speaks."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    cast,
    column,
    create_engine,
    delete,
    event,
    func,
    inspect,
    literal,
    literal_column,
    select,
    table,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..types import Item
from ..errors import CorruptCollectionError, InvalidInputError, LatentSearchError
from .filters import compile_where
from .models import Assignment, Base, Change, ClusterBase, ClusterRow, Info
from .models import Item as ItemRow

FTS_TABLE = "items_fts"  # SQLite: the FTS5 index over items.text
TSV_COLUMN = "text_tsv"  # PostgreSQL: the generated tsvector column of items
BATCH = 10_000  # ids per IN (...) clause: well under SQLite's limit of 32,766 variables


@dataclass
class NewItem:
    """A row to write: everything but the id, which the store assigns."""

    vector: np.ndarray
    modality: str
    key: str | None = None
    source: str | None = None
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    content_hash: str | None = None
    document: str | None = None  # defaults to the key
    file_size: int | None = None
    file_mtime_ns: int | None = None


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer; NORMAL: a killed process loses no committed batch.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return url.split(":", 1)[0] + ":…"


def _idf(total: int, matching: int) -> float:
    """BM25's inverse document frequency (Lucene's form, never negative)."""
    return math.log(1 + (total - matching + 0.5) / (matching + 0.5))


def _chunks(values: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class SqlStore:
    """The store of one collection. ``schema`` (PostgreSQL) keeps collections apart in one database."""

    def __init__(self, url: str, dim: int, vector_dtype: str = "float32", schema: str | None = None):
        self.url, self.dim, self.schema = url, dim, schema
        self.dtype = np.dtype(vector_dtype)
        try:
            engine = create_engine(url, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise InvalidInputError(f"cannot use the database URL {_hide_password(url)!r}: {exc}") from exc
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        if schema:
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
                raise InvalidInputError(f"invalid schema name {schema!r}")
            engine = engine.execution_options(schema_translate_map={None: schema})
        self.engine: Engine = engine
        self._writer_conn: Connection | None = None
        self._fulltext: bool | None = None

    # -- schema -------------------------------------------------------------------------------

    def create(self, info: dict[str, str]) -> None:
        """Create the tables (and the schema) and record ``info``."""
        try:
            with self.engine.begin() as conn:
                if self.schema:
                    conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                Base.metadata.create_all(conn)
                self._create_fulltext(conn)
            with Session(self.engine) as session, session.begin():
                for name, value in info.items():
                    session.merge(Info(name=name, value=value))
        except SQLAlchemyError as exc:
            raise LatentSearchError(f"cannot create the store at {self.safe_url}: {exc}") from exc

    def _create_fulltext(self, conn: Connection) -> None:
        """The full-text index over ``items.text`` (see :mod:`latentsearch.query.hybrid`)."""
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            # External content: the index stores only tokens; triggers keep it in step with items.
            conn.exec_driver_sql(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
                f"text, content='items', content_rowid='id', tokenize='porter unicode61')"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ai AFTER INSERT ON items BEGIN "
                f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ad AFTER DELETE ON items BEGIN "
                f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); END"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_au AFTER UPDATE OF text ON items BEGIN "
                f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); "
                f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END"
            )
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

    def exists(self) -> bool:
        try:
            return inspect(self.engine).has_table("info", schema=self.schema)
        except SQLAlchemyError as exc:
            raise LatentSearchError(f"cannot reach the store at {self.safe_url}: {exc}") from exc

    def check_schema(self) -> None:
        """An error naming what is missing when the tables are not the ones this version writes."""
        try:
            inspector = inspect(self.engine)
            for table in Base.metadata.sorted_tables:
                have = {c["name"] for c in inspector.get_columns(table.name, schema=self.schema)}
                missing = sorted({c.name for c in table.columns} - have)
                if missing:
                    raise CorruptCollectionError(
                        f"the store at {self.safe_url} lacks the columns {', '.join(missing)} of table "
                        f"{table.name!r}: it was made by an older development version of latentsearch; "
                        "create the collection again"
                    )
        except SQLAlchemyError as exc:
            raise CorruptCollectionError(f"cannot read the store at {self.safe_url}: {exc}") from exc

    def drop(self) -> None:
        """Remove the tables (and the schema); for external databases when a collection is deleted."""
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "sqlite":
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {FTS_TABLE}")
            Base.metadata.drop_all(conn)
            ClusterBase.metadata.drop_all(conn)
            if self.schema:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))

    def info(self) -> dict[str, str]:
        try:
            with Session(self.engine) as session:
                return {row.name: row.value for row in session.scalars(select(Info))}
        except SQLAlchemyError as exc:
            raise CorruptCollectionError(f"cannot read the store at {self.safe_url}: {exc}") from exc

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.release_writer()
        self.engine.dispose()

    # -- one writer per collection across machines (invariant 4) --------------------------------

    def try_acquire_writer(self) -> bool:
        """Take the database's writer lock for this collection; False if another session holds it.

        On PostgreSQL a session-level advisory lock keyed by the schema, held by a connection
        kept open until :meth:`release_writer`; SQLite needs none (the lock file covers it).
        """
        if self.engine.dialect.name != "postgresql" or self._writer_conn is not None:
            return True
        conn = self.engine.connect()
        key = f"latentsearch:{self.schema or 'public'}"
        got = conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": key}).scalar_one()
        conn.commit()
        if got:
            self._writer_conn = conn
        else:
            conn.close()
        return bool(got)

    def release_writer(self) -> None:
        if self._writer_conn is not None:
            conn, self._writer_conn = self._writer_conn, None
            try:
                conn.execute(text("SELECT pg_advisory_unlock_all()"))
                conn.commit()
            finally:
                conn.close()

    # -- writes: one transaction each, the change log written with the rows -------------------

    def write(
        self,
        inserts: Sequence[NewItem] = (),
        updates: dict[int, NewItem] | None = None,
        deletes: Sequence[int] = (),
    ) -> list[int]:
        """Insert, update and delete in one transaction; returns the new ids in input order."""
        now = datetime.now(timezone.utc)
        updates = updates or {}
        with Session(self.engine) as session, session.begin():
            ids: list[int] = []
            if inserts:
                # Ids are assigned here, under the writer lock, above every id ever used (the
                # change log remembers deleted ones), so one plain executemany inserts the batch.
                first = 1 + max(
                    session.scalar(select(func.max(ItemRow.id))) or 0,
                    session.scalar(select(func.max(Change.item_id))) or 0,
                )
                ids = list(range(first, first + len(inserts)))
                rows = [self._row(item, now) for item in inserts]
                for item_id, row in zip(ids, rows):
                    row["id"] = item_id
                    row["metadata"] = row.pop("meta")
                session.connection().execute(ItemRow.__table__.insert(), rows)
            if updates:
                # ORM bulk UPDATE by primary key: one executemany for the whole batch.
                rows = [{**self._row(item, now), "id": i} for i, item in updates.items()]
                for row in rows:
                    del row["added_at"]  # an update keeps the time the item first arrived
                session.execute(update(ItemRow), rows)
            for chunk in _chunks(list(deletes)):
                session.execute(delete(ItemRow).where(ItemRow.id.in_(chunk)))
            changes = (
                [{"item_id": i, "op": "add"} for i in ids]
                + [{"item_id": i, "op": "update"} for i in updates]
                + [{"item_id": i, "op": "delete"} for i in deletes]
            )
            if changes:
                session.connection().execute(Change.__table__.insert(), changes)
        return ids

    def _row(self, item: NewItem, now: datetime) -> dict[str, Any]:
        vector = np.asarray(item.vector, dtype=np.float32)
        if vector.shape != (self.dim,):
            raise InvalidInputError(f"vector of shape {vector.shape}, expected ({self.dim},)")
        stored = self._row_vector(vector)
        return {
            "key": item.key,
            "source": item.source,
            "modality": item.modality,
            "text": item.text,
            "meta": item.metadata or {},
            "content_hash": item.content_hash,
            "document": item.document if item.document is not None else item.key,
            "file_size": item.file_size,
            "file_mtime_ns": item.file_mtime_ns,
            "vector": stored,
            "added_at": now,
        }

    def _row_vector(self, vector: np.ndarray) -> bytes:
        stored = np.asarray(vector, dtype=np.float32).astype(self.dtype)
        if not np.isfinite(stored).all():
            raise InvalidInputError(
                f"a vector has values beyond {self.dtype.name}'s range (largest {np.abs(vector).max():g}); "
                "use vector_dtype='float32'"
            )
        return stored.tobytes()

    # -- reads --------------------------------------------------------------------------------

    def count(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(ItemRow)) or 0)

    def max_seq(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.max(Change.seq))) or 0)

    def get(self, ids: Sequence[int]) -> dict[int, Item]:
        """The items with these ids that exist, by id (one query per 10,000 ids)."""
        columns = (ItemRow.id, ItemRow.key, ItemRow.source, ItemRow.modality, ItemRow.text, ItemRow.meta, ItemRow.document)
        out: dict[int, Item] = {}
        with Session(self.engine) as session:
            for chunk in _chunks(list(dict.fromkeys(int(i) for i in ids))):
                for row in session.execute(select(*columns).where(ItemRow.id.in_(chunk))):
                    out[row.id] = Item(
                        row.id, row.key, row.source, row.modality, row.text, row.meta or {}, row.document
                    )
        return out

    def keys_to_ids(self, keys: Sequence[str]) -> dict[str, tuple[int, str | None]]:
        """``key -> (id, content_hash)`` for the keys that exist."""
        out: dict[str, tuple[int, str | None]] = {}
        with Session(self.engine) as session:
            for chunk in _chunks(list(dict.fromkeys(keys))):
                stmt = select(ItemRow.key, ItemRow.id, ItemRow.content_hash).where(ItemRow.key.in_(chunk))
                for key, item_id, digest in session.execute(stmt):
                    out[key] = (item_id, digest)
        return out

    def file_states(self, documents: Sequence[str]) -> dict[str, tuple[int | None, int | None]]:
        """``document -> (file_size, file_mtime_ns)`` as stored, for the documents that exist."""
        out: dict[str, tuple[int | None, int | None]] = {}
        columns = (ItemRow.document, ItemRow.file_size, ItemRow.file_mtime_ns)
        with Session(self.engine) as session:
            for chunk in _chunks(list(dict.fromkeys(documents))):
                for doc, size, mtime in session.execute(select(*columns).where(ItemRow.document.in_(chunk))):
                    out[doc] = (size, mtime)
        return out

    def set_file_states(self, states: dict[str, tuple[int, int]]) -> None:
        """Record new stats for documents whose content did not change (no change-log entry:
        nothing the index holds changed)."""
        if not states:
            return
        with Session(self.engine) as session, session.begin():
            for doc, (size, mtime) in states.items():
                session.execute(
                    update(ItemRow).where(ItemRow.document == doc).values(file_size=size, file_mtime_ns=mtime),
                    execution_options={"synchronize_session": False},
                )

    def vectors_by_hash(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """One stored vector for each content hash that some item has (for renamed or copied files)."""
        out: dict[str, np.ndarray] = {}
        with Session(self.engine) as session:
            for chunk in _chunks(list(dict.fromkeys(hashes))):
                stmt = select(ItemRow.content_hash, ItemRow.vector).where(ItemRow.content_hash.in_(chunk))
                for digest, blob in session.execute(stmt):
                    out.setdefault(digest, self._matrix([blob])[0])
        return out

    def file_documents(self) -> list[str]:
        """Documents that came from files (they have a stored file size)."""
        with Session(self.engine) as session:
            stmt = select(ItemRow.document).where(ItemRow.file_size.is_not(None)).distinct()
            return [d for d in session.scalars(stmt) if d is not None]

    def items_of_documents(self, documents: Sequence[str]) -> list[tuple[int, str | None]]:
        """``(id, key)`` of every item of these documents."""
        out: list[tuple[int, str | None]] = []
        with Session(self.engine) as session:
            for chunk in _chunks(list(documents)):
                stmt = select(ItemRow.id, ItemRow.key).where(ItemRow.document.in_(chunk))
                out += [(i, k) for i, k in session.execute(stmt)]
        return out

    def vectors(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(found_ids, vectors)`` for the ids that exist, in the order of ``ids``."""
        found: dict[int, bytes] = {}
        with Session(self.engine) as session:
            for chunk in _chunks(list(dict.fromkeys(int(i) for i in ids))):
                for item_id, blob in session.execute(select(ItemRow.id, ItemRow.vector).where(ItemRow.id.in_(chunk))):
                    found[item_id] = blob
        order = [int(i) for i in ids if int(i) in found]
        return np.array(order, dtype=np.int64), self._matrix([found[i] for i in order])

    # -- where filters (see stores/filters.py) -------------------------------------------------

    def count_where(self, where: Mapping[str, Any] | None) -> int:
        """How many items match the filter ``where``."""
        condition = compile_where(where, self.engine.dialect.name)
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(ItemRow).where(condition)) or 0)

    def iter_where(
        self, where: Mapping[str, Any] | None, vectors: bool = False, batch_size: int = 50_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """``(ids, vectors or None)`` of the items matching ``where``, in id order, in batches."""
        condition = compile_where(where, self.engine.dialect.name)
        columns = (ItemRow.id, ItemRow.vector) if vectors else (ItemRow.id,)
        last = -1
        while True:
            with Session(self.engine) as session:
                stmt = select(*columns).where(condition, ItemRow.id > last).order_by(ItemRow.id).limit(batch_size)
                rows = session.execute(stmt).all()
            if not rows:
                return
            last = rows[-1][0]
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            yield ids, self._matrix([r[1] for r in rows]) if vectors else None

    def ids(self) -> np.ndarray:
        """Every item id, ascending."""
        with Session(self.engine) as session:
            return np.fromiter(session.scalars(select(ItemRow.id).order_by(ItemRow.id)), dtype=np.int64)

    def iter_items(self, batch_size: int = 1000) -> Iterator[list[Item]]:
        """Every item (without vectors) in id order, in batches."""
        last = -1
        columns = (ItemRow.id, ItemRow.key, ItemRow.source, ItemRow.modality, ItemRow.text, ItemRow.meta, ItemRow.document)
        while True:
            with Session(self.engine) as session:
                stmt = select(*columns).where(ItemRow.id > last).order_by(ItemRow.id).limit(batch_size)
                rows = session.execute(stmt).all()
            if not rows:
                return
            last = rows[-1].id
            yield [Item(r.id, r.key, r.source, r.modality, r.text, r.meta or {}, r.document) for r in rows]

    def replace_vectors(self, vectors: dict[int, np.ndarray]) -> None:
        """New vectors for existing items, one transaction, logged as updates."""
        if not vectors:
            return
        with Session(self.engine) as session, session.begin():
            rows = [{"id": i, "vector": self._row_vector(v)} for i, v in vectors.items()]
            session.execute(update(ItemRow), rows)
            session.connection().execute(Change.__table__.insert(), [{"item_id": i, "op": "update"} for i in vectors])

    def iter_vectors(self, batch_size: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every ``(ids, vectors)`` in id order, in batches (keyset pagination, bounded memory)."""
        last = -1
        while True:
            with Session(self.engine) as session:
                stmt = select(ItemRow.id, ItemRow.vector).where(ItemRow.id > last).order_by(ItemRow.id).limit(batch_size)
                rows = session.execute(stmt).all()
            if not rows:
                return
            last = rows[-1][0]
            yield np.array([r[0] for r in rows], dtype=np.int64), self._matrix([r[1] for r in rows])

    def changed_since(self, seq: int) -> tuple[np.ndarray, int]:
        """Ids touched by changes after ``seq`` (each once) and the newest sequence number."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(Change.item_id, Change.seq).where(Change.seq > seq).order_by(Change.seq)
            ).all()
        if not rows:
            return np.zeros(0, dtype=np.int64), seq
        ids = np.array(list(dict.fromkeys(r[0] for r in rows)), dtype=np.int64)
        return ids, int(rows[-1][1])

    # -- the corpus clustering (see query/corpus_clusters.py) ----------------------------------

    CLUSTERS_SEQ = "clusters_seq"  # info row: the change seq the assignments are up to date with

    def ensure_cluster_tables(self) -> None:
        """Create the clustering's tables if this store has none yet (older stores lack them)."""
        try:
            with self.engine.begin() as conn:
                ClusterBase.metadata.create_all(conn, checkfirst=True)
        except SQLAlchemyError as exc:
            raise LatentSearchError(f"cannot create the cluster tables in {self.safe_url}: {exc}") from exc

    def has_clusters(self) -> bool:
        """Whether a clustering is stored."""
        try:
            if not inspect(self.engine).has_table(ClusterRow.__tablename__, schema=self.schema):
                return False
            with Session(self.engine) as session:
                return session.scalar(select(ClusterRow.id).limit(1)) is not None
        except SQLAlchemyError as exc:
            raise CorruptCollectionError(f"cannot read the store at {self.safe_url}: {exc}") from exc

    def replace_clusters(
        self,
        clusters: Sequence[dict[str, Any]],
        item_ids: np.ndarray,
        cluster_ids: np.ndarray,
        seq: int,
    ) -> None:
        """Replace the stored clustering in one transaction: ``clusters`` rows (``id, label,
        size, centroid (d,), representatives``), every item's cluster, and the change seq the
        assignments reflect."""
        self.ensure_cluster_tables()
        with Session(self.engine) as session, session.begin():
            session.execute(delete(Assignment))
            session.execute(delete(ClusterRow))
            rows = [
                {**c, "centroid": np.asarray(c["centroid"], dtype=np.float32).tobytes(),
                 "representatives": [int(i) for i in c.get("representatives", [])]}
                for c in clusters
            ]
            if rows:
                session.connection().execute(ClusterRow.__table__.insert(), rows)
            pairs = list(zip(np.asarray(item_ids).tolist(), np.asarray(cluster_ids).tolist()))
            for chunk in _chunks(pairs):
                session.connection().execute(
                    Assignment.__table__.insert(), [{"item_id": i, "cluster_id": c} for i, c in chunk]
                )
            session.merge(Info(name=self.CLUSTERS_SEQ, value=str(int(seq))))

    def load_clusters(self) -> list[dict[str, Any]]:
        """The stored clusters by id (``id, label, size, centroid, representatives``); [] if none."""
        if not self.has_clusters():
            return []
        with Session(self.engine) as session:
            rows = session.execute(select(ClusterRow).order_by(ClusterRow.id)).scalars().all()
            return [
                {"id": r.id, "label": r.label, "size": int(r.size),
                 "centroid": np.frombuffer(r.centroid, dtype=np.float32).copy(),
                 "representatives": list(r.representatives or [])}
                for r in rows
            ]

    def clusters_seq(self) -> int:
        """The change seq the stored assignments are up to date with (0 when never clustered)."""
        with Session(self.engine) as session:
            value = session.scalar(select(Info.value).where(Info.name == self.CLUSTERS_SEQ))
        return int(value) if value else 0

    def update_assignments(self, assigned: dict[int, int], gone: Sequence[int], seq: int) -> None:
        """Set the cluster of ``assigned`` items (insert or replace), drop the rows of ``gone``
        ids and record ``seq``, in one transaction (sizes are recounted)."""
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert
        with Session(self.engine) as session, session.begin():
            for chunk in _chunks(list(gone)):
                session.execute(delete(Assignment).where(Assignment.item_id.in_(chunk)))
            for chunk in _chunks(list(assigned.items())):
                stmt = upsert(Assignment).values([{"item_id": i, "cluster_id": c} for i, c in chunk])
                session.execute(
                    stmt.on_conflict_do_update(index_elements=["item_id"], set_={"cluster_id": stmt.excluded.cluster_id})
                )
            sizes = dict(
                session.execute(select(Assignment.cluster_id, func.count()).group_by(Assignment.cluster_id)).all()
            )
            for cid in session.scalars(select(ClusterRow.id)).all():
                session.execute(
                    update(ClusterRow).where(ClusterRow.id == cid).values(size=int(sizes.get(cid, 0))),
                    execution_options={"synchronize_session": False},
                )
            session.merge(Info(name=self.CLUSTERS_SEQ, value=str(int(seq))))

    def cluster_item_ids(self, cluster_id: int, limit: int | None = None) -> list[int]:
        """Ids of the stored items in a cluster, in id order."""
        with Session(self.engine) as session:
            stmt = (
                select(Assignment.item_id)
                .join(ItemRow, ItemRow.id == Assignment.item_id)
                .where(Assignment.cluster_id == int(cluster_id))
                .order_by(Assignment.item_id)
            )
            if limit is not None:
                stmt = stmt.limit(int(limit))
            return [int(i) for i in session.scalars(stmt)]

    def assignments(self, ids: Sequence[int]) -> dict[int, int]:
        """``item_id -> cluster_id`` for the given ids that have a cluster."""
        out: dict[int, int] = {}
        with Session(self.engine) as session:
            for chunk in _chunks(list(dict.fromkeys(int(i) for i in ids))):
                stmt = select(Assignment.item_id, Assignment.cluster_id).where(Assignment.item_id.in_(chunk))
                out.update({int(i): int(c) for i, c in session.execute(stmt)})
        return out

    def _matrix(self, blobs: list[bytes]) -> np.ndarray:
        if not blobs:
            return np.zeros((0, self.dim), dtype=np.float32)
        flat = np.frombuffer(b"".join(blobs), dtype=self.dtype)
        return np.ascontiguousarray(flat.reshape(len(blobs), self.dim), dtype=np.float32)

    def size_bytes(self) -> int | None:
        """Bytes the store takes on disk, where the database can say."""
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                path = self.engine.url.database
                return sum(p.stat().st_size for p in Path(path).parent.glob(Path(path).name + "*"))
            if self.engine.dialect.name == "postgresql":
                names = [t.name for t in Base.metadata.sorted_tables]
                schema = self.schema or "public"
                total = 0
                for name in names:
                    total += conn.execute(
                        text("SELECT pg_total_relation_size(CAST(:t AS regclass))"),
                        {"t": f'"{schema}"."{name}"'},
                    ).scalar_one()
                return int(total)
        return None
