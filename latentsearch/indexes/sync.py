"""IndexSync: the one owner of a collection's FAISS index, its watermark and its snapshot.

The index is derived from the store (invariant 1): it holds every item's vector up to a change
sequence number, the *watermark*. Everything that changes the index happens here, under one
readers–writer lock, so any number of threads may search while writes are applied one at a time
and never half-way through a search:

- :meth:`load` reads the snapshot or rebuilds from the store (also when the snapshot belongs to
  another collection, or a sample of its vectors is not the store's); :meth:`catch_up` applies
  the store's changes after the watermark (other processes' writes, what a crash left unapplied);
- :meth:`apply` puts one committed write of this process into the index, and :meth:`submit` does
  the same in a background thread so the next transaction overlaps it;
- :meth:`save` writes the snapshot atomically; :meth:`rebuild` builds a fresh index;
- :meth:`tune` measures the search depth that meets the spec's recall target (write path only);
  the result, :attr:`tuning`, is the manifest's to keep and is handed back at construction.

Properties are cheap. What may read the store, wait, hash a file or rebuild is a named call; the
searching side reaches the index through :meth:`reading`, which loads it the first time (logged)
and checks the store for other processes' writes as often as ``consistency_interval`` says.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fasteners
import numpy as np

from .consistency import VERIFY_SAMPLE, differing, not_changed_since, snapshot_differs, vector_sample
from .faiss_index import FaissIndex, Snapshot
from .ondisk_build import OnDiskBuilds, load_any, save_snapshot
from .selection import AUTO_HNSW_BYTES, IndexSpec, choose_auto
from .tuning import TUNE_MIN_VECTORS, Tuning, exact_tuning, held_out, rescore_tunable, search_param, tune, tune_auto

if TYPE_CHECKING:
    from ..stores.sql import SqlStore

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
INDEX_META = "index.json"
ChangeListener = Callable[["np.ndarray | None"], None]  # None: any item may have changed


class IndexSync:
    """The index of one collection, kept in step with its store.

    ``consistency_interval``: seconds between checks of the store for writes made by other
    processes before a search (``0``: before every search; ``None``: never after the first load;
    a process always sees its own writes at once).
    """

    def __init__(
        self,
        folder: Path,
        store: SqlStore,
        dim: int,
        metric: str,
        spec: str,
        consistency_interval: float | None = 0.0,
        tuning: dict[str, Any] | None = None,
    ):
        self.folder, self.store, self.dim, self.metric = folder, store, dim, metric
        self.spec = spec
        self.tuning: Tuning | None = Tuning.from_dict(tuning)  # the manifest's, then this process's
        self.consistency_interval = consistency_interval
        self._index: FaissIndex | None = None
        self._watermark = 0
        self._saved_watermark = -1
        self._checked_at = -math.inf
        self._rw = fasteners.ReaderWriterLock()
        self._load_lock = threading.Lock()
        self._feed: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        self._submitted = 0  # the newest change handed to the index thread
        self._listeners: list[ChangeListener] = []
        self.collection_id: str | None = None  # the store's, read on load; written into snapshots
        self.on_disk = OnDiskBuilds()  # how on-disk specs build their shards (Collection.reindex sets it)

    # -- cheap state ---------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._index is not None

    @property
    def watermark(self) -> int:
        """The last change sequence number the in-memory index holds."""
        return self._watermark

    @property
    def unsaved(self) -> int:
        """Changes the index holds that its snapshot does not (all of them before a first save)."""
        return self._watermark - max(self._saved_watermark, 0) if self._index is not None else 0

    @property
    def ntotal(self) -> int:
        """Vectors in the in-memory index (0 before it is loaded); never loads or waits."""
        index = self._index
        return index.ntotal if index is not None else 0

    @property
    def behind(self) -> bool:
        """Whether the snapshot on disk lacks changes the in-memory index holds."""
        return self._index is not None and self._watermark != self._saved_watermark

    def on_change(self, listener: ChangeListener) -> None:
        """Call ``listener(ids)`` with the ids of updated and deleted items whenever the index
        applies them, under the write lock (e.g. to drop them from a cache of items)."""
        self._listeners.append(listener)

    # -- loading -------------------------------------------------------------------------------

    def load(self) -> FaissIndex:
        """The index, read from its snapshot or rebuilt from the store when there is none
        usable (logged), then brought up to the store's state."""
        with self._load_lock:
            if self._index is None:
                search = IndexSpec.parse(self.spec).search
                self.collection_id = self.store.collection_id()
                loaded = load_any(
                    self.folder, INDEX_FILE, INDEX_META, self.dim, self.metric, search, self.store.changed_since
                )
                refused = self._refused(*loaded) if loaded is not None else (logging.INFO, "no usable snapshot")
                if refused is not None:
                    level, why = refused
                    log.log(level, "building the index of %s from the store (%s)", self.folder, why)
                    self._install(*self._build(self.spec, on_open=True))
                else:
                    index, snap = loaded  # type: ignore[misc]
                    index.search_options = self._options(self.spec, index.factory)
                    index.vectors = self.store.vectors
                    with self._rw.write_lock():
                        self._index, self._watermark = index, snap.watermark
                        self._saved_watermark = snap.watermark
        self.catch_up()
        return self._index  # type: ignore[return-value]

    def _refused(self, index: FaissIndex, snap: Snapshot) -> tuple[int, str] | None:
        """Why a snapshot read from disk must not be used (log level, reason), or None."""
        if snap.spec != self.spec:
            return logging.INFO, f"the snapshot is of the index {snap.spec!r}, not {self.spec!r}"
        if snap.watermark > self.store.max_seq():
            return logging.INFO, "the snapshot holds changes the store does not (a store restored from a backup?)"
        if snap.collection_id != self.collection_id:
            return logging.WARNING, (
                f"the snapshot {INDEX_FILE} belongs to another collection (id {snap.collection_id}; "
                f"the store's is {self.collection_id}): it was copied from elsewhere"
            )
        bad = snapshot_differs(index, self.store, snap.watermark)
        if bad:
            return logging.WARNING, (
                f"the snapshot {INDEX_FILE} holds other vectors than the store for items {bad}: "
                "it was built from another store"
            )
        return None

    def bound(self, collection_id: str) -> None:
        """The store now names this collection id (an older collection given one): the next
        :meth:`save` writes a snapshot that names it too."""
        if collection_id != self.collection_id:
            self.collection_id = collection_id
            self._saved_watermark = -1

    def _build(self, spec: str, factory: str | None = None, on_open: bool = False) -> tuple[FaissIndex, int]:
        """A fresh index of every vector in the store and the change it is complete up to
        (vectors read after that point may be newer still: replaying their changes is harmless)."""
        parsed = IndexSpec.parse(spec)
        watermark = self.store.max_seq()
        if factory is None:
            factory = self._auto_factory(spec, self.store.count()) if parsed.is_auto else parsed.factory
        if parsed.on_disk:  # the lists in a file, built in shards (None: too few vectors to train on_open)
            args = (self.store, self.folder, factory, self.dim, self.metric, self._options(spec, factory), watermark)
            if (built := self.on_disk.build(*args, on_open)) is not None:
                return built, watermark
        index = FaissIndex(factory, self.dim, self.metric, self._options(spec, factory))
        index.vectors = self.store.vectors  # rescore=R reads the candidates' stored vectors
        for ids, vectors in self.store.iter_vectors():
            index.add(ids, vectors)
        return index, watermark

    def _install(self, index: FaissIndex, watermark: int) -> None:
        with self._rw.write_lock():
            self._index, self._watermark, self._saved_watermark = index, watermark, -1
            self._notify(None)

    def rebuild(self, spec: str | None = None) -> FaissIndex:
        """Build the index afresh from the stored vectors (``spec``: a new index spec), never
        re-encoding; searches go on with the old index until the new one takes over."""
        self.wait()
        spec = spec or self.spec
        if spec != self.spec:
            self.tuning = None  # of another spec
        index, watermark = self._build(spec)
        self.spec = spec
        self._install(index, watermark)
        self.catch_up()
        return index

    def outgrown(self) -> str | None:
        """For ``auto``: the factory the collection's size now calls for, when it is not the
        one in use (:meth:`rebuild` switches); None otherwise."""
        if self._index is None or not IndexSpec.parse(self.spec).is_auto:
            return None
        wanted = self._auto_factory(self.spec, self._index.ntotal)
        return wanted if wanted != self._index.factory else None

    def _auto_factory(self, spec: str, n: int) -> str:
        """What ``auto`` builds for ``n`` vectors: :func:`choose_auto`'s choice, unless a tuning
        found that choice missing the recall target and fell back to exact search, and the
        collection has not doubled since."""
        wanted = choose_auto(n, self.dim)
        t = self.tuning
        if t is not None and t.spec == spec and t.replaces == wanted and not t.due(n):
            return t.factory
        return wanted

    def _options(self, spec: str, factory: str) -> dict[str, int]:
        """Search options of an index of ``factory`` built for ``spec``: the spec's own, or
        what the tuning of this spec and factory found."""
        parsed = IndexSpec.parse(spec)
        t = self.tuning
        if not parsed.depth_options and t is not None and t.spec == spec and t.factory == factory:
            return {**parsed.search, **t.options}
        return dict(parsed.search)

    def tune(self, force: bool = False) -> Tuning | None:
        """Tune the index to its spec's recall target when due (never tuned for this spec and type,
        or :data:`~.tuning.RETUNE_GROWTH` times larger since; ``force``: now), holding the writer
        lock. Flat, untrained IVF and indexes under :data:`~.tuning.TUNE_MIN_VECTORS` are left
        alone. ``auto`` keeps the fastest of its candidate types that meets the target, or exact
        search when none does and the vectors fit its budget. Returns :attr:`tuning` (the manifest's)."""
        self.wait()
        index = self._index if self._index is not None else self.load()
        parsed = IndexSpec.parse(self.spec)
        target = parsed.target
        t = self.tuning
        if target is None or (t is not None and (t.spec != self.spec or t.factory != index.factory)):
            self.tuning = t = None  # about another spec or an index this one replaced
        rescore_free = "rescore" not in parsed.search
        depth_or_rescore = search_param(index) is not None or rescore_tunable(index, rescore_free)
        if target is None or index.ntotal < TUNE_MIN_VECTORS or not depth_or_rescore:
            return self.tuning
        if not force and t is not None and t.spec == self.spec and t.factory == index.factory and not t.due(index.ntotal):
            return t
        queries = held_out(self.store, self.metric)
        found = tune(index, self.store, self.metric, self.spec, target, queries, rescore_free)  # searches go on
        if found is None:  # too few vectors left to train the held-out copy
            return self.tuning
        if parsed.is_auto:
            found = tune_auto(index, self.store, self.metric, self.spec, target, queries, found)
        if found.factory != index.factory:  # auto: another type meets the target faster here
            self.tuning = found  # before the build: it reads the tuned options
            self._install(*self._build(self.spec, found.factory))
            self.catch_up()
            return found
        if not found.met and parsed.is_auto and index.ntotal * self.dim * 4 <= AUTO_HNSW_BYTES:
            log.warning("%s misses the recall target %g on this data: auto falls back to exact search",
                        index.factory, target)
            self.tuning = exact_tuning(self.spec, target, index.factory, index.ntotal, len(queries.ids))
            self._install(*self._build(self.spec, "Flat"))
            self.catch_up()
            return self.tuning
        self.tuning = found
        with self._rw.write_lock():
            kept = {k: v for k, v in index.search_options.items() if not (rescore_free and k == "rescore")}
            index.search_options = {**kept, **found.options}  # not an earlier tuning's rescore
        return found

    # -- keeping up with the store -------------------------------------------------------------

    def catch_up(self) -> int:
        """Apply the store's changes after the watermark; returns how many items they touched."""
        self.wait()  # this process's own writes first: the change log holds them too
        if self._index is None:
            self.load()
            return 0
        with self._rw.write_lock():
            ids, newest = self.store.changed_since(self._watermark)
            if len(ids):
                self._index.remove(ids)
                found, vectors = self.store.vectors(ids)
                self._index.add(found, vectors)
                self._notify(ids)
            self._watermark = max(self._watermark, newest)
            self._checked_at = time.monotonic()
        return len(ids)

    def refresh(self) -> None:
        """What a search does first: load the index if needed, and catch up with other
        processes' writes when ``consistency_interval`` has passed since the last check."""
        if self._index is None:
            self.load()
            return
        interval = self.consistency_interval
        if interval is None or time.monotonic() - self._checked_at < interval:
            return
        if self.store.max_seq() > max(self._watermark, self._submitted):
            self.catch_up()
        else:
            self._checked_at = time.monotonic()

    def apply(self, ids: np.ndarray, vectors: np.ndarray, replaced: np.ndarray, seq: int) -> None:
        """Put a committed write (up to change ``seq``) into the index: the ``replaced`` ids
        (updated or deleted items) leave it, ``ids`` with ``vectors`` enter it. A write the index
        holds already (a catch-up read it from the store) is skipped."""
        with self._rw.write_lock():
            if self._index is None or seq <= self._watermark:
                return
            self._index.remove(replaced)
            self._index.add(ids, vectors)
            self._watermark = seq
            if len(replaced):
                self._notify(replaced)

    @contextmanager
    def writing(self) -> Iterator[FaissIndex]:
        """The write lock, for a store transaction whose result must reach searches at once
        (updates and deletes): no search runs between the commit and :meth:`apply`."""
        self.wait()
        index = self._index if self._index is not None else self.load()
        with self._rw.write_lock():
            yield index

    def submit(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        replaced: np.ndarray,
        seq: int,
        timer: Callable[[float], None] | None = None,
    ) -> Future[None]:
        """:meth:`apply` in the index thread, in commit order; at most one write waits there
        (bounded memory). Its error surfaces at the next :meth:`wait`; ``timer`` gets the
        seconds it took."""
        self.wait()
        if self._feed is None:
            self._feed = ThreadPoolExecutor(1, thread_name_prefix="latentsearch-index")
        self._submitted = max(self._submitted, seq)

        def run() -> None:
            t0 = time.perf_counter()
            self.apply(ids, vectors, replaced, seq)
            if timer is not None:
                timer(time.perf_counter() - t0)

        self._pending = self._feed.submit(run)
        return self._pending

    def wait(self) -> None:
        """Wait until the index thread has applied what was submitted. On its failure the
        in-memory index is dropped (the next use reloads it from the snapshot and the change
        log, which holds every committed write) and the error is raised."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending.result()
            except BaseException:
                with self._rw.write_lock():
                    self._index = None
                raise

    # -- reading -------------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[FaissIndex]:
        """The index under the read lock: nothing changes it until the block ends."""
        self.refresh()
        with self._rw.read_lock():
            index = self._index
            if index is None:  # dropped by a failed write between refresh and here
                raise RuntimeError("the index was dropped after a failed write; search again")
            yield index

    def save(self) -> bool:
        """Write the snapshot when the index is ahead of it (atomically: temp file, fsync,
        rename). Call it holding the collection's writer lock. Returns whether it wrote."""
        self.wait()
        if not self.behind:
            return False
        with self._rw.read_lock():  # searches go on; changes wait
            watermark = self._watermark
            save_snapshot(  # an on-disk index writes its delta, not its lists
                self._index, self.folder, INDEX_FILE, INDEX_META, self.spec, watermark, self.collection_id
            )
        self._saved_watermark = watermark
        return True

    def verify(self, vectors: int = VERIFY_SAMPLE) -> dict[str, Any]:
        """Compare the index with the store: every stored item indexed once, nothing else, and
        the vectors of up to ``vectors`` items (all of them in a collection that small, else a
        random sample) equal to the store's where the index type can give them back."""
        self.catch_up()
        with self.reading() as index:
            watermark = self._watermark
            stored = self.store.ids()
            indexed = index.ids()
            unique, counts = np.unique(indexed, return_counts=True)
            check = vector_sample(np.intersect1d(unique, stored), vectors)
            differ = differing(index, self.store, check)
        return {
            "items": int(len(stored)),
            "indexed": int(len(indexed)),
            "missing_from_index": np.setdiff1d(stored, unique).tolist(),
            "not_in_store": np.setdiff1d(unique, stored).tolist(),
            "indexed_twice": unique[counts > 1].tolist(),
            "vectors_checked": 0 if differ is None else int(len(check)),
            "vectors_differ": not_changed_since(self.store, watermark, differ or []),
        }

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._feed is not None:
                self._feed.shutdown()
                self._feed = None

    def _notify(self, ids: np.ndarray | None) -> None:
        """Tell the listeners which items changed (``None``: possibly all of them)."""
        for listener in self._listeners:
            listener(ids)
