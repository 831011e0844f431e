"""SqlStore: items, vectors and the change log in any database SQLAlchemy speaks."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .. import testing_hooks
from ..errors import CorruptCollectionError, InvalidInputError, LatentSearchError
from .bulk import BulkInsert, Same, SelectByIds
from .bulk import chunks as _chunks
from .cluster_tables import ClusterTablesMixin
from .fulltext import FTS_TABLE, TEXT_VIEW, FullTextMixin
from .models import Base, Change, ClusterBase, Info
from .models import Item as ItemRow
from .reads import ReadMethods

ITEM_COLUMNS = ("id", "key", "source", "modality", "text", "metadata", "content_hash", "document", "file_size",
                "file_mtime_ns", "vector", "added_at")
COLLECTION_ID = "collection_id"  # the info row naming the collection the store belongs to
ITEM_FIELDS = ("id", "key", "source", "modality", "text", "metadata", "document")  # what get() returns


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


# Metadata as JSON text, byte for byte what json.dumps writes: one encoder made once instead of
# one per call, and no cycle check (metadata reaches the store as fresh trees from json_safe).
_JSON_TEXT = json.JSONEncoder(check_circular=False).encode
SQLITE_PAGE_SIZE = 16384
SQLITE_CACHE_KIB = 64 * 1024  # per connection, taken only as pages are used


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # 16 KiB pages: a fraction of the page writes of SQLite's default 4 KiB for rows that carry a
    # vector (1.5 KiB at 384-d). Takes effect only in a new, empty file.
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    # WAL: readers never block the writer; NORMAL: a killed process loses no committed batch.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # A write transaction of vectors is tens of MiB: a page cache that holds it is not spilled to
    # the WAL and rewritten in the middle of the transaction.
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def _hide_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (SQLAlchemyError, ValueError):
        return url.split(":", 1)[0] + ":…"


class SqlStore(ReadMethods, FullTextMixin, ClusterTablesMixin):
    """The store of one collection. ``schema`` (PostgreSQL) keeps collections apart in one database."""

    def __init__(self, url: str, dim: int, vector_dtype: str = "float32", schema: str | None = None):
        self.url, self.dim, self.schema = url, dim, schema
        self.dtype = np.dtype(vector_dtype)
        try:
            engine = create_engine(url, pool_pre_ping=True, json_serializer=_JSON_TEXT)
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
        # The write path's and the hits' statements, at the driver level (see bulk.py).
        self._item_insert = BulkInsert(ItemRow.__table__, ITEM_COLUMNS, engine.dialect, schema)
        self._change_insert = BulkInsert(Change.__table__, ("item_id", "op"), engine.dialect, schema)
        self._item_select = SelectByIds(ItemRow.__table__, ITEM_FIELDS, engine.dialect, schema)
        self.written_seq = 0  # the newest change this store object wrote (see _log_changes)
        self._fulltext: bool | None = None

    # -- schema -------------------------------------------------------------------------------

    def create(self, info: dict[str, str]) -> None:
        """Create the tables (and the schema) and record ``info``, in one transaction (on
        PostgreSQL a killed create leaves no half-made schema)."""
        try:
            with self.engine.begin() as conn:
                if self.schema:
                    conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                Base.metadata.create_all(conn)
                ClusterBase.metadata.create_all(conn)  # so that reading clusters never creates tables
                self._create_fulltext(conn)
                if info:  # replacing what a create before recorded
                    conn.execute(delete(Info).where(Info.name.in_(list(info))))
                    conn.execute(Info.__table__.insert(), [{"name": k, "value": v} for k, v in info.items()])
        except SQLAlchemyError as exc:
            raise LatentSearchError(f"cannot create the store at {self.safe_url}: {exc}") from exc

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database file, or None for another database (or an in-memory one)."""
        if self.engine.dialect.name != "sqlite":
            return None
        database = self.engine.url.database
        return Path(database) if database and database != ":memory:" and not database.startswith("file:") else None

    @property
    def location(self) -> str:
        """The store as a user would name it: its file, or its URL (and schema)."""
        if self.sqlite_file is not None:
            return str(self.sqlite_file)
        return self.safe_url + (f" (schema {self.schema})" if self.schema else "")

    def collection_id(self) -> str | None:
        """The id of the collection this store belongs to (None: made by an older version)."""
        return self.info().get(COLLECTION_ID)

    def set_info(self, name: str, value: str) -> None:
        with Session(self.engine) as session, session.begin():
            session.merge(Info(name=name, value=value))

    def vector_bytes(self) -> int | None:
        """The size in bytes of one stored vector (None when the store holds none)."""
        try:
            with Session(self.engine) as session:
                size = session.scalar(select(func.length(ItemRow.vector)).limit(1))
        except SQLAlchemyError as exc:
            raise CorruptCollectionError(f"cannot read the store at {self.safe_url}: {exc}") from exc
        return None if size is None else int(size)

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
                conn.exec_driver_sql(f"DROP VIEW IF EXISTS {TEXT_VIEW}")
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

    def set_info(self, name: str, value: str) -> None:
        """Record one fact about the collection (a write: hold the writer lock)."""
        with Session(self.engine) as session, session.begin():
            session.merge(Info(name=name, value=value))

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
            conn = session.connection()
            ids: list[int] = []
            if inserts:
                ids = self._next_ids(conn, len(inserts))
                self._insert_rows(conn, ids, {
                    "key": [item.key for item in inserts],
                    "source": [item.source for item in inserts],
                    "modality": [item.modality for item in inserts],
                    "text": [item.text for item in inserts],
                    "metadata": [item.metadata or {} for item in inserts],
                    "content_hash": [item.content_hash for item in inserts],
                    "document": [item.document if item.document is not None else item.key for item in inserts],
                    "file_size": [item.file_size for item in inserts],
                    "file_mtime_ns": [item.file_mtime_ns for item in inserts],
                    "vector": self._vector_blobs([item.vector for item in inserts]),
                }, now)
            if updates:
                # ORM bulk UPDATE by primary key: one executemany for the whole batch.
                rows = [{**self._row(item, now), "id": i} for i, item in updates.items()]
                for row in rows:
                    del row["added_at"]  # an update keeps the time the item first arrived
                session.execute(update(ItemRow), rows)
            for chunk in _chunks(list(deletes)):
                session.execute(delete(ItemRow).where(ItemRow.id.in_(chunk)))
            changed = [*ids, *updates, *deletes]
            ops = ["add"] * len(ids) + ["update"] * len(updates) + ["delete"] * len(deletes)
            if changed:
                self._log_changes(conn, changed, ops)
        testing_hooks.after_commit()
        return ids

    def insert_vectors(self, vectors: np.ndarray, metadata: Sequence[dict[str, Any]] | None = None) -> list[int]:
        """Rows for precomputed vectors (no key, source or text) and their metadata, in one
        transaction; returns their ids. Nothing is built per row but the metadata's JSON."""
        now = datetime.now(timezone.utc)
        n = len(vectors)
        with Session(self.engine) as session, session.begin():
            conn = session.connection()
            ids = self._next_ids(conn, n)
            none = Same(None)
            self._insert_rows(conn, ids, {
                "key": none, "source": none, "modality": Same("vector"), "text": none,
                "metadata": Same({}) if metadata is None else metadata, "content_hash": none, "document": none,
                "file_size": none, "file_mtime_ns": none,
                "vector": [row.tobytes() for row in self.stored_vectors(vectors)],
            }, now)
            self._log_changes(conn, ids, Same("add"))
        testing_hooks.after_commit()
        return ids

    def _next_ids(self, conn: Connection, n: int) -> list[int]:
        """Ids for ``n`` new rows, above every id ever used (the change log remembers deleted
        ones); assigned under the writer lock, so one plain executemany inserts the batch."""
        first = 1 + max(conn.scalar(select(func.max(ItemRow.id))) or 0, conn.scalar(select(func.max(Change.item_id))) or 0)
        return list(range(first, first + n))

    def _insert_rows(self, conn: Connection, ids: list[int], columns: dict[str, Any], now: datetime) -> None:
        """One driver-level executemany for the batch (see :mod:`.bulk`)."""
        self._item_insert.execute(conn, {"id": ids, **columns, "added_at": Same(now)}, len(ids))

    def _log_changes(self, conn: Connection, item_ids: Sequence[int], ops: Sequence[str] | Same) -> None:
        """Append to the change log; :attr:`written_seq` becomes the newest sequence number, which
        the writer hands to the index with the vectors (the index may apply them later)."""
        self._change_insert.execute(conn, {"item_id": item_ids, "op": ops}, len(item_ids))
        self.written_seq = int(conn.scalar(select(func.max(Change.seq))) or 0)

    def _vector_blobs(self, vectors: Sequence[np.ndarray]) -> list[bytes]:
        """Each vector as the stored bytes, converted as one matrix."""
        shapes = {np.shape(v) for v in vectors}
        if shapes != {(self.dim,)}:
            wrong = next(s for s in shapes if s != (self.dim,))
            raise InvalidInputError(f"vector of shape {wrong}, expected ({self.dim},)")
        return [row.tobytes() for row in self.stored_vectors(np.stack(vectors))]

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
        return self.stored_vectors(np.asarray(vector, dtype=np.float32)[None, :]).tobytes()

    def stored_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors as the store keeps them (its dtype); refused when a value does not fit it."""
        with np.errstate(over="ignore"):  # an overflow is refused just below, in words
            stored = np.asarray(vectors, dtype=np.float32).astype(self.dtype, copy=False)
        if not np.isfinite(stored).all():
            raise InvalidInputError(
                f"a vector has values beyond {self.dtype.name}'s range (largest {np.abs(vectors).max():g}); "
                "use vector_dtype='float32'"
            )
        return stored

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

    def replace_vectors(self, vectors: dict[int, np.ndarray]) -> None:
        """New vectors for existing items, one transaction, logged as updates."""
        if not vectors:
            return
        with Session(self.engine) as session, session.begin():
            rows = [{"id": i, "vector": self._row_vector(v)} for i, v in vectors.items()]
            session.execute(update(ItemRow), rows)
            self._log_changes(session.connection(), list(vectors), Same("update"))
        testing_hooks.after_commit()

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
