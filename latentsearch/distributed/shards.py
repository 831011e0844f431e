"""Index shard builds: disjoint id ranges of the stored vectors, each added to a copy of one
trained empty index and written to its own file, in this process or as Ray tasks.

The driver (:func:`latentsearch.indexes.ondisk_build.build_on_disk`) trains the index once and cuts the
ids into ranges; :func:`run_shards` builds one :class:`ShardTask` per range. A task opens the store
itself, read-only (the SQLite file, or the PostgreSQL URL and schema), reads its range with the
store's keyset scan, adds it to a copy of the trained index and writes the shard atomically (temp
file, fsync, rename): a retried task writes the same file again, so a retry is harmless. With Ray,
the shard files go to the collection's folder, which every worker must see (one machine, or a
shared file system), and latentsearch must be installed on every worker.

Ray is imported inside :func:`run_shards` only; FAISS inside the task.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from ..config import fsync_dir, temp_path
from ..errors import InvalidInputError, LatentSearchError
from ..testing_hooks import fail_shard_once

if TYPE_CHECKING:
    from ..stores.sql import SqlStore

log = logging.getLogger(__name__)

SHARD_VECTORS = 200_000  # vectors per shard unless told: bounds a task's memory (its codes, one read batch)
READ_BATCH = 20_000  # vectors a task reads from the store at a time
MAX_RETRIES = 3  # attempts after the first, for a Ray task and in-process alike


@dataclass(frozen=True)
class StoreAddress:
    """Where a task finds the store, read-only: enough to open it again in another process."""

    url: str
    dim: int
    dtype: str
    schema: str | None

    @classmethod
    def of(cls, store: SqlStore) -> StoreAddress:
        """``store``'s address, read-only, made here (a relative SQLite path is this process's)."""
        return cls(read_only_url(store.url), store.dim, store.dtype.name, store.schema)

    def open_read_only(self) -> SqlStore:
        from ..stores.sql import SqlStore

        return SqlStore(self.url, self.dim, self.dtype, self.schema)


def read_only_url(text: str) -> str:
    """``text`` opened read-only: SQLite as a ``mode=ro`` URI of the absolute path, PostgreSQL
    with read-only transactions by default; other URLs as they are."""
    from sqlalchemy.engine import make_url

    url = make_url(text)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            return text
        return f"sqlite:///file:{quote(str(Path(database).resolve()))}?mode=ro&uri=true"
    if url.get_backend_name() == "postgresql":
        options = url.query.get("options", "")
        options = f"{options} -c default_transaction_read_only=on".strip()
        return url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    return text


@dataclass(frozen=True)
class ShardTask:
    """One shard: the ids in ``[start, stop)`` (``start`` a multiple of 8) into ``path``."""

    number: int
    start: int
    stop: int
    path: str
    store: StoreAddress
    fail_hook: str | None = None  # testing_hooks.shard_failure(), read on the driver


@dataclass(frozen=True)
class ShardResult:
    """What a task built: ``members`` has bit ``i`` set (little bit order) for each id
    ``start + i`` it added."""

    number: int
    path: str
    start: int
    ntotal: int
    members: np.ndarray


def build_shard(task: ShardTask, trained: np.ndarray) -> ShardResult:
    """Add the stored vectors of ``task``'s id range to a copy of the ``trained`` index (FAISS's
    serialised bytes) and write it to ``task.path`` atomically."""
    import faiss

    fail_shard_once(task.fail_hook, task.number)
    index = faiss.deserialize_index(np.ascontiguousarray(trained, dtype=np.uint8))
    bits = np.zeros(task.stop - task.start, dtype=bool)
    store = task.store.open_read_only()
    try:
        for ids, vectors in store.iter_vectors(READ_BATCH, task.start, task.stop):
            index.add_with_ids(vectors, ids)
            bits[ids - task.start] = True
    finally:
        store.close()
    write_index_atomically(index, Path(task.path))
    return ShardResult(task.number, task.path, task.start, int(index.ntotal), np.packbits(bits, bitorder="little"))


def write_index_atomically(index: Any, path: Path) -> None:
    """``faiss.write_index`` to a temp file, fsync, rename, fsync the folder."""
    import faiss

    tmp = temp_path(path)
    faiss.write_index(index, str(tmp))
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _ray_shard(task: ShardTask, trained: np.ndarray) -> ShardResult:
    """:func:`build_shard` in a Ray worker, with FAISS using the cores Ray gave the task."""
    import faiss
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    faiss.omp_set_num_threads(max(1, int(cpus)))
    return build_shard(task, trained)


def shard_count(n: int, address: str | None, shards: int | None = None) -> int:
    """How many shards ``n`` vectors are cut into: ``shards`` when given, else one per
    :data:`SHARD_VECTORS`, and with Ray at least one per CPU of the cluster."""
    if shards is not None:
        if shards < 1:
            raise InvalidInputError(f"shards must be at least 1, got {shards}")
        return int(shards)
    wanted = max(1, math.ceil(n / SHARD_VECTORS))
    if address is not None:
        from .cluster import connect

        cpus = int(connect(address).cluster_resources().get("CPU", 1))
        wanted = max(wanted, cpus)
    return wanted


def run_shards(
    tasks: list[ShardTask], trained: np.ndarray, address: str | None = None, retries: int = MAX_RETRIES
) -> list[ShardResult]:
    """Build every shard: as Ray tasks on the cluster at ``address`` (each retried up to
    ``retries`` times, after an exception or a lost worker), or, with ``address`` None, one
    after another in this process (retried the same way). Results in task order."""
    if address is None:
        return [_in_process(task, trained, retries) for task in tasks]
    from .cluster import connect

    ray = connect(address)
    remote = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(_ray_shard)
    shared = ray.put(trained)
    log.info("building %d index shards on Ray", len(tasks))
    try:
        return list(ray.get([remote.remote(task, shared) for task in tasks]))
    except Exception as exc:  # a task that failed on every attempt, or a lost cluster
        raise LatentSearchError(f"an index shard failed on Ray after {retries} retries: {exc}") from exc


def _in_process(task: ShardTask, trained: np.ndarray, retries: int) -> ShardResult:
    for attempt in range(retries + 1):
        try:
            return build_shard(task, trained)
        except LatentSearchError:
            raise
        except Exception as exc:
            if attempt == retries:
                raise LatentSearchError(f"index shard {task.number} failed {retries + 1} times: {exc}") from exc
            log.warning("index shard %d failed (%s); retrying", task.number, exc)
    raise AssertionError("unreachable")
