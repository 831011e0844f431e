"""A FAISS index whose ids are the store's ids.

The index is derived data: the store holds every vector, so anything here can be rebuilt.
Indexes that need training (IVF, PQ) are served by an exact flat index until enough vectors
exist to train them; indexes that cannot remove vectors (HNSW) drop deleted ids from their id
map and filter them out at search time until the next rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import atomic_write_bytes, fsync_dir, temp_path
from ..devices import faiss_gpu_count
from ..errors import DimensionMismatchError, InvalidInputError, UnknownSpecError
from .factory import MIN_POINTS_PER_CENTROID, _ivf, build_faiss, faiss_metric, training_size  # noqa: F401
from .rescore import VectorSource, rescore
from .selection import DEFAULT_EF_SEARCH

log = logging.getLogger(__name__)
# FAISS's GPU k-selection takes k (and nprobe) up to 2048; larger searches run on the CPU copy
GPU_MAX_K = 2048

DEAD = -1  # id-map value of a removed vector in an index that cannot remove
COMPACT_FRACTION = 0.25  # rebuild a non-removable index once this share of it is dead


def file_digest(path: Path, like: str = "sha256:") -> str:
    """``path``'s digest, as ``"sha256:<hex>"``; ``like`` an older digest without the prefix
    (BLAKE2b-128, which snapshots of earlier versions hold) gives one to compare with it.
    SHA-256 because CPUs hash it in hardware: twice BLAKE2b's speed on a large snapshot."""
    algorithm, prefix = ("sha256", "sha256:") if like.startswith("sha256:") else ("blake2b", "")
    h = hashlib.new(algorithm, **({} if prefix else {"digest_size": 16}))
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return prefix + h.hexdigest()


def skip_dead(selector: Any, any_dead: bool) -> tuple[Any, list[Any]]:
    """``selector`` narrowed to the live vectors when some are dead (:data:`DEAD` in the id
    map), and the FAISS objects that must outlive the search (SWIG does not keep them)."""
    import faiss

    keep = [selector]
    if any_dead:
        dead = faiss.IDSelectorBatch(np.array([DEAD], dtype=np.int64))
        alive = faiss.IDSelectorNot(dead)
        keep += [dead, alive]
        selector = alive if selector is None else faiss.IDSelectorAnd(selector, alive)
        keep.append(selector)
    return selector, keep


@dataclass
class Snapshot:
    """What ``index.json`` says about ``index.faiss``."""

    spec: str
    factory: str  # the concrete factory string (``auto`` resolved)
    trained: bool  # False: an exact flat index stands in until training
    watermark: int  # the last change sequence the snapshot contains
    ntotal: int
    dead: int
    file_bytes: int
    file_digest: str
    collection_id: str | None = None  # the collection whose store it was built from (None: older versions)
    on_disk: dict[str, Any] | None = None  # an on-disk index's files and build (see ondisk.py); None: index.faiss


