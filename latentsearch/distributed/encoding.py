"""Encoding on a Ray cluster: the driver lists and writes, Ray Data reads and encodes.

The driver (the process that runs ``index --ray``) walks the sources, checks each input at the
door, skips files whose size and mtime match the store, and hands the rest, a chunk per row, to a
Ray Data pipeline: an actor pool (one model per actor, a GPU each when the cluster has them) reads,
hashes, splits and encodes each chunk. The chunks come back to the driver in order, and the driver
writes each in its own transaction exactly as a single-process run does (the same incremental
rules: unchanged content is not written again, content the store has a vector for keeps it, the
passages a changed document lost are removed).

Workers never write. A killed task or actor is restarted and its chunk retried by Ray (Ray Data's
actor pools retry without limit) and the chunk is written once, by the driver; a killed driver leaves every committed chunk in the store, and running the command
again skips the files those chunks covered. Workers read the files themselves: on a cluster of
several machines the sources must be on a file system they all see (paths are absolute).
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import testing_hooks
from ..errors import LatentSearchError
from ..ingest.chunking import ChunkConfig
from ..ingest.passages import LazySplitter
from ..ingest.pipeline import Parts, Stages, encode_records, input_chunks
from ..ingest.prepare import Prepared, decide, read_records, release_images, unchanged_files
from ..ingest.records import Record
from ..types import IMAGE, Skipped
from .cluster import ray_module

log = logging.getLogger(__name__)

PARTITION_CHUNKS = 1024
"""Chunks handed to Ray in one dataset: the driver holds the listing of at most this many chunks
(unread files: paths and stats), and the actor pool is started once per partition."""


@dataclass
class Encoded:
    """A chunk back from a worker: its items (read, hashed, split) and their vectors."""

    loaded: list[tuple[Record, str | None]]
    vectors: np.ndarray
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0


class ChunkEncoder:
    """A Ray Data actor: loads the collection's encoder once and encodes chunks of records.

    The encoder is rebuilt from the pinned spec and checked against the pinned fingerprint (a
    worker whose model gives other vectors refuses, as the driver would)."""

    def __init__(
        self,
        spec: str,
        fingerprint: str,
        trust_remote_code: bool,
        dim: int,
        batch_size: int,
        chunking: ChunkConfig | None,
        kill_once: str | None = None,
    ):
        from ..encoders.lazy import LazyEncoder

        self.encoder = LazyEncoder(spec, fingerprint, trust_remote_code=trust_remote_code, where="the collection")
        self.splitter = LazySplitter(self.encoder, chunking) if chunking is not None else None
        self.dim, self.batch_size, self.kill_once = dim, batch_size, kill_once
        self.batches = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for payload in batch["chunk"]:
            self.batches += 1
            testing_hooks.kill_worker_once(self.kill_once, self.batches)
            out.append(pickle.dumps(self.encode(pickle.loads(payload)), protocol=pickle.HIGHEST_PROTOCOL))
        return {"encoded": np.array(out, dtype=object)}

    def encode(self, records: list[Record]) -> Encoded:
        t0 = time.perf_counter()
        prep = Prepared()
        images = any(r.modality == IMAGE for r in records)
        preprocess = getattr(self.encoder.get(), "preprocess_image", None) if images else None
        loaded = read_records(records, preprocess, self.splitter, prep)
        vectors = encode_records(self.encoder.get, [r for r, _ in loaded], self.dim, self.batch_size)
        release_images(r for r, _ in loaded)  # the driver needs the vectors, not the pixels
        return Encoded(loaded, vectors, prep.skipped, prep.warnings, time.perf_counter() - t0)


@dataclass
class Pool:
    """How many encoding actors, and what each holds."""

    actors: int
    cpus: float
    gpus: float

    @classmethod
    def for_cluster(cls, ray: Any, actors: int | None) -> Pool:
        """One actor per GPU when the cluster has GPUs, else one per CPU (``actors`` overrides;
        the CPUs are then shared among them)."""
        resources = ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
        n = actors or int(gpus) or max(1, int(cpus))
        share = max(1.0, cpus // n) if n <= cpus else cpus / n
        return cls(n, share, min(1.0, gpus / n) if gpus else 0.0)


def encoded_on_ray(
    parts: Parts, records: Iterable[Record | Skipped], batch_size: int, on_conflict: str,
    chunking: ChunkConfig | None, actors: int | None, stages: Stages,
) -> Iterator[tuple[Prepared, np.ndarray]]:
    """The encoded chunks of :func:`~latentsearch.ingest.pipeline.run_ingest` (``engine="ray"``),
    read and encoded on the Ray cluster this process is connected to (a local one is started
    when there is none), sorted against the store here, in input order."""
    ray = ray_module()
    if not ray.is_initialized():
        from .cluster import connect

        connect()
    pool = Pool.for_cluster(ray, actors)
    encoder = parts.encoder
    actor_args = {
        "spec": encoder.spec,
        "fingerprint": encoder.fingerprint,
        "trust_remote_code": encoder.trust_remote_code,
        "dim": parts.config.dim,
        "batch_size": batch_size,
        "chunking": chunking,
        "kill_once": os.environ.get(testing_hooks.KILL_WORKER_ONCE) or None,
    }
    log.info("encoding on Ray: %d actors, %g CPUs and %g GPUs each", pool.actors, pool.cpus, pool.gpus)
    for partition in _partitions(parts, records, batch_size, stages):
        sent = [fresh for _, fresh in partition if fresh]
        results = _encode_partition(ray, sent, pool, actor_args) if sent else iter(())
        for prep, fresh in partition:
            if not fresh:
                yield prep, np.zeros((0, parts.config.dim), np.float32)
                continue
            done: Encoded = next(results)
            stages.encode += done.seconds
            t0 = time.perf_counter()
            prep.skipped += done.skipped
            prep.warnings += done.warnings
            positions = decide(parts.store, done.loaded, on_conflict, prep)
            stages.read += time.perf_counter() - t0
            yield prep, done.vectors[positions]


def _partitions(
    parts: Parts, records: Iterable[Record | Skipped], batch_size: int, stages: Stages
) -> Iterator[list[tuple[Prepared, list[Record]]]]:
    """The input in chunks, each with what the store already has counted (``Prepared``) and the
    records left to read, :data:`PARTITION_CHUNKS` chunks at a time."""
    partition: list[tuple[Prepared, list[Record]]] = []
    for chunk in input_chunks(records, batch_size):
        t0 = time.perf_counter()
        prep = Prepared(size=len(chunk))
        fresh = unchanged_files(parts.store, chunk, prep)
        partition.append((prep, [] if fresh and all_unchanged(parts.store, fresh, prep) else fresh))
        stages.read += time.perf_counter() - t0
        if len(partition) >= PARTITION_CHUNKS:
            yield partition
            partition = []
    if partition:
        yield partition


def all_unchanged(store: Any, fresh: list[Record], prep: Prepared) -> bool:
    """Whether every record of a chunk holds its content in hand (lines of a record file, which
    carry no file state; vectors) and the store has its key with the same content and metadata:
    then the chunk is counted unchanged in ``prep`` and not sent to be encoded (the chunks a
    killed run committed, run again). A chunk with anything else goes to the workers whole, and
    :func:`~latentsearch.ingest.prepare.decide` sorts it there as a local run does."""
    if not all(r.key is not None and r.text_path is None and r.image_path is None and r.image is None for r in fresh):
        return False
    existing = store.keys_to_ids([r.key for r in fresh])
    if len(existing) < len(fresh) or any(existing[r.key][1] != r.content_hash() for r in fresh):
        return False
    stored = store.get([existing[r.key][0] for r in fresh])
    if any(stored[existing[r.key][0]].metadata != r.metadata for r in fresh):
        return False
    prep.unchanged += len(fresh)
    prep.slots += [existing[r.key][0] for r in fresh]
    return True


def _encode_partition(ray: Any, chunks: list[list[Record]], pool: Pool, actor_args: dict[str, Any]) -> Iterator[Encoded]:
    """The chunks encoded by an actor pool, in order."""
    from ray.data import DataContext

    context = DataContext.get_current()
    kept = context.execution_options.preserve_order
    context.execution_options.preserve_order = True  # the driver pairs each result with its chunk
    try:
        rows = [{"chunk": pickle.dumps(c, protocol=pickle.HIGHEST_PROTOCOL)} for c in chunks]
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            ChunkEncoder,
            fn_constructor_kwargs=actor_args,
            batch_size=1,
            batch_format="numpy",
            concurrency=min(pool.actors, len(rows)),
            num_cpus=pool.cpus,
            num_gpus=pool.gpus or None,
        )
    finally:
        context.execution_options.preserve_order = kept
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            for payload in batch["encoded"]:
                yield pickle.loads(payload)
    except Exception as exc:
        error = _user_error(exc)
        if error is exc:
            raise
        raise error from None


def _user_error(exc: BaseException) -> BaseException:
    """The latentsearch error a worker raised (Ray wraps it in its own; its cause is the
    worker's exception, unpickled), else ``exc``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, LatentSearchError):
            return current
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    return exc
