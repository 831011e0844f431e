"""Whole rows in and out of a store, for ``latentsearch export`` and ``import``: every column of
every item (the file state and content hash included, so incremental indexing still knows the
files after a round trip), read in id order in bounded batches, and written back with the ids,
times and vectors they had, one transaction per batch with the change log."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import testing_hooks
from ..errors import InvalidInputError
from .models import Item as ItemRow
from .reads import keyset_batches

if TYPE_CHECKING:
    from .sql import SqlStore

COLUMNS = (
    "id", "key", "source", "modality", "text", "metadata", "document", "content_hash",
    "file_size", "file_mtime_ns", "added_at",
)


def iter_rows(store: SqlStore, batch_size: int = 10_000) -> Iterator[tuple[list[dict[str, Any]], np.ndarray]]:
    """``(rows, vectors)`` of every item in id order: each row a dict of :data:`COLUMNS`
    (``added_at`` an aware UTC datetime), ``vectors`` their ``(n, dim)`` float32 matrix."""
    fields = (
        ItemRow.id, ItemRow.key, ItemRow.source, ItemRow.modality, ItemRow.text, ItemRow.meta, ItemRow.document,
        ItemRow.content_hash, ItemRow.file_size, ItemRow.file_mtime_ns, ItemRow.added_at, ItemRow.vector,
    )
    for rows in keyset_batches(store.engine, fields, batch_size=batch_size):
        out = []
        for r in rows:
            row = dict(zip(COLUMNS, r[:-1]))
            row["metadata"] = row["metadata"] or {}
            row["added_at"] = _utc(row["added_at"])
            out.append(row)
        yield out, store._matrix([r[-1] for r in rows])


def insert_rows(store: SqlStore, rows: Sequence[dict[str, Any]], vectors: np.ndarray) -> int:
    """Insert ``rows`` (dicts of :data:`COLUMNS`) with their own ids and ``vectors`` in one
    transaction, logging each as an add; ids the store already has are left as they are (an
    import run again after a crash goes on where it stopped). Returns how many were inserted."""
    if len(rows) != len(vectors):
        raise InvalidInputError(f"{len(rows)} rows but {len(vectors)} vectors")
    if not len(rows):
        return 0
    ids = [int(r["id"]) for r in rows]
    with Session(store.engine) as session, session.begin():
        conn = session.connection()
        have = set(conn.scalars(select(ItemRow.id).where(ItemRow.id.in_(ids))))
        keep = [i for i, item_id in enumerate(ids) if item_id not in have]
        if not keep:
            return 0
        chosen = [rows[i] for i in keep]
        blobs = [row.tobytes() for row in store.stored_vectors(np.asarray(vectors)[keep])]
        columns = {name: [r.get(name) for r in chosen] for name in COLUMNS if name != "id"}
        columns["metadata"] = [m or {} for m in columns["metadata"]]
        columns["document"] = [d if d is not None else r.get("key") for d, r in zip(columns["document"], chosen)]
        store._item_insert.execute(conn, {"id": [ids[i] for i in keep], **columns, "vector": blobs}, len(keep))
        store._log_changes(conn, [ids[i] for i in keep], ["add"] * len(keep))
    testing_hooks.after_commit()
    return len(keep)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for the UTC times the store wrote."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value