class FaissIndex:
    """One FAISS index over ``dim``-dimensional vectors with int64 ids.

    ``FaissIndex("binary", ...)`` (or ``binary,HNSW32``) makes a
    :class:`~latentsearch.indexes.binary_index.BinaryIndex`, with the same interface.

    With the search option ``rescore`` (R > 1) and a :attr:`vectors` source (the store's
    ``vectors(ids)``, which :class:`IndexSync` sets), :meth:`search` asks FAISS for ``R x k``
    candidates and re-ranks them by their stored float vectors (:mod:`.rescore`).
    """

    binary = False

    def __new__(cls, factory: str, *args: Any, **kwargs: Any) -> FaissIndex:
        from .selection import is_binary

        if cls is FaissIndex and isinstance(factory, str) and is_binary(factory):
            from .binary_index import BinaryIndex

            return super().__new__(BinaryIndex)
        return super().__new__(cls)

    def __init__(self, factory: str, dim: int, metric: str, search: dict[str, int] | None = None):
        import faiss

        self.vectors: VectorSource | None = None  # stored float vectors by id, for rescoring
        self.factory, self.dim, self.metric = factory, dim, metric
        self.search_options = dict(search or {})
        self._target = build_faiss(factory, dim, metric)
        self._native_ids = _ivf(self._target) is not None
        self.train_size = training_size(self._target)
        if self.train_size:
            self.index = faiss.IndexIDMap2(faiss.IndexFlat(dim, faiss_metric(metric)))
        else:
            self.index = self._wrap(self._target)
        self.dead = 0
        self._gpu: Any = None
        # A GPU index holds one set of streams and scratch memory: one search at a time, and
        # one thread making the copy (CPU indexes are searched by any number of threads).
        self._gpu_lock = threading.Lock()

    # -- construction -------------------------------------------------------------------------

    def _wrap(self, index: Any) -> Any:
        import faiss

        return index if self._native_ids else faiss.IndexIDMap2(index)

    @property
    def trained(self) -> bool:
        return self.train_size == 0

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - self.dead

    def describe(self) -> str:
        if self.trained:
            return self.factory
        return f"Flat (exact until {self.train_size} vectors train {self.factory})"

    @property
    def rescore(self) -> int:
        """Candidates per result re-ranked by the stored vectors (1: none)."""
        return int(self.search_options.get("rescore", 1))

    def memory_bytes(self) -> int:
        """The bytes the index holds in RAM: its serialised size, counted as FAISS writes it
        (no copy is kept). Rescoring reads the stored vectors from disk and adds nothing here."""
        import faiss

        counted = [0]

        def count(chunk: bytes) -> None:
            counted[0] += len(chunk)

        self._write(faiss.PyCallbackIOWriter(count))
        return counted[0]

    def disk_files(self) -> list[Path]:
        """Files of this index's snapshot beyond ``index.faiss`` (an on-disk index's lists)."""
        return []

    def on_disk_info(self) -> dict[str, Any]:
        """What ``latentsearch info`` adds for an index whose lists are on disk (nothing here)."""
        return {}

    def _write(self, target: Any) -> None:
        import faiss

        faiss.write_index(self.index, target)

    # -- mutation -----------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = self._check(vectors)
        if len(ids) != len(vectors):
            raise InvalidInputError(f"{len(ids)} ids for {len(vectors)} vectors")
        if not len(ids):
            return
        self.index.add_with_ids(vectors, ids)
        if self._gpu is not False:
            self._gpu = None  # stale; False (no GPU version) stays
        if not self.trained and self.index.ntotal >= self.train_size:
            self._train_from_flat()
            self._gpu = None

    def _train_from_flat(self) -> None:
        import faiss

        flat = self.index
        n = flat.ntotal
        vectors = flat.index.reconstruct_n(0, n)
        ids = faiss.vector_to_array(flat.id_map).copy()
        alive = ids != DEAD
        log.info("training %s on %d vectors", self.factory, int(alive.sum()))
        self._target.train(vectors[alive])
        index = self._wrap(self._target)
        index.add_with_ids(vectors[alive], ids[alive])
        self.index, self.train_size, self.dead = index, 0, 0

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (those present); returns how many were removed."""
        import faiss

        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids) or not self.index.ntotal:
            return 0
        if self._gpu is not False:
            self._gpu = None  # stale; False (no GPU version) stays
        try:
            return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))
        except RuntimeError:
            pass
        # This index type cannot remove: mark the ids dead in the id map instead.
        id_map = faiss.vector_to_array(self.index.id_map)
        hit = np.isin(id_map, ids) & (id_map != DEAD)
        count = int(hit.sum())
        if count:
            id_map[hit] = DEAD
            faiss.copy_array_to_vector(id_map, self.index.id_map)
            self.index.construct_rev_map()
            self.dead += count
            if self.dead > COMPACT_FRACTION * self.index.ntotal:
                self._compact(id_map)
        return count

    def _compact(self, id_map: np.ndarray) -> None:
        """Rebuild without the dead vectors: a graph that is mostly dead stops finding the live.

        The live vectors are reconstructed from the index itself; for quantised storage the
        reconstruction encodes back to the same codes, so nothing is lost.
        """
        import faiss

        alive = np.flatnonzero(id_map != DEAD)
        vectors = self.index.index.reconstruct_batch(alive.astype(np.int64)) if len(alive) else None
        fresh = build_faiss(self.factory, self.dim, self.metric)
        if not fresh.is_trained:  # keep the trained quantisers: only the stored vectors change
            fresh = faiss.clone_index(self.index.index)
            fresh.reset()
        self.index, self.dead = faiss.IndexIDMap2(fresh), 0
        if vectors is not None:
            self.index.add_with_ids(vectors, id_map[alive])

    def ids(self) -> np.ndarray:
        """Every live id in the index (for consistency checks)."""
        import faiss

        if self._native_ids and self.trained:
            invlists = _ivf(self.index).invlists
            parts = [
                faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                for i in range(invlists.nlist)
                if invlists.list_size(i)
            ]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        id_map = faiss.vector_to_array(self.index.id_map)
        return id_map[id_map != DEAD]

    # -- search -------------------------------------------------------------------------------

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise InvalidInputError(f"expected a 2-D array of vectors, got shape {vectors.shape}")
        if vectors.shape[1] != self.dim:
            raise DimensionMismatchError(self.dim, vectors.shape[1])
        return vectors

    def _params(self, selector: Any, options: dict[str, int] | None = None) -> tuple[Any, list[Any]]:
        """Search parameters for this index type, and the objects they point to.

        FAISS parameters hold raw pointers to selectors: the caller keeps the list alive
        until the search returns. ``options`` replace :attr:`search_options` for this call.
        """
        import faiss

        options = self.search_options if options is None else options

        inner = self.index.index if isinstance(self.index, faiss.IndexIDMap2) else self.index
        inner = faiss.downcast_index(inner)
        selector, keep = skip_dead(selector, bool(self.dead))
        if isinstance(inner, faiss.IndexHNSW):
            ef = options.get("efSearch", DEFAULT_EF_SEARCH)
            return faiss.SearchParametersHNSW(sel=selector, efSearch=ef), keep
        ivf = _ivf(self.index) if self.trained else None
        if ivf is not None:
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe(ivf.nlist, options)), keep
        return (faiss.SearchParameters(sel=selector) if selector is not None else None), keep

    def nprobe(self, nlist: int, options: dict[str, int] | None = None) -> int:
        """Lists visited per query: the spec's ``nprobe``, else about nlist/8 (at least 8)."""
        options = self.search_options if options is None else options
        return min(nlist, options.get("nprobe", max(8, nlist // 8)))

    def search(
        self, xq: np.ndarray, k: int, selector: Any = None, options: dict[str, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(D, I)`` of shape ``(nq, k)``, closest first, ``I == -1`` where fewer exist;
        ``options`` (``efSearch``, ``nprobe``, ``rescore``) replace the index's own for this call.
        On a GPU when FAISS has one, the index type goes there and ``k`` ≤ :data:`GPU_MAX_K`;
        else on the CPU. With ``rescore`` R > 1 and a :attr:`vectors` source, ``R x k``
        candidates are re-ranked by their stored vectors and the scores are exact.

        Safe from many threads at once while nothing changes the index (:class:`IndexSync`
        holds its read lock around searches and its write lock around changes)."""
        xq = self._check(xq)
        if k <= 0:
            raise InvalidInputError(f"k must be positive, got {k}")
        if not self._stored():
            return (
                np.full((len(xq), k), np.nan, dtype=np.float32),
                np.full((len(xq), k), -1, dtype=np.int64),
            )
        factor = int((self.search_options if options is None else options).get("rescore", 1))
        if factor > 1 and self.vectors is not None:
            depth = min(k * factor, max(self._stored(), k))
            _, I = self._search(xq, depth, selector, options)
            return rescore(xq, I, k, self.vectors, self.metric)
        return self._search(xq, k, selector, options)

    def _stored(self) -> int:
        """Vectors the FAISS index holds, dead ones included."""
        return int(self.index.ntotal)

    def _search(
        self, xq: np.ndarray, k: int, selector: Any = None, options: dict[str, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's own ``(D, I)`` for :meth:`search` (no rescoring)."""
        if selector is None and not self.dead and k <= GPU_MAX_K and faiss_gpu_count():
            with self._gpu_lock:
                gpu = self._gpu_index()
                if gpu is not None:
                    params, _ = self._params(None, options)
                    return gpu.search(xq, k, params=params) if params is not None else gpu.search(xq, k)
        params, keep = self._params(selector, options)
        D, I = self.index.search(xq, k, params=params) if params is not None else self.index.search(xq, k)
        del keep
        return D, I

    def _gpu_index(self) -> Any | None:
        """A GPU copy of the index (all GPUs, sharded), made on first use after each change;
        None for index types FAISS cannot put on a GPU (HNSW), which stay on the CPU."""
        import faiss

        if self._gpu is None:
            try:
                options = faiss.GpuMultipleClonerOptions()
                options.shard = True
                options.useFloat16 = False
                self._gpu = faiss.index_cpu_to_all_gpus(self.index, co=options)
            except (RuntimeError, AttributeError) as exc:
                log.info("searching on the CPU: %s", exc)
                self._gpu = False
        return None if self._gpu is False else self._gpu

    # -- persistence --------------------------------------------------------------------------

    def save(
        self, index_path: Path, meta_path: Path, spec: str, watermark: int, collection_id: str | None = None
    ) -> Snapshot:
        """Write the index, then its ``index.json`` (which names ``collection_id``), each
        atomically; returns what was written.

        A crash between the two renames leaves a json whose digest does not match the file,
        which :meth:`load` treats as no snapshot (the collection then rebuilds from the store).
        """
        tmp = temp_path(index_path)
        self._write(str(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        snap = Snapshot(
            spec=spec,
            factory=self.factory,
            trained=self.trained,
            watermark=watermark,
            ntotal=self.ntotal,
            dead=self.dead,
            file_bytes=tmp.stat().st_size,
            file_digest=file_digest(tmp),
            collection_id=collection_id,
        )
        os.replace(tmp, index_path)
        fsync_dir(index_path.parent)
        fields = {k: v for k, v in snap.__dict__.items() if k != "on_disk"}  # index.json as before on_disk existed
        atomic_write_bytes(meta_path, (json.dumps(fields, indent=2) + "\n").encode())
        return snap

    @classmethod
    def load(
        cls, index_path: Path, meta_path: Path, dim: int, metric: str, search: dict[str, int]
    ) -> tuple[FaissIndex, Snapshot] | None:
        """The saved index and its snapshot record, or None when absent or inconsistent."""
        try:
            snap = Snapshot(**json.loads(meta_path.read_text()))
            if snap.on_disk is not None:
                return None  # ondisk.OnDiskIndex reads those
            if (
                index_path.stat().st_size != snap.file_bytes
                or file_digest(index_path, like=snap.file_digest) != snap.file_digest
            ):
                log.warning("index snapshot does not match index.json; rebuilding from the store")
                return None
            self = cls(snap.factory, dim, metric, search)
            loaded = self._read(str(index_path))
        except UnknownSpecError:
            return None
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            log.info("no usable index snapshot (%s)", exc)
            return None
        if not self._fits(loaded):
            return None
        if loaded.ntotal - snap.dead != snap.ntotal:
            return None
        self.index, self.dead = loaded, snap.dead
        if snap.trained:
            self.train_size = 0
        return self, snap

    def _read(self, path: str) -> Any:
        import faiss

        return faiss.read_index(path)

    def _fits(self, loaded: Any) -> bool:
        """Whether an index read from a snapshot is of this index's dimension and metric."""
        return loaded.d == self.dim and loaded.metric_type == faiss_metric(self.metric)
