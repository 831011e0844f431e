"""The read methods of :class:`~latentsearch.stores.sql.SqlStore`: items and their vectors by id,
key, document and content hash, metadata filters, scans in id order and the change log."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select, true
from sqlalchemy.orm import Session

from ..types import Item
from .bulk import SelectByIds
from .bulk import chunks as _chunks
from .filters import compile_where
from .models import Change
from .models import Item as ItemRow


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def stored_ids(ids: Sequence[int]) -> list[int]:
    """``ids`` as distinct ints in order, without those no row can have: the store's ids are
    64-bit, and a larger Python int would fail to bind (an OverflowError) instead of not matching."""
    return [i for i in dict.fromkeys(int(i) for i in ids) if INT64_MIN <= i <= INT64_MAX]


def keyset_batches(
    engine: Engine, columns: Sequence[Any], condition: Any = None, batch_size: int = 50_000, after: int = -1
) -> Iterator[list[Any]]:
    """Rows of ``columns`` (the first is ``ItemRow.id``) that match ``condition``, in id order,
    ``batch_size`` at a time, ids above ``after``: keyset pagination, each batch in its own short
    session, so memory stays bounded and no transaction is held across batches."""
    condition = true() if condition is None else condition
    while True:
        with Session(engine) as session:
            stmt = select(*columns).where(condition, ItemRow.id > after).order_by(ItemRow.id).limit(batch_size)
            rows = session.execute(stmt).all()
        if not rows:
            return
        after = rows[-1][0]
        yield rows


class ReadMethods:
    """Mixed into :class:`~latentsearch.stores.sql.SqlStore`."""

    # provided by SqlStore
    engine: Engine
    dim: int
    dtype: np.dtype
    _item_select: SelectByIds

    def count(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count()).select_from(ItemRow)) or 0)

    def max_seq(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.max(Change.seq))) or 0)

    def get(self, ids: Sequence[int]) -> dict[int, Item]:
        """The items with these ids that exist, by id (one query per 10,000 ids); ids beyond
        64-bit integers name no item and are left out like any other missing id."""
        wanted = stored_ids(ids)
        out: dict[int, Item] = {}
        if not wanted:
            return out
        with self.engine.connect() as conn:
            for i, key, source, modality, text, meta, document in self._item_select.rows(conn, wanted):
                out[i] = Item(i, key, source, modality, text, meta or {}, document)
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
        """``(found_ids, vectors)`` for the ids that exist, in the order of ``ids`` (ids beyond
        64-bit integers exist nowhere)."""
        found: dict[int, bytes] = {}
        with Session(self.engine) as session:
            for chunk in _chunks(stored_ids(ids)):
                for item_id, blob in session.execute(select(ItemRow.id, ItemRow.vector).where(ItemRow.id.in_(chunk))):
                    found[item_id] = blob
        order = [int(i) for i in ids if int(i) in found]
        return np.array(order, dtype=np.int64), self._matrix([found[i] for i in order])

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
        for rows in keyset_batches(self.engine, columns, condition, batch_size):
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            yield ids, self._matrix([r[1] for r in rows]) if vectors else None

    def ids(self) -> np.ndarray:
        """Every item id, ascending."""
        with Session(self.engine) as session:
            return np.fromiter(session.scalars(select(ItemRow.id).order_by(ItemRow.id)), dtype=np.int64)

    def iter_items(self, batch_size: int = 1000) -> Iterator[list[Item]]:
        """Every item (without vectors) in id order, in batches."""
        columns = (ItemRow.id, ItemRow.key, ItemRow.source, ItemRow.modality, ItemRow.text, ItemRow.meta, ItemRow.document)
        for rows in keyset_batches(self.engine, columns, batch_size=batch_size):
            yield [Item(r.id, r.key, r.source, r.modality, r.text, r.meta or {}, r.document) for r in rows]

    def iter_vectors(
        self, batch_size: int = 50_000, start: int | None = None, stop: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every ``(ids, vectors)`` in id order, in batches (keyset pagination, bounded memory);
        ``start``/``stop``: only the ids in ``[start, stop)`` (one shard of an index build)."""
        after = -1 if start is None else int(start) - 1
        bound = ItemRow.id < int(stop) if stop is not None else None
        for rows in keyset_batches(self.engine, (ItemRow.id, ItemRow.vector), bound, batch_size, after):
            yield np.array([r[0] for r in rows], dtype=np.int64), self._matrix([r[1] for r in rows])

    def id_boundaries(self, parts: int) -> list[int]:
        """``parts + 1`` ids that cut the items into ``parts`` ranges ``[b[i], b[i+1])`` of about
        equal count, in id order: the first is the smallest id, the last one past the largest
        (fewer ranges when there are fewer items; ``[]`` when there are none). One indexed
        ``OFFSET`` query per cut, no id list in memory."""
        n = self.count()
        if not n:
            return []
        parts = max(1, min(int(parts), n))
        cuts = []
        with Session(self.engine) as session:
            for offset in [i * n // parts for i in range(parts)]:
                stmt = select(ItemRow.id).order_by(ItemRow.id).offset(offset).limit(1)
                cuts.append(int(session.scalar(stmt)))  # type: ignore[arg-type]
            cuts.append(int(session.scalar(select(func.max(ItemRow.id)))) + 1)  # type: ignore[arg-type]
        return sorted(set(cuts))

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

    def _matrix(self, blobs: list[bytes]) -> np.ndarray:
        if not blobs:
            return np.zeros((0, self.dim), dtype=np.float32)
        flat = np.frombuffer(b"".join(blobs), dtype=self.dtype)
        return np.ascontiguousarray(flat.reshape(len(blobs), self.dim), dtype=np.float32)
