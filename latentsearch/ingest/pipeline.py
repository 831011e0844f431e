"""The write path, as overlapped stages: read → encode → write → index.

A reader thread groups incoming records into chunks, skips files whose size and mtime match the
store, reads and decodes the rest (a small thread pool: decoding images releases the GIL) and
hashes them (:mod:`.prepare`); the calling thread encodes; a writer thread commits each chunk in one transaction;
an index thread adds each committed chunk to the index while the next one is written. Queues
between the stages hold at most two chunks, so memory does not grow with the corpus, and every
committed chunk survives a crash (the index catches up from the change log on the next open).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from ..encoders.base import Encoder
from ..errors import InvalidInputError
from ..stores.sql import NewItem
from ..types import IMAGE, TEXT, VECTOR, IndexReport, Skipped
from ..vectors import as_matrix, prepare
from .chunking import ChunkConfig
from .keyset import KeySet
from .passages import LazySplitter
from .prepare import Prepared, decide, read_records, release_images, unchanged_files
from .records import Record, make_storable, printable

if TYPE_CHECKING:
    from ..config import CollectionConfig
    from ..encoders.lazy import LazyEncoder
    from ..indexes.sync import IndexSync
    from ..stores.sql import SqlStore

T = TypeVar("T")
Progress = Callable[[int], None]
IMAGE_WEIGHT = 8  # a decoded image holds far more memory than a text: fewer per chunk
# Most images in one chunk, whatever the batch size: a decoded image may hold up to 16 MiB
# (MAX_IMAGE_SIDE squared, 4 bytes a pixel) until it is encoded, and about four chunks are in
# flight (two queued, one read, one encoded), so at most ~1 GiB of pixels. The default batch
# size (64) gives 8 images a chunk; a batch size of 1024 would otherwise give 128 (2 GiB a chunk).
MAX_CHUNK_IMAGES = 16


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def chunked(items: Iterable[T], budget: int) -> Iterator[list[T]]:
    """Chunks of records whose weight (images count more) stays within ``budget``, with at most
    :data:`MAX_CHUNK_IMAGES` images each."""
    chunk: list[T] = []
    weight = images = 0
    for item in items:
        chunk.append(item)
        if isinstance(item, Record) and item.modality == IMAGE:
            weight += IMAGE_WEIGHT
            images += 1
        else:
            weight += 1
        if weight >= budget or images >= MAX_CHUNK_IMAGES:
            yield chunk
            chunk, weight, images = [], 0, 0
    if chunk:
        yield chunk


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a background thread, ``depth`` ahead; its exceptions re-raise here."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as exc:  # handed to the consumer, which raises it
            q.put(("error", exc))

    thread = threading.Thread(target=run, name="latentsearch-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


@dataclass
class Stages:
    """Seconds each stage was busy (they overlap, so the sum exceeds the wall time)."""

    read: float = 0.0
    encode: float = 0.0
    write: float = 0.0  # the store's transactions
    index: float = 0.0  # adding to the index, overlapping the next transaction (until the run ends)

    def add_index_time(self, seconds: float) -> None:
        self.index += seconds


class Parts(Protocol):
    """What the write path works with (a :class:`~latentsearch.ingest.writer.Writer`)."""

    config: CollectionConfig
    store: SqlStore
    encoder: LazyEncoder
    sync: IndexSync


def run_ingest(
    parts: Parts,
    records: Iterable[Record | Skipped],
    batch_size: int,
    on_conflict: str,
    progress: Progress | None,
    chunking: ChunkConfig | None = None,
    engine: str = "local",
    actors: int | None = None,
) -> IndexReport:
    """Read, encode and write ``records`` batch by batch: each encoded batch is committed in
    its own transaction and reported to ``progress`` (with the number of inputs it covered)
    as soon as it is, so an interrupted run keeps every finished batch. ``engine="ray"``:
    read and encoded by ``actors`` on a Ray cluster (:mod:`latentsearch.distributed.encoding`),
    written here all the same."""
    stages = Stages()
    if engine == "ray":
        from ..distributed.encoding import encoded_on_ray

        stream = encoded_on_ray(parts, records, batch_size, on_conflict, chunking, actors, stages)
        return write_all(parts, stream, progress, stages)
    splitter = LazySplitter(parts.encoder, chunking) if chunking is not None else None

    def encoded() -> Iterator[tuple[Prepared, np.ndarray]]:
        for prep in prefetch(_prepare(parts, chunk, on_conflict, stages, splitter) for chunk in input_chunks(records, batch_size)):
            t0 = time.perf_counter()
            vectors = encode_records(parts.encoder.get, [r for r, _ in prep.encode], parts.config.dim, batch_size)
            release_images(r for r, _ in prep.encode)  # the writer needs the vectors, not the pixels
            stages.encode += time.perf_counter() - t0
            yield prep, vectors

    return write_all(parts, encoded(), progress, stages)


def input_chunks(records: Iterable[Record | Skipped], batch_size: int) -> Iterator[list[Record | Skipped]]:
    """The inputs checked at the door, the first of each key kept, in chunks of ``batch_size``
    (images weigh more)."""
    return chunked(_first_of_each_key(_storable(records)), budget=batch_size)


def write_all(
    parts: Parts, encoded: Iterable[tuple[Prepared, np.ndarray]], progress: Progress | None, stages: Stages
) -> IndexReport:
    """Commit each encoded chunk in its own transaction (a writer thread, one chunk behind the
    encoder) and add it to the index; the report of the whole run."""
    report, started = IndexReport(), time.perf_counter()
    pending: Future[Any] | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="latentsearch-writer") as writer:
        for prep, vectors in encoded:
            report.unchanged += prep.unchanged
            report.inputs += prep.size
            report.skipped += prep.skipped
            report.warnings += prep.warnings
            if pending is not None:
                _merge(report, pending.result())
            pending = writer.submit(_write, parts, prep, vectors, stages, progress)
        if pending is not None:
            _merge(report, pending.result())
        parts.sync.wait()
    report.seconds = time.perf_counter() - started
    report.stages = {"read": stages.read, "encode": stages.encode, "write": stages.write, "index": stages.index}
    return report


def _storable(records: Iterable[Record | Skipped]) -> Iterator[Record | Skipped]:
    """Each record checked at the door, before the store sees its key (a key PostgreSQL cannot
    hold would fail the whole chunk's lookups): one that no store can hold is skipped with the
    reason. The size of a text is checked once it is split into passages (in :func:`_prepare`)."""
    for r in records:
        if isinstance(r, Record):
            try:
                make_storable(r, whole=False)
            except InvalidInputError as exc:
                yield Skipped(printable(r.source or r.key or "record"), str(exc))
                continue
        elif not r.source.isascii():
            r = Skipped(printable(r.source), r.reason)
        yield r


def _first_of_each_key(records: Iterable[Record | Skipped]) -> Iterator[Record | Skipped]:
    """A key seen before in this run is reported as a duplicate, not written twice (the keys
    seen are held as 8-byte digests: memory does not follow the corpus)."""
    seen = KeySet()
    for r in records:
        if isinstance(r, Record) and r.key is not None and not seen.add(r.key):
            yield Skipped(r.source or r.key, f"duplicate key {r.key!r}: it appeared earlier in this run")
            continue
        yield r


def _prepare(
    parts: Parts, chunk: list[Record | Skipped], on_conflict: str, stages: Stages, splitter: LazySplitter | None
) -> Prepared:
    t0 = time.perf_counter()
    prep = Prepared(size=len(chunk))
    fresh = unchanged_files(parts.store, chunk, prep)
    images = [r for r in fresh if r.modality == IMAGE]
    preprocess = getattr(parts.encoder.get(), "preprocess_image", None) if images else None
    loaded = read_records(fresh, preprocess, splitter, prep)
    decide(parts.store, loaded, on_conflict, prep)
    encoding = {id(r) for r, _ in prep.encode}
    release_images(r for r, _ in loaded if id(r) not in encoding)  # unchanged or reused: not encoded
    stages.read += time.perf_counter() - t0
    return prep


def _write(parts: Parts, prep: Prepared, vectors: np.ndarray, stages: Stages, progress: Progress | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    dim = parts.config.dim
    rows = [(r, d, v) for (r, d), v in zip(prep.encode, vectors)] + prep.reuse
    normalised = prepare(np.stack([v for _, _, v in rows]), dim, parts.config.metric) if rows else []
    inserts: list[tuple[Record, NewItem]] = []
    updates: dict[int, NewItem] = {}
    for (record, digest, _), vector in zip(rows, normalised):
        item = NewItem(
            vector=vector,
            modality=record.modality,
            key=record.key,
            source=record.source,
            text=record.text,
            metadata=record.metadata,
            content_hash=digest,
            document=record.document,
            file_size=record.stat.size if record.stat else None,
            file_mtime_ns=record.stat.mtime_ns if record.stat else None,
        )
        if record.key in prep.existing:
            updates[prep.existing[record.key]] = item  # type: ignore[index]
        else:
            inserts.append((record, item))
    new_ids: list[int] = []
    store, sync = parts.store, parts.sync
    if updates or prep.stale:
        # One transaction: a changed document's new passages and the removal of its old ones.
        # Searches wait for it and for the index: none sees new text beside an old vector.
        with sync.writing():
            new_ids = store.write([item for _, item in inserts], updates, deletes=prep.stale)
            t1 = time.perf_counter()
            sync.apply(*_index_rows(new_ids, inserts, updates, prep.stale, dim), store.written_seq)
            stages.index += time.perf_counter() - t1
    elif inserts:
        new_ids = store.write([item for _, item in inserts])
        t1 = time.perf_counter()
        sync.submit(*_index_rows(new_ids, inserts, {}, [], dim), store.written_seq, timer=stages.add_index_time)
        t0 += time.perf_counter() - t1  # waiting for the index is not the store's time
    store.set_file_states(prep.stats)
    assigned = {id(r): i for (r, _), i in zip(inserts, new_ids)}
    assigned.update({id(r): prep.existing[r.key] for r, _, _ in rows if r.key in prep.existing})
    ids = [s if isinstance(s, int) else assigned[id(s)] for s in prep.slots if s is not None]
    stages.write += time.perf_counter() - t0
    if progress:
        progress(prep.size)
    return {"added": len(new_ids), "updated": len(updates), "removed": len(prep.stale), "ids": ids}


def _index_rows(
    new_ids: list[int], inserts: list[tuple[Record, NewItem]], updates: dict[int, NewItem], stale: list[int], dim: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, vectors, replaced)`` for the index after a write of these rows."""
    written = [item.vector for _, item in inserts] + [item.vector for item in updates.values()]
    return (
        np.array(new_ids + list(updates), dtype=np.int64),
        np.stack(written) if written else np.zeros((0, dim), np.float32),
        np.array(list(updates) + stale, dtype=np.int64),
    )


def _merge(report: IndexReport, written: dict[str, Any]) -> None:
    report.added += written["added"]
    report.updated += written["updated"]
    report.removed += written["removed"]
    report.ids.extend(written["ids"])


def encode_records(
    get_encoder: Callable[[], Encoder | None], records: Sequence[Record], dim: int, batch_size: int
) -> np.ndarray:
    """Raw encoder output for loaded records, in order; ``get_encoder`` is called only when
    something needs a model, so precomputed vectors and unchanged files never load one."""
    out = np.zeros((len(records), dim), dtype=np.float32)
    by_modality: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        by_modality.setdefault(record.modality, []).append(i)
    for modality, positions in by_modality.items():
        if modality == VECTOR:
            out[positions] = as_matrix(np.stack([records[i].vector for i in positions]), dim)
            continue
        encoder = get_encoder()
        if encoder is None:
            raise InvalidInputError(
                f"this collection stores precomputed vectors only and cannot encode {modality}"
            )
        if modality == TEXT:
            out[positions] = encoder.encode_text([records[i].text for i in positions], batch_size)  # type: ignore[misc]
        else:
            out[positions] = encoder.encode_image([records[i].image for i in positions], batch_size)  # type: ignore[misc]
    return out
