"""Collection: the one place that wires an encoder, a FAISS index and a SQL store together."""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from . import __version__
from .config import CollectionConfig, manifest_path, read_manifest, write_manifest
from .encoders import ENCODERS, create_encoder
from .encoders.base import Encoder
from .errors import (
    CollectionExistsError,
    CollectionLockedError,
    CollectionNotFoundError,
    EncoderMismatchError,
    InvalidInputError,
)
from .indexes.faiss_index import FaissIndex
from .indexes.selection import IndexSpec, choose_auto
from .ingest.api import Progress, WriteMethods
from .ingest.index_feed import IndexFeed
from .query.api import QueryMethods
from .query.filtered import FilterStats
from .stores.sql import SqlStore, sqlite_url
from .types import IndexReport, Item

log = logging.getLogger(__name__)

NO_ENCODER = "none"
STORE_FILE = "metadata.db"
INDEX_FILE = "index.faiss"
INDEX_META = "index.json"
LOCK_FILE = ".lock"


class Collection(WriteMethods, QueryMethods):
    """A folder holding a manifest, a store and an index snapshot. Use as a context manager."""

    def __init__(self, path: Path, config: CollectionConfig, encoder: Encoder | None = None):
        self.path, self.config = path, config
        url = config.store_url or sqlite_url(path / STORE_FILE)
        self.store = SqlStore(url, config.dim, config.vector_dtype, config.store_schema)
        self._encoder = encoder
        self._encoder_lock = threading.Lock()
        self._reembedding = False
        self._index: FaissIndex | None = None
        self._feed: IndexFeed | None = None  # adds this writer's chunks to the index in the background
        self._watermark = 0
        self._saved_watermark = -1
        # What the latest filtered search in this process did (None after an unfiltered one).
        self.last_filter_stats: FilterStats | None = None
        # Not thread-local: the writer thread of the ingest pipeline writes under this lock too.
        self._lock = FileLock(str(path / LOCK_FILE), thread_local=False)
        self.lock_timeout = 10.0

    # -- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        encoder: str | None = "minilm",
        index: str = "auto",
        metric: str = "cosine",
        store: str | None = None,
        dim: int | None = None,
        vector_dtype: str = "float32",
    ) -> Collection:
        """A new, empty collection at ``path``. ``encoder=None`` stores precomputed vectors of ``dim``."""
        path = Path(path).expanduser()
        if manifest_path(path).exists():
            raise CollectionExistsError(f"a collection already exists at {path}; open it instead")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise CollectionExistsError(f"{path} exists and is not an empty folder")
        enc = create_encoder(encoder) if encoder and encoder != NO_ENCODER else None
        if enc is None and not dim:
            raise InvalidInputError("a collection without an encoder needs dim=, the vector dimension")
        if enc is not None and dim and dim != enc.dim:
            raise InvalidInputError(f"dim={dim} but the encoder {enc.spec!r} gives {enc.dim}")
        spec = IndexSpec.parse(index)
        config = CollectionConfig(
            encoder=enc.spec if enc else NO_ENCODER,
            dim=enc.dim if enc else int(dim),  # type: ignore[arg-type]
            metric=metric,
            index=str(spec),
            encoder_fingerprint=enc.fingerprint() if enc else "",
            store_url=store,
            store_schema=_schema_name(path) if store and not store.startswith("sqlite") else None,
            vector_dtype=vector_dtype,
            created_by=f"latentsearch {__version__}",
        )
        if not spec.is_auto:
            FaissIndex(spec.factory, config.dim, metric)  # a bad spec fails before anything is written
        created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        self = cls(path, config, enc)
        try:
            self.store.create({"encoder": config.encoder, "dim": str(config.dim), "metric": metric})
            write_manifest(path, config)  # last: a folder without a manifest is no collection
        except BaseException:
            self.store.close()
            if config.store_schema:
                _try(self.store.drop)
            shutil.rmtree(path) if created else [p.unlink() for p in path.iterdir() if p.is_file()]
            raise
        return self

    @classmethod
    def open(cls, path: str | Path, encoder: str | None = None) -> Collection:
        """The collection at ``path``. Naming an ``encoder`` checks it is the one that built it."""
        path = Path(path).expanduser()
        try:
            config = read_manifest(path)
        except FileNotFoundError:
            raise CollectionNotFoundError(
                f"no collection at {path}; create one with `latentsearch index {path} FILES...` "
                "or latentsearch.create()"
            ) from None
        self = cls(path, config)
        self.store.check_schema()
        if encoder is not None and not self._same_encoder(encoder):
            raise EncoderMismatchError(
                f"the collection at {path} was built with the encoder {config.encoder!r}, "
                f"not {encoder!r}; open it without naming an encoder, or create a new collection"
            )
        return self

    def _same_encoder(self, spec: str) -> bool:
        if spec == self.config.encoder or str(ENCODERS.resolve(spec)) == self.config.encoder:
            return True
        if self.config.encoder == NO_ENCODER or spec == NO_ENCODER:
            return False
        if ENCODERS.resolve(spec).kind != ENCODERS.resolve(self.config.encoder).kind:
            return False  # no need to load a model to see that
        return create_encoder(spec).spec == self.config.encoder

    def close(self) -> None:
        """Save the index snapshot when this process changed anything, and release the lock."""
        try:
            if self._lock.is_locked:
                self.flush()
        finally:
            if self._feed is not None:
                self._feed.close()  # idle by now: flush() waited for it
                self._feed = None
            if self._lock.is_locked:
                self._lock.release(force=True)
            self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.store.count()

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, encoder={self.config.encoder!r}, index={self.config.index!r})"

    # -- the parts, loaded when first needed ----------------------------------------------------

    @property
    def encoder(self) -> Encoder | None:
        with self._encoder_lock:  # the pipeline's threads may ask first, together
            return self._load_encoder()

    def _load_encoder(self) -> Encoder | None:
        if self._encoder is None and self.config.encoder != NO_ENCODER:
            enc = create_encoder(self.config.encoder)
            if self.encoder_changed(enc) and not self._reembedding:
                raise EncoderMismatchError(
                    f"the encoder {self.config.encoder!r} now gives different vectors than when "
                    "this collection was built (its weights or preprocessing changed); "
                    "re-embed it with `latentsearch index` (it does so first) or Collection.reembed()"
                )
            self._encoder = enc
        return self._encoder

    def encoder_changed(self, encoder: Encoder | None = None) -> bool:
        """Whether the encoder now gives other vectors than when the collection was built."""
        if self.config.encoder == NO_ENCODER or not self.config.encoder_fingerprint:
            return False
        enc = encoder or self._encoder or create_encoder(self.config.encoder)
        return enc.fingerprint() != self.config.encoder_fingerprint

    def reembed(self, batch_size: int = 64, progress: Progress | None = None) -> IndexReport:
        """Encode every stored item again with the encoder as it is now (after its weights or
        preprocessing changed); see :func:`latentsearch.ingest.reembed.reembed`."""
        from .ingest.reembed import reembed

        self._writer()
        self._reembedding = True
        try:
            encoder = self.encoder
        finally:
            self._reembedding = False
        report = reembed(self, encoder, batch_size, progress)  # type: ignore[arg-type]
        self.config = self.config.replace(encoder_fingerprint=encoder.fingerprint())  # type: ignore[union-attr]
        self.flush()
        write_manifest(self.path, self.config)
        return report

    @property
    def index(self) -> FaissIndex:
        """The index, loaded from its snapshot (or rebuilt) and brought up to the store's state."""
        if self._feed is not None:
            self._feed.wait()  # this process's own writes, still being added
        if self._index is None:
            spec = IndexSpec.parse(self.config.index)
            loaded = FaissIndex.load(
                self.path / INDEX_FILE, self.path / INDEX_META, self.config.dim, self.config.metric, spec.search
            )
            if loaded is None or loaded[1].spec != self.config.index or loaded[1].watermark > self.store.max_seq():
                self._rebuild()
            else:
                self._index, snap = loaded
                self._watermark = self._saved_watermark = snap.watermark
        self._catch_up()
        return self._index  # type: ignore[return-value]

    def _rebuild(self) -> None:
        """A fresh index from every vector in the store (invariant 1: never re-encodes)."""
        spec = IndexSpec.parse(self.config.index)
        watermark = self.store.max_seq()
        factory = choose_auto(self.store.count(), self.config.dim) if spec.is_auto else spec.factory
        index = FaissIndex(factory, self.config.dim, self.config.metric, spec.search)
        for ids, vectors in self.store.iter_vectors():
            index.add(ids, vectors)
        self._index, self._watermark, self._saved_watermark = index, watermark, -1

    def _catch_up(self) -> None:
        """Apply the store's changes after the index's watermark (invariant 2)."""
        assert self._index is not None
        ids, newest = self.store.changed_since(self._watermark)
        if len(ids):
            self._index.remove(ids)
            found, vectors = self.store.vectors(ids)
            self._index.add(found, vectors)
        self._watermark = newest

    def _index_feed(self) -> IndexFeed:
        """The thread that adds this writer's committed chunks to the index (see IndexFeed)."""
        if self._feed is None:
            self._feed = IndexFeed(self)
        return self._feed

    def _applied_own_write(self, ids: np.ndarray, vectors: np.ndarray, replaced: np.ndarray, seq: int) -> None:
        """Put what this writer committed, up to change ``seq``, into the index without reading
        it back. Writes are applied in commit order; the ``replaced`` ids (updates) leave the
        index first.
        """
        index = self._index
        assert index is not None and self._lock.is_locked
        index.remove(replaced)
        index.add(ids, vectors)
        self._watermark = seq

    def _writer(self) -> None:
        """Take the writer lock (once) and bring the index up to date under it."""
        if not self._lock.is_locked:
            try:
                self._lock.acquire(timeout=self.lock_timeout)
            except Timeout:
                raise CollectionLockedError(
                    f"another process is writing to {self.path}; wait for it to finish "
                    f"(waited {self.lock_timeout:g} s)"
                ) from None
            if not self._acquire_store_writer():
                self._lock.release(force=True)
                raise CollectionLockedError(
                    f"another process is writing to this collection's store ({self.store.safe_url}); "
                    f"wait for it to finish (waited {self.lock_timeout:g} s)"
                )
        _ = self.index

    def _acquire_store_writer(self) -> bool:
        deadline = time.monotonic() + self.lock_timeout
        while not self.store.try_acquire_writer():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def flush(self) -> None:
        """Save the index snapshot if it is behind the store (atomic; needs the writer lock)."""
        self._writer()
        index = self.index
        spec = IndexSpec.parse(self.config.index)
        if spec.is_auto and choose_auto(index.ntotal, self.config.dim) != index.factory:
            self._rebuild()
            index = self._index  # type: ignore[assignment]
        if self._watermark != self._saved_watermark:
            index.save(self.path / INDEX_FILE, self.path / INDEX_META, self.config.index, self._watermark)
            self._saved_watermark = self._watermark

    # -- writing: add, upsert, index_paths, prune, add_records, delete (ingest/api.py) ----------

    def reindex(self, index: str | None = None) -> None:
        """Rebuild the index from the stored vectors (with a new spec when given), never re-encoding."""
        self._writer()
        spec = IndexSpec.parse(index or self.config.index)
        if not spec.is_auto:
            FaissIndex(spec.factory, self.config.dim, self.config.metric)
        self.config = self.config.replace(index=str(spec))
        self._rebuild()
        self.flush()
        write_manifest(self.path, self.config)

    # -- reading ------------------------------------------------------------------------------

    def get(self, ids: Sequence[int]) -> list[Item]:
        """The items with these ids, in that order; ids that do not exist are left out."""
        found = self.store.get(ids)
        return [found[int(i)] for i in ids if int(i) in found]

    def verify(self) -> dict[str, Any]:
        """Compare the index with the store: every stored item indexed once, nothing else."""
        stored = self.store.ids()
        indexed = self.index.ids()
        unique, counts = np.unique(indexed, return_counts=True)
        return {
            "items": int(len(stored)),
            "indexed": int(len(indexed)),
            "missing_from_index": np.setdiff1d(stored, unique).tolist(),
            "not_in_store": np.setdiff1d(unique, stored).tolist(),
            "indexed_twice": unique[counts > 1].tolist(),
        }

    def info(self) -> dict[str, Any]:
        index = self.index
        files = [self.path / n for n in (INDEX_FILE, INDEX_META, "latentsearch.json")]
        return {
            "path": str(self.path),
            "encoder": self.config.encoder,
            "dim": self.config.dim,
            "metric": self.config.metric,
            "index": self.config.index,
            "index_in_use": index.describe(),
            "items": len(self),
            "indexed": index.ntotal,
            "store": self.store.safe_url,
            "store_bytes": self.store.size_bytes(),
            "index_bytes": sum(p.stat().st_size for p in files if p.exists()),
            "vector_dtype": self.config.vector_dtype,
            "created_by": self.config.created_by,
        }


def _schema_name(path: Path) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", path.name.lower()).strip("_")[:40] or "collection"
    return f"ls_{slug}_{secrets.token_hex(4)}"


def _try(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception as exc:  # cleanup after a failure must not hide the failure
        log.warning("cleanup failed: %s", exc)
