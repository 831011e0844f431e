"""The write methods of :class:`~latentsearch.collection.Collection`: ``add`` and ``upsert`` (all
or nothing), ``index_paths`` and ``add_records`` (the streaming pipeline of
:mod:`latentsearch.ingest.pipeline`), ``prune`` and ``delete``. Each takes the collection's writer
lock first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..types import IndexReport, Skipped
from ..vectors import as_matrix, prepare
from .chunking import ChunkConfig
from .index_feed import IndexFeed
from .pipeline import run_ingest
from .records import Record, checked_metadata, make_records, open_image
from .sources import RecordFields, records_from_paths

if TYPE_CHECKING:
    from ..config import CollectionConfig
    from ..stores.sql import SqlStore

VECTOR_CHUNK = 16_384  # rows per transaction when adding precomputed vectors
NO_IDS = np.zeros(0, dtype=np.int64)
Progress = Callable[[int], None]


class WriteMethods:
    """Mixed into :class:`~latentsearch.collection.Collection`."""

    # provided by Collection
    store: SqlStore
    config: CollectionConfig

    _writer: Callable[[], None]  # takes the writer lock (once) and brings the index up to date
    _index_feed: Callable[[], IndexFeed]
    _catch_up: Callable[[], None]

    def add(
        self,
        inputs: Sequence[Any] | np.ndarray,
        metadata: Sequence[dict[str, Any]] | None = None,
        keys: Sequence[str] | None = None,
        batch_size: int = 64,
    ) -> list[int]:
        """Add texts (``str``), images (PIL images or ``Path``s to image files) or a 2-D array of
        precomputed vectors; returns the new ids in order. A key that exists already is an error."""
        if isinstance(inputs, np.ndarray) and inputs.ndim == 2:
            inputs = as_matrix(inputs, self.config.dim)  # checked once, not row by row
            if keys is None:
                return self._add_vectors(inputs, metadata)
        records = make_records(inputs, metadata, keys)
        self._check_all_or_nothing(records, allow_existing=False)
        return list(self.add_records(records, batch_size=batch_size, on_conflict="error").ids)

    def _add_vectors(self, matrix: np.ndarray, metadata: Sequence[dict[str, Any]] | None) -> list[int]:
        """Precomputed vectors without keys: nothing to read, encode or compare with the store, so
        they go straight to it in transactions of :data:`VECTOR_CHUNK` rows, each then handed to
        the index thread. Everything is checked before the first row is written."""
        metas = checked_metadata(metadata, len(matrix))
        vectors = prepare(matrix, self.config.dim, self.config.metric)
        self.store.stored_vectors(vectors)  # a value the store's dtype cannot hold fails here
        self._writer()
        feed, ids = self._index_feed(), []
        for start in range(0, len(vectors), VECTOR_CHUNK):
            part = vectors[start : start + VECTOR_CHUNK]
            new = self.store.insert_vectors(part, metas[start : start + VECTOR_CHUNK] if metas else None)
            feed.submit(np.asarray(new, dtype=np.int64), part, NO_IDS, self.store.written_seq)
            ids += new
        return ids

    def upsert(
        self,
        inputs: Sequence[Any] | np.ndarray,
        keys: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
        batch_size: int = 64,
    ) -> list[int]:
        """Add or replace by key; returns each input's id (an updated item keeps its id)."""
        records = make_records(inputs, metadata, keys)
        self._check_all_or_nothing(records, allow_existing=True)
        return list(self.add_records(records, batch_size=batch_size, on_conflict="update").ids)

    def _check_all_or_nothing(self, records: list[Record], allow_existing: bool) -> None:
        """Refuse a whole ``add``/``upsert`` call before writing anything if any input is bad."""
        keys = [r.key for r in records if r.key is not None]
        if len(set(keys)) != len(keys):
            twice = next(k for k in keys if keys.count(k) > 1)
            raise InvalidInputError(f"key {twice!r} is given twice")
        if not allow_existing and (existing := self.store.keys_to_ids(keys)):
            raise InvalidInputError(f"key {next(iter(existing))!r} exists already; use upsert() to replace it")
        dim = self.config.dim
        for i, record in enumerate(records):
            v = record.vector
            if isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape == (dim,):
                continue  # a row of a matrix add() already checked, or a clean vector
            if v is not None:
                if np.ndim(record.vector) != 1:
                    shape = np.shape(record.vector)
                    raise InvalidInputError(f"vector {i} has shape {shape}; each input is one 1-D vector")
                record.vector = as_matrix(record.vector, self.config.dim, f"vector {i}")[0]
            if record.image_path is not None:
                try:
                    open_image(record.image_path)
                except Exception as exc:
                    raise InvalidInputError(f"cannot read the image {record.image_path}: {exc}") from exc

    def index_paths(
        self,
        paths: Iterable[str | Path],
        fields: RecordFields = RecordFields(),
        batch_size: int = 64,
        progress: Progress | None = None,
        prune: bool = False,
        chunking: ChunkConfig | None = ChunkConfig(),
    ) -> IndexReport:
        """Index files and folders (text, images, JSONL/CSV records); unchanged files are skipped.

        Long texts are split into passages that fit the encoder (``chunking=None`` truncates
        instead, as the model would); ``prune`` then deletes the items of files that are gone
        from the given folders.
        """
        paths = list(paths)
        records = records_from_paths(paths, fields)
        report = self.add_records(records, batch_size, "update", progress, chunking=chunking)
        if prune:
            report.pruned = self.prune(paths)
        return report

    def prune(self, folders: Iterable[str | Path]) -> int:
        """Delete the items of files under ``folders`` that no longer exist; returns how many."""
        roots = [Path(f).expanduser().resolve() for f in folders if Path(f).expanduser().is_dir()]
        gone = [
            doc for doc in self.store.file_documents()
            if any(Path(doc).is_relative_to(root) for root in roots) and not Path(doc).exists()
        ]
        return self.delete(ids=[i for i, _ in self.store.items_of_documents(gone)]) if gone else 0

    def add_records(
        self,
        records: Iterable[Record | Skipped],
        batch_size: int = 64,
        on_conflict: str = "update",
        progress: Progress | None = None,
        chunking: ChunkConfig | None = None,
    ) -> IndexReport:
        """Encode and store records chunk by chunk, each chunk one transaction; with
        ``chunking``, long texts become passages linked to their document."""
        if on_conflict not in ("update", "error"):
            raise InvalidInputError(f"on_conflict must be 'update' or 'error', not {on_conflict!r}")
        if batch_size <= 0:
            raise InvalidInputError(f"batch size must be positive, got {batch_size}")
        self._writer()
        return run_ingest(self, records, batch_size, on_conflict, progress, chunking)

    def delete(self, ids: Sequence[int] = (), keys: Sequence[str] = ()) -> int:
        """Delete items by id and/or key; returns how many existed."""
        self._writer()
        wanted = [int(i) for i in ids] + [i for i, _ in self.store.keys_to_ids(list(keys)).values()]
        present = list(self.store.get(wanted))
        if present:
            self.store.write(deletes=present)
            self._catch_up()
        return len(present)
