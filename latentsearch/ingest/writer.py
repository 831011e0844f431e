"""Writer: every change to a collection goes through here, one operation at a time.

Each write operation (``add``, ``upsert``, ``delete``, ``index_paths``, ``reembed``, ``reindex``,
``cluster``) holds the collection's writer lock for its own length only: a thread mutex within
the process, a lock file beside the manifest across processes and, on PostgreSQL, an advisory
lock across machines. ``with writer.writing():`` holds it across several operations. On taking
the lock the index first catches up with what other processes wrote; on releasing it the index
snapshot is saved when enough changed since the last one (and always by ``close``). The first
write of a collection made by an older version gives it its collection id (``identity.bind``),
and writes remove temporary files that killed processes left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from ..config import MANIFEST, CollectionConfig, clean_stale_temps, read_manifest, write_manifest
from ..encoders.lazy import LazyEncoder
from ..errors import CollectionLockedError, InvalidInputError
from ..identity import bind
from ..indexes.faiss_index import FaissIndex
from ..indexes.selection import IndexSpec
from ..indexes.sync import INDEX_FILE, INDEX_META, IndexSync
from ..stores.sql import SqlStore
from ..types import Deleted, IndexReport, Skipped
from ..vectors import as_matrix, prepare
from .chunking import ChunkConfig
from .field_options import field_changes, remember_fields
from .pipeline import Progress, run_ingest
from .records import Record, checked_metadata, make_records, open_image
from .sources import RecordFields, records_from_paths

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
VECTOR_CHUNK = 16_384  # rows per transaction when adding precomputed vectors
NO_IDS = np.zeros(0, dtype=np.int64)
SAVE_EVERY = 50_000  # unsaved changes (or a tenth of the index, if more) that make a write save the snapshot


@dataclass
class WriteLock:
    """The collection's writer lock: re-entrant within a thread, exclusive across threads,
    processes and (PostgreSQL) machines."""

    path: Path
    store: SqlStore
    timeout: float = 10.0

    def __post_init__(self) -> None:
        self._mutex = threading.RLock()
        # Not thread-local: the pipeline's writer thread writes under its caller's hold.
        self._file = FileLock(str(self.path / LOCK_FILE), thread_local=False)
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self) -> bool:
        """Take the lock; True when this call took it first (the outermost hold)."""
        if not self._mutex.acquire(timeout=self.timeout if self.timeout >= 0 else -1):
            raise CollectionLockedError(f"another thread is writing to {self.path}; waited {self.timeout:g} s")
        self._depth += 1
        if self._depth > 1:
            return False
        try:
            self._file.acquire(timeout=self.timeout)
        except Timeout:
            self._release_mutex()
            raise CollectionLockedError(
                f"another process is writing to {self.path}; wait for it to finish (waited {self.timeout:g} s)"
            ) from None
        deadline = time.monotonic() + self.timeout
        while not self.store.try_acquire_writer():
            if time.monotonic() >= deadline:
                self._file.release(force=True)
                self._release_mutex()
                raise CollectionLockedError(
                    f"another process is writing to this collection's store ({self.store.safe_url}); "
                    f"wait for it to finish (waited {self.timeout:g} s)"
                )
            time.sleep(0.1)
        return True

    def release(self) -> None:
        if self._depth == 1:
            try:
                self.store.release_writer()
            finally:
                self._file.release(force=True)
        self._release_mutex()

    def _release_mutex(self) -> None:
        self._depth -= 1
        self._mutex.release()


ENGINES = ("local", "ray")


def check_engine(engine: str, actors: int | None) -> None:
    """Refuse an unknown engine, or actors without Ray, before anything is read."""
    if engine not in ENGINES:
        raise InvalidInputError(f"engine must be one of {', '.join(map(repr, ENGINES))}, not {engine!r}")
    if actors is not None and (engine != "ray" or isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise InvalidInputError(f"actors must be a positive number of Ray encoders (with engine='ray'), not {actors!r}")


class Writer:
    """Writes to a collection: the store, the encoder and the index, explicitly given."""

    def __init__(self, path: Path, config: CollectionConfig, store: SqlStore, encoder: LazyEncoder, sync: IndexSync):
        self.path, self.config, self.store, self.encoder, self.sync = path, config, store, encoder, sync
        self.lock = WriteLock(path, store)
        self._bound = False  # whether the manifest and the store were seen to name one collection id
        self._after_write: list[Any] = []  # callables run (holding the lock) before it is released

    def after_write(self, fn: Any) -> None:
        """Run ``fn()`` at the end of every write operation, still holding the lock."""
        self._after_write.append(fn)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the writer lock for the block (re-entrant): one write operation, or several."""
        outermost = self.lock.acquire()
        try:
            if outermost:
                clean_stale_temps(self.path, (INDEX_FILE, INDEX_META, MANIFEST))  # a killed save's
                self.sync.catch_up()  # what other processes wrote, before this process writes
                if not self._bound:
                    self.config = bind(self.path, self.config, self.store)
                    self.sync.bound(self.config.collection_id)  # type: ignore[arg-type]
                    self._bound = True
            yield
            if outermost:
                self._finish()
        finally:
            self.lock.release()

    def _finish(self) -> None:
        """End of a write operation: the index thread drained, derived data brought up to date,
        and the snapshot saved when the change log to replay has grown long."""
        self.sync.wait()
        wanted = self.sync.outgrown()
        if wanted is not None:
            log.info("the collection outgrew its index: rebuilding it as %s", wanted)
            self.sync.rebuild()
        self.sync.tune()  # when built, rebuilt or grown 2x since the last tuning
        self._record_tuning()
        for fn in self._after_write:
            fn()
        # The index was caught up when the lock was taken: no second look at the change log.
        if self.sync.unsaved >= max(SAVE_EVERY, self.sync.ntotal // 10):
            self.sync.save()

    def _record_tuning(self) -> None:
        """Put the index's tuning into the manifest when it changed (the manifest on disk is
        read again first: another process may have reindexed since this one opened it)."""
        tuning = self.sync.tuning.to_dict() if self.sync.tuning is not None else None
        if tuning == self.config.index_tuning:
            return
        on_disk = read_manifest(self.path)
        if on_disk.index != self.sync.spec:
            log.info("not recording the index tuning: another process changed the index spec")
            return
        self.config = on_disk.replace(index_tuning=tuning)
        write_manifest(self.path, self.config)

    def save(self, wait: bool = True) -> bool:
        """Save the index snapshot if it is behind the store, taking the lock (with
        ``wait=False`` only if no other process holds it). Returns whether it wrote one."""
        self.sync.wait()
        if not self.sync.behind:
            return False
        timeout = self.lock.timeout
        if not wait:
            self.lock.timeout = 0
        try:
            with self.writing():
                return self.sync.save()
        except CollectionLockedError:
            log.info("not saving the index snapshot of %s: another process is writing", self.path)
            return False
        finally:
            self.lock.timeout = timeout

    # -- add and upsert: all or nothing ---------------------------------------------------------

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
        with self.writing():
            self._check_all_or_nothing(records, allow_existing=False)
            return list(self.add_records(records, batch_size=batch_size, on_conflict="error").ids)

    def _add_vectors(self, matrix: np.ndarray, metadata: Sequence[dict[str, Any]] | None) -> list[int]:
        """Precomputed vectors without keys go straight to the store in transactions of
        :data:`VECTOR_CHUNK` rows, each then handed to the index thread; everything is checked
        before the first row is written. Without keys a retry after a crash adds them again:
        give keys (``upsert``) to make a large load resumable."""
        metas = checked_metadata(metadata, len(matrix))
        vectors = prepare(matrix, self.config.dim, self.config.metric)
        self.store.stored_vectors(vectors)  # a value the store's dtype cannot hold fails here
        ids: list[int] = []
        with self.writing():
            for start in range(0, len(vectors), VECTOR_CHUNK):
                part = vectors[start : start + VECTOR_CHUNK]
                new = self.store.insert_vectors(part, metas[start : start + VECTOR_CHUNK] if metas else None)
                self.sync.submit(np.asarray(new, dtype=np.int64), part, NO_IDS, self.store.written_seq)
                ids += new
        return ids

    def upsert(
        self,
        inputs: Sequence[Any] | np.ndarray,
        keys: Sequence[str],
        metadata: Sequence[dict[str, Any]] | None = None,
        batch_size: int = 64,
    ) -> list[int]:
        """Add or replace by key; returns each input's id (an updated item keeps its id).
        Without ``metadata`` a replaced item keeps its stored metadata; with it, the given
        metadata replaces the stored (``{}`` clears it)."""
        records = make_records(inputs, metadata, keys)
        with self.writing():
            self._check_all_or_nothing(records, allow_existing=True)
            if metadata is None:
                existing = self.store.keys_to_ids([r.key for r in records if r.key is not None])
                stored = self.store.get([i for i, _ in existing.values()])
                for r in records:
                    if r.key in existing:
                        r.metadata = dict(stored[existing[r.key][0]].metadata)
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
                record.vector = as_matrix(record.vector, dim, f"vector {i}")[0]
            if record.image_path is not None:
                try:
                    open_image(record.image_path)
                except Exception as exc:
                    raise InvalidInputError(f"cannot read the image {record.image_path}: {exc}") from exc
        needs_model = any(r.modality != "vector" for r in records)
        if needs_model and not self.encoder.present:
            kinds = sorted({r.modality for r in records if r.modality != "vector"})
            raise InvalidInputError(
                f"this collection stores precomputed vectors only and cannot encode {' or '.join(kinds)}"
            )

    # -- streams of records and files -------------------------------------------------------------

    def index_paths(
        self,
        paths: Iterable[str | Path],
        fields: RecordFields = RecordFields(),
        batch_size: int = 64,
        progress: Progress | None = None,
        prune: bool = False,
        chunking: ChunkConfig | None = ChunkConfig(),
        engine: str = "local",
        actors: int | None = None,
    ) -> IndexReport:
        """Index files and folders (text, images, JSONL/CSV records); unchanged files are skipped.

        Long texts are split into passages that fit the encoder (``chunking=None`` truncates
        instead, as the model would); ``prune`` then deletes the items of files that are gone
        from the given folders. ``engine="ray"`` reads and encodes on the Ray cluster this
        process is connected to (``latentsearch.distributed.cluster.connect``; a local one is
        started when there is none) with ``actors`` encoders (default: one per GPU, else per
        CPU), and writes here, each batch in its own transaction.
        """
        check_engine(engine, actors)
        paths = list(paths)
        with self.writing():
            changes = field_changes(self.store, paths, fields)
            for change in changes:  # said before anything is replaced
                log.warning("%s was %s", change.source, change.reason)
            report = self.add_records(
                records_from_paths(paths, fields), batch_size, "update", progress, chunking, engine, actors
            )
            report.warnings[:0] = changes
            remember_fields(self.store, paths, fields)
            if prune:
                report.pruned = self.prune(paths)
        return report

    def prune(self, folders: Iterable[str | Path]) -> int:
        """Delete the items of files under ``folders`` that no longer exist; returns how many."""
        roots = [Path(f).expanduser().resolve() for f in folders if Path(f).expanduser().is_dir()]
        with self.writing():
            gone = [
                doc for doc in self.store.file_documents()
                if any(Path(doc).is_relative_to(root) for root in roots) and not Path(doc).exists()
            ]
            return int(self.delete(ids=[i for i, _ in self.store.items_of_documents(gone)])) if gone else 0

    def add_records(
        self,
        records: Iterable[Record | Skipped],
        batch_size: int = 64,
        on_conflict: str = "update",
        progress: Progress | None = None,
        chunking: ChunkConfig | None = None,
        engine: str = "local",
        actors: int | None = None,
    ) -> IndexReport:
        """Encode and store records batch by batch, each batch one transaction; with
        ``chunking``, long texts become passages linked to their document (``engine``,
        ``actors``: see :meth:`index_paths`)."""
        check_engine(engine, actors)
        if on_conflict not in ("update", "error"):
            raise InvalidInputError(f"on_conflict must be 'update' or 'error', not {on_conflict!r}")
        if batch_size <= 0:
            raise InvalidInputError(f"batch size must be positive, got {batch_size}")
        with self.writing():
            return run_ingest(self, records, batch_size, on_conflict, progress, chunking, engine, actors)

    def delete(self, ids: Sequence[int] = (), keys: Sequence[str] = ()) -> Deleted:
        """Delete items by id and/or key; returns how many existed (with the ids and keys that
        named no item as ``.missing_ids`` and ``.missing_keys``). Once it returns, no search
        in this process returns a deleted item."""
        with self.writing():
            by_key = self.store.keys_to_ids(list(keys))
            wanted = [int(i) for i in ids] + [i for i, _ in by_key.values()]
            present = list(self.store.get(wanted))
            if present:
                with self.sync.writing():  # no search between the commit and the index's removal
                    self.store.write(deletes=present)
                    gone = np.array(present, dtype=np.int64)
                    self.sync.apply(NO_IDS, np.zeros((0, self.config.dim), np.float32), gone, self.store.written_seq)
        found = set(present)
        missing_ids = [int(i) for i in ids if int(i) not in found]
        return Deleted(len(present), missing_ids, [k for k in keys if k not in by_key])

    # -- whole-collection operations ---------------------------------------------------------------

    def reindex(self, index: str | None = None) -> FaissIndex:
        """Rebuild the index from the stored vectors (with a new spec when given), never re-encoding."""
        spec = IndexSpec.parse(index or self.config.index)
        if not spec.is_auto:
            FaissIndex(spec.factory, self.config.dim, self.config.metric)  # a bad spec fails first
        with self.writing():
            self.sync.rebuild(str(spec))
            tuning = self.sync.tune(force=True)
            built = self.sync.load()  # a fallback of ``auto`` to exact search replaced it
            self.sync.save()
            self.config = self.config.replace(index=str(spec), index_tuning=tuning.to_dict() if tuning else None)
            write_manifest(self.path, self.config)
        return built

    def reembed(self, batch_size: int = 64, progress: Progress | None = None) -> IndexReport:
        """Encode every stored item again with the encoder as it is now (after its weights or
        preprocessing changed); see :func:`latentsearch.ingest.reembed.reembed`."""
        from .reembed import reembed

        with self.writing():
            encoder = self.encoder.get(allow_changed=True)
            report = reembed(self.store, self.sync, encoder, self.config, batch_size, progress)  # type: ignore[arg-type]
            self.sync.save()
            self.config = self.config.replace(encoder_fingerprint=encoder.fingerprint())  # type: ignore[union-attr]
            self.encoder.repinned(self.config.encoder_fingerprint)
            write_manifest(self.path, self.config)
        return report
