"""Building an on-disk IVF index (see :mod:`.ondisk`): trained once here, shards added
elsewhere (:mod:`latentsearch.distributed.shards`), merged into a new generation's files; and
what :class:`~.sync.IndexSync` calls to build, read and save either kind of snapshot."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import atomic_write_bytes
from ..errors import InvalidInputError
from ..testing_hooks import crash_point, shard_failure
from .factory import _ivf, build_faiss, training_size
from .faiss_index import FaissIndex, Snapshot
from .ondisk import ChangedSince, OnDiskIndex
from .ondisk_files import after_save, new_generation, quiet_stdout, read_base

if TYPE_CHECKING:
    from ..stores.sql import SqlStore

log = logging.getLogger(__name__)

TRAIN_SAMPLE = 50_000  # vectors the quantiser trains on: what an in-memory build trains on (its first batch)
TRAIN_SEED = 0


@dataclass
class OnDiskBuilds:
    """How :class:`~.sync.IndexSync` builds on-disk indexes: the shards as Ray tasks on
    ``cluster`` (an address or ``"local"``; None: one after another in this process), ``shards``
    of them (None: by size)."""

    cluster: str | None = None
    shards: int | None = None

    @contextmanager
    def using(self, cluster: str | None, shards: int | None) -> Iterator[None]:
        """Build with ``cluster`` and ``shards`` within the block (``Collection.reindex``)."""
        saved = self.cluster, self.shards
        self.cluster, self.shards = cluster, shards
        try:
            yield
        finally:
            self.cluster, self.shards = saved

    def build(
        self, store: SqlStore, folder: Path, factory: str, dim: int, metric: str, search: dict[str, int],
        watermark: int, on_open: bool = False,
    ) -> OnDiskIndex | None:
        """:func:`build_on_disk` with these settings, the index reading stored vectors to
        rescore. Rebuilt ``on_open`` (no usable snapshot) over fewer vectors than ``factory``
        trains on: None, logged, and the caller builds in memory until a reindex (asked for
        explicitly, that is an error)."""
        if on_open and store.count() < (need := on_disk_minimum(factory, dim, metric)):
            log.warning("%s holds fewer than the %d vectors %s trains on: its index stays in memory until "
                        "`latentsearch reindex --on-disk`", folder, need, factory)
            return None
        index = build_on_disk(store, folder, factory, dim, metric, search, watermark, self.cluster, self.shards)
        index.vectors = store.vectors
        return index


def load_any(
    folder: Path, index_file: str, meta_file: str, dim: int, metric: str, search: dict[str, int],
    changed_since: ChangedSince,
) -> tuple[FaissIndex, Snapshot] | None:
    """The snapshot ``folder / meta_file`` describes: an on-disk index, or the in-memory index
    in ``index_file``; None when there is none usable."""
    try:
        snap = Snapshot(**json.loads((folder / meta_file).read_text()))
    except (OSError, ValueError, TypeError):
        snap = None
    if snap is not None and snap.on_disk is not None:
        return OnDiskIndex.load_snapshot(folder, snap, dim, metric, search, changed_since)
    return FaissIndex.load(folder / index_file, folder / meta_file, dim, metric, search)


def save_snapshot(
    index: FaissIndex, folder: Path, index_file: str, meta_file: str, spec: str, watermark: int,
    collection_id: str | None,
) -> Snapshot | None:
    """``index.save`` (either kind), then the files no snapshot names any more removed (see
    :func:`~.ondisk_files.after_save`); None when an on-disk index found its files replaced."""
    snap = index.save(folder / index_file, folder / meta_file, spec, watermark, collection_id)
    if snap is not None:
        after_save(folder, index_file, meta_file, {p.name for p in index.disk_files()})
    return snap


def build_on_disk(
    store: SqlStore,
    folder: Path,
    factory: str,
    dim: int,
    metric: str,
    search: dict[str, int] | None,
    watermark: int,
    address: str | None = None,
    shards: int | None = None,
) -> OnDiskIndex:
    """Build ``factory`` over every stored vector with its lists on disk (see the module): trained
    once here, added in shards (Ray tasks on the cluster at ``address``, else in this process),
    merged into new files of a new generation. Nothing is committed: :meth:`OnDiskIndex.save`
    does that. ``watermark``: the change the store's vectors are complete up to."""
    import faiss

    from ..distributed.shards import ShardTask, StoreAddress, run_shards, shard_count

    target = build_faiss(factory, dim, metric)
    if _ivf(target) is None:
        raise InvalidInputError(f"an on-disk index needs an IVF spec, not {factory!r}")
    n = store.count()
    need = max(training_size(target), 1)
    if n < need:
        raise InvalidInputError(
            f"{factory} needs at least {need:,} stored vectors to train before it can go on disk, and the "
            f"collection holds {n:,}: add vectors first, or use fewer lists (or a smaller PQ)"
        )
    parts = shard_count(n, address, shards)  # first: joins the Ray cluster (or says Ray is missing)
    ids = store.ids()
    sample = np.sort(np.random.default_rng(TRAIN_SEED).choice(ids, size=min(n, max(need, TRAIN_SAMPLE)), replace=False))
    del ids
    _, vectors = store.vectors(sample)
    log.info("training %s on %d stored vectors", factory, len(vectors))
    target.train(vectors)
    del vectors
    trained = faiss.serialize_index(target)

    generation = new_generation()
    staging = folder.resolve() / f".index-{generation}.shards"  # absolute: Ray workers have their own cwd
    staging.mkdir()
    cuts = _aligned(store.id_boundaries(parts))
    source = StoreAddress.of(store)
    hook = shard_failure()
    tasks = [
        ShardTask(i, lo, hi, str(staging / f"shard-{i:05d}.faiss"), source, hook)
        for i, (lo, hi) in enumerate(zip(cuts, cuts[1:]))
    ]
    files = [folder / f"index-{generation}{suffix}" for suffix in (".faiss", ".ivfdata", ".ids")]
    base_path, lists_path, members_path = files
    try:
        results = run_shards(tasks, trained, address)
        members = np.zeros((cuts[-1] + 7) // 8, dtype=np.uint8)
        for r in results:
            members[r.start // 8 : r.start // 8 + len(r.members)] |= r.members
        merged = faiss.deserialize_index(trained)
        with quiet_stdout():  # FAISS prints the file's resizing on stdout
            from faiss.contrib.ondisk import merge_ondisk

            merge_ondisk(merged, [r.path for r in results], str(lists_path))
        from ..distributed.shards import write_index_atomically

        write_index_atomically(merged, base_path)
        del merged  # unmaps the lists, written through the mapping
        with open(lists_path, "rb+") as fh:
            os.fsync(fh.fileno())
        atomic_write_bytes(members_path, members.tobytes())
        crash_point("before_swap")
        base = read_base(base_path)
    except BaseException:
        for path in files:
            path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    delta = faiss.deserialize_index(trained)
    log.info("built %s on disk: %d vectors in %d shards, lists in %s", factory, base.ntotal, len(tasks), lists_path.name)
    return OnDiskIndex(factory, dim, metric, search, folder, generation, base, delta, members, watermark)


def on_disk_minimum(factory: str, dim: int, metric: str) -> int:
    """The stored vectors an on-disk ``factory`` needs before it can be trained and built."""
    return max(training_size(build_faiss(factory, dim, metric)), 1)


def _aligned(cuts: list[int]) -> list[int]:
    """Range boundaries rounded down to multiples of 8 (each shard's id bitmap then starts on
    a byte), duplicates dropped, the last (one past the largest id) kept."""
    if not cuts:
        return [0, 8]  # no items: one empty shard
    inner = sorted({c - c % 8 for c in cuts[:-1]})
    return inner + [max(cuts[-1], inner[-1] + 1)]
