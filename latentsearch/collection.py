"""Collection: a thin façade over the parts of one collection.

It builds, once, the store (:class:`~latentsearch.stores.sql.SqlStore`), the encoder
(:class:`~latentsearch.encoders.lazy.LazyEncoder`), the index owner
(:class:`~latentsearch.indexes.sync.IndexSync`), the :class:`~latentsearch.ingest.writer.Writer`
and the :class:`~latentsearch.query.searcher.Searcher`, each given exactly the collaborators it
needs, and forwards to them. See the README, "Architecture and concurrency".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from . import __version__
from .config import CollectionConfig, read_manifest
from .encoders import ENCODERS, check_remote_code, create_encoder, remote_code_allowed, runs_remote_code
from .encoders.base import Encoder
from .encoders.lazy import NO_ENCODER, LazyEncoder
from .errors import CollectionNotFoundError, EncoderMismatchError, InvalidInputError
from .identity import STORE_FILE, build, check_free, check_store, new_collection_id, schema_name
from .indexes.consistency import VERIFY_SAMPLE
from .indexes.faiss_index import FaissIndex
from .indexes.selection import IndexSpec, with_on_disk
from .indexes.sync import INDEX_FILE, INDEX_META, IndexSync
from .ingest.writer import Writer
from .query.searcher import Searcher
from .stores.sql import SqlStore, sqlite_url
from .types import Hit, IndexReport, Item

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class _Forward(Generic[F]):
    """A method of the façade that is the same-named method of one of its parts."""

    def __init__(self, part: str, method: F):
        self.part, self.method = part, method
        self.__doc__ = method.__doc__
        self.__wrapped__ = method

    def __get__(self, obj: Any, owner: type | None = None) -> F:
        if obj is None:
            return self.method
        return getattr(getattr(obj, self.part), self.method.__name__)  # type: ignore[no-any-return]


def _forward(part: str, method: F) -> F:
    return _Forward(part, method)  # type: ignore[return-value]


class Collection:
    """A folder holding a manifest, a store and an index snapshot.

    Any number of threads may share one: searches run in parallel, writes one at a time. Each
    write operation takes the collection's writer lock for its own length (``with
    col.writing():`` for several), so an open collection blocks no other process while idle.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: Path,
        config: CollectionConfig,
        encoder: Encoder | None = None,
        read_consistency_interval: float | None = 0.0,
        trust_remote_code: bool = False,
    ):
        self.path = path
        url = config.store_url or sqlite_url(path / STORE_FILE)
        self.store = SqlStore(url, config.dim, config.vector_dtype, config.store_schema)
        self.encoder_slot = LazyEncoder(config.encoder, config.encoder_fingerprint, encoder, trust_remote_code, path)
        self.sync = IndexSync(
            path, self.store, config.dim, config.metric, config.index, read_consistency_interval, config.index_tuning
        )
        self.writer = Writer(path, config, self.store, self.encoder_slot, self.sync)
        self.searcher = Searcher(path, config.dim, config.metric, self.store, self.encoder_slot, self.sync)
        self.writer.after_write(self._assign_new_items)

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
        """A new, empty collection at ``path``. ``encoder=None`` stores precomputed vectors of ``dim``.

        Built in a hidden sibling folder and renamed into place: a create killed half-way leaves
        nothing at ``path``, and the next create there removes what it left."""
        path = Path(path).expanduser()
        path = path.resolve() if path.is_symlink() else path
        check_free(path)
        spec = IndexSpec.parse(index)
        if not spec.is_auto and dim:
            FaissIndex(spec.factory, int(dim), metric)  # a bad spec fails before a model loads
        enc = create_encoder(encoder) if encoder and encoder != NO_ENCODER else None
        if enc is None and not dim:
            raise InvalidInputError("a collection without an encoder needs dim=, the vector dimension")
        if enc is not None and dim and dim != enc.dim:
            raise InvalidInputError(f"dim={dim} but the encoder {enc.spec!r} gives {enc.dim}")
        config = CollectionConfig(
            encoder=enc.spec if enc else NO_ENCODER,
            dim=enc.dim if enc else int(dim),  # type: ignore[arg-type]
            metric=metric,
            index=str(spec),
            encoder_fingerprint=enc.fingerprint() if enc else "",
            store_url=store,
            store_schema=schema_name(path) if store and not store.startswith("sqlite") else None,
            vector_dtype=vector_dtype,
            created_by=f"latentsearch {__version__}",
            collection_id=new_collection_id(),
        )
        if not spec.is_auto:
            FaissIndex(spec.factory, config.dim, metric)  # a bad spec fails before anything is written
        build(path, config)
        return cls(path, config, enc, trust_remote_code=True)  # the caller named the encoder

    @classmethod
    def open(
        cls,
        path: str | Path,
        encoder: str | None = None,
        read_consistency_interval: float | None = 0.0,
        trust_remote_code: bool = False,
    ) -> Collection:
        """The collection at ``path``. Naming an ``encoder`` checks it is the one that built it.

        ``read_consistency_interval``: how often (seconds) a search first checks the store for
        writes by other processes; ``0`` (default) before every search, ``None`` never after
        the index is loaded. This process's own writes are always seen at once.

        ``trust_remote_code``: allow an encoder whose model runs its own Python code
        (``?trust_remote_code=true`` in the manifest's spec); without it, or
        ``LATENTSEARCH_TRUST_REMOTE_CODE=1``, or naming that ``encoder``, such a collection is
        refused before any model code loads."""
        path = Path(path).expanduser()
        try:
            config = read_manifest(path)
        except FileNotFoundError:
            raise CollectionNotFoundError(
                f"no collection at {path}; create one with `latentsearch index {path} FILES...` "
                "or latentsearch.create()"
            ) from None
        trusted = remote_code_allowed(trust_remote_code) or (encoder is not None and runs_remote_code(encoder))
        check_remote_code(config.encoder, trusted, path)
        self = cls(path, config, read_consistency_interval=read_consistency_interval, trust_remote_code=trusted)
        try:
            check_store(path, config, self.store)
        except BaseException:
            self.store.close()
            raise
        if encoder is not None and not self._same_encoder(encoder):
            raise EncoderMismatchError(
                f"the collection at {path} was built with the encoder {config.encoder!r}, "
                f"not {encoder!r}; open it without naming an encoder, or create a new collection"
            )
        return self

    def _same_encoder(self, spec: str) -> bool:
        mine = self.config.encoder
        if spec == mine or str(ENCODERS.resolve(spec)) == mine:
            return True
        if mine == NO_ENCODER or spec == NO_ENCODER:
            return False
        if ENCODERS.resolve(spec).kind != ENCODERS.resolve(mine).kind:
            return False  # no need to load a model to see that
        return create_encoder(spec).spec == mine

    def close(self) -> None:
        """Save the index snapshot if this process's index is ahead of it (unless another
        process is writing at the moment), stop the index thread and close the store."""
        try:
            self.writer.save(wait=False)
        finally:
            try:
                self.sync.close()
            finally:
                self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.store.count()

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, encoder={self.config.encoder!r}, index={self.config.index!r})"

    # -- configuration and parts -----------------------------------------------------------------

    @property
    def config(self) -> CollectionConfig:
        """The manifest as it stands (``reindex`` and ``reembed`` change it)."""
        return self.writer.config

    @property
    def lock_timeout(self) -> float:
        """Seconds a write waits for another writer before it fails."""
        return self.writer.lock.timeout

    @lock_timeout.setter
    def lock_timeout(self, seconds: float) -> None:
        self.writer.lock.timeout = seconds

    @property
    def encoder(self) -> Encoder | None:
        """The encoder (loaded on first use; None for a collection of vectors only)."""
        return self.encoder_slot.get()

    def encoder_changed(self) -> bool:
        """Whether the encoder now gives other vectors than when the collection was built."""
        return self.encoder_slot.changed()

    @contextmanager
    def writing(self) -> Iterator[Collection]:
        """Hold the writer lock across several write operations (each takes it anyway)."""
        with self.writer.writing():
            yield self

    def flush(self) -> bool:
        """Save the index snapshot now if it is behind the store; returns whether it wrote."""
        return self.writer.save()

    # -- writing (ingest/writer.py) ----------------------------------------------------------------

    add = _forward("writer", Writer.add)
    upsert = _forward("writer", Writer.upsert)
    add_records = _forward("writer", Writer.add_records)
    index_paths = _forward("writer", Writer.index_paths)
    prune = _forward("writer", Writer.prune)
    delete = _forward("writer", Writer.delete)
    reembed = _forward("writer", Writer.reembed)

    def reindex(
        self, index: str | None = None, on_disk: bool = False, ray: str | None = None, shards: int | None = None
    ) -> None:
        """Rebuild the index from the stored vectors (with a new spec when given), never re-encoding.

        ``on_disk=True`` (an IVF spec; the same as ``?on_disk=true`` in the spec) keeps the
        inverted lists in a memory-mapped file beside the snapshot, for indexes larger than RAM:
        trained once here, built in ``shards`` (by size when None) as Ray tasks on the cluster at
        ``ray`` (``"local"``, ``"auto"`` or an address; None: one after another in this process),
        then merged (see :mod:`latentsearch.indexes.ondisk`)."""
        spec = index or self.config.index
        if on_disk:
            spec = with_on_disk(spec)
        if (ray is not None or shards is not None) and not IndexSpec.parse(spec).on_disk:
            raise InvalidInputError(
                "a Ray address and a shard count are for on-disk builds: add --on-disk (on_disk=True) and an IVF spec"
            )
        with self.sync.on_disk.using(ray, shards):
            self.writer.reindex(spec)

    # -- reading (query/searcher.py) ---------------------------------------------------------------

    search = _forward("searcher", Searcher.search)
    search_batch = _forward("searcher", Searcher.search_batch)
    search_batch_with_stats = _forward("searcher", Searcher.search_batch_with_stats)
    clusters = _forward("searcher", Searcher.clusters)

    def index(self) -> FaissIndex:
        """The index, loaded from its snapshot (or rebuilt from the store, logged) and caught up
        with the store. An explicit call: it may read the whole store."""
        return self.sync.load()

    def get(self, ids: Sequence[int]) -> list[Item]:
        """The items with these ids, in that order; ids that do not exist are left out."""
        found = self.store.get(ids)
        return [found[int(i)] for i in ids if int(i) in found]

    def verify(self, vectors: int = VERIFY_SAMPLE) -> dict[str, Any]:
        """Compare the index with the store: every stored item indexed once, nothing else, and
        the vectors of ``vectors`` items (all in a collection that small, else a random sample)
        the store's where the index type can give them back (``vectors_checked``, ``vectors_differ``)."""
        return self.sync.verify(vectors)

    def info(self) -> dict[str, Any]:
        """What ``latentsearch info`` prints (loads the index)."""
        index = self.index()
        files = [self.path / n for n in (INDEX_FILE, INDEX_META, "latentsearch.json")] + index.disk_files()
        return {
            "path": str(self.path),
            "encoder": self.config.encoder,
            "dim": self.config.dim,
            "metric": self.config.metric,
            "index": self.config.index,
            "index_in_use": index.describe(),
            "recall_target": IndexSpec.parse(self.config.index).target,
            "index_tuning": self.sync.tuning.describe() if self.sync.tuning is not None else None,
            "search_options": dict(index.search_options),
            "items": len(self),
            "indexed": index.ntotal,
            "store": self.store.safe_url,
            "store_bytes": self.store.size_bytes(),
            "index_bytes": sum(p.stat().st_size for p in files if p.exists()),  # the snapshot files on disk
            "index_ram_bytes": index.memory_bytes(),  # the index in memory (codes, graph, id map)
            **index.on_disk_info(),  # lists on disk: the file's size and how much of it is in RAM now
            "rescore": index.rescore,
            "vector_dtype": self.config.vector_dtype,
            "created_by": self.config.created_by,
            "collection_id": self.config.collection_id,
        }

    # -- latent-space queries (query/latent.py) ----------------------------------------------------

    def search_combination(self, terms: Any, k: int = 10, where: Mapping[str, Any] | None = None) -> list[Hit]:
        """The ``k`` items nearest a weighted sum of queries, e.g.
        ``[("beach", 1.0), (42, 1.0), ("people", -1.0)]`` or the string
        ``'"beach" + #42 - "people"'``; each query is anything :meth:`search` takes (for the
        cosine metric each is normalised before summing). Items given by id are left out."""
        from .query.latent import combination_search

        return combination_search(self.searcher, terms, k, where)

    def interpolate(self, a: Any, b: Any, steps: int = 5, k: int = 1) -> list[tuple[float, list[Hit]]]:
        """``(t, hits)`` for ``steps`` points t from ``a`` (0) to ``b`` (1): the ``k`` items
        nearest each point, spherically interpolated for the cosine metric, linearly otherwise."""
        from .query.latent import interpolation_search

        return interpolation_search(self.searcher, a, b, steps, k)

    def search_mmr(
        self, query: Any, k: int = 10, fetch_k: int = 50, lambda_: float = 0.5, where: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """``k`` of the ``fetch_k`` nearest items to ``query`` chosen by maximal marginal
        relevance (cosine similarity of the stored vectors): ``lambda_=1`` keeps the plain
        search order, lower values trade relevance for variety."""
        from .query.latent import mmr_search

        return mmr_search(self.searcher, query, k, fetch_k, lambda_, where)

    def decode(self, vectors: Any, batch_size: int = 32) -> list[Any]:
        """The inputs the encoder's decoder makes of ``vectors`` (``(n, dim)`` or one ``(dim,)``
        latent): a list of PIL images, for encoders of autoencoders and VAEs (``encoder.decodes``).
        A cosine collection stores unit-length vectors, so its decoder sees directions only."""
        from .query.decoding import decode_vectors

        return decode_vectors(self.encoder, vectors, self.config.dim, batch_size)

    # -- corpus clusters (query/corpus_clusters.py) ------------------------------------------------

    def cluster(self, n: int, seed: int = 0, sample: int | None = None) -> list[Any]:
        """Cluster every stored vector into ``n`` clusters with FAISS k-means (spherical for
        cosine; trained on ``sample`` vectors, at most 100,000 unless told, then every item
        assigned), store centroids, labels and assignments (replacing any previous clustering)
        and return their summary, largest first. Later writes give their items a cluster."""
        from .query.corpus_clusters import cluster_corpus

        with self.writer.writing():  # no add lands between reading the vectors and the change seq
            return cluster_corpus(self.store, self.config.metric, n, seed, sample)

    def assign_new(self) -> int:
        """Give items written since the clustering (by a write interrupted before it could)
        their nearest cluster, and forget deleted ones; returns how many. A write."""
        with self.writer.writing():
            return self._assign_new_items()

    def _assign_new_items(self) -> int:
        from .query.corpus_clusters import assign_new

        return assign_new(self.store, self.config.metric)

    def corpus_clusters(self) -> list[Any]:
        """The stored clustering's summary by id ([] when the collection was never clustered)."""
        from .query.corpus_clusters import stored_clusters

        return stored_clusters(self.store)

    def nearest_clusters(self, query: Any, k: int = 3) -> list[Any]:
        """The ``k`` stored clusters whose centroids are nearest ``query`` (anything
        :meth:`search` takes), nearest first, each with its ``score``."""
        from .query.corpus_clusters import nearest_clusters

        return nearest_clusters(self.searcher, query, k)

    def cluster_members(self, cluster_id: int, limit: int | None = 100) -> list[Item]:
        """Up to ``limit`` items of a stored cluster, in id order."""
        from .query.corpus_clusters import members

        return members(self.store, cluster_id, limit)


# Re-exported for callers that imported the report type from here.
__all__ = ["Collection", "IndexReport"]
