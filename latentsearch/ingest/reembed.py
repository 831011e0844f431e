"""Re-embedding a collection whose encoder changed (new weights, new preprocessing)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..encoders.base import Encoder
from ..errors import error_reason
from ..types import IndexReport, Skipped
from ..vectors import prepare
from .pipeline import Progress, chunked, encode_records, release_images
from .records import Record

if TYPE_CHECKING:
    from ..config import CollectionConfig
    from ..indexes.sync import IndexSync
    from ..stores.sql import SqlStore


def reembed(
    store: SqlStore,
    sync: IndexSync,
    encoder: Encoder,
    config: CollectionConfig,
    batch_size: int,
    progress: Progress | None,
) -> IndexReport:
    """Encode every stored item again, batch by batch, each batch one transaction.

    Texts come from the store, images from their files; an image whose file is gone or no longer
    decodes is reported as skipped and keeps its old vector. The caller records the new
    fingerprint only after this returns, so an interrupted run is simply run again.
    """
    report, started = IndexReport(), time.perf_counter()
    for items in store.iter_items(batch_size * 4):
        records: list[tuple[int, Record]] = []
        for item in items:
            if item.modality == "text" and item.text is not None:
                records.append((item.id, Record(text=item.text)))
            elif item.modality == "image" and item.source and Path(item.source).is_file():
                records.append((item.id, Record(image_path=Path(item.source))))
            elif item.modality != "vector":
                report.skipped.append(Skipped(item.source or str(item.id), "source file is gone"))
        item_ids = {id(record): item_id for item_id, record in records}
        readable: list[tuple[int, Record]] = []
        raw = [np.zeros((0, config.dim), np.float32)]
        # Decoded a chunk at a time (at most MAX_CHUNK_IMAGES images), and dropped once encoded.
        for chunk in chunked([record for _, record in records], batch_size):
            loaded: list[Record] = []
            for record in chunk:
                try:
                    record.load()
                    loaded.append(record)
                except Exception as exc:  # Pillow raises many types for one bad file
                    report.skipped.append(Skipped(str(record.image_path), f"unreadable: {error_reason(exc)}"))
            raw.append(encode_records(lambda: encoder, loaded, config.dim, batch_size))
            release_images(loaded)
            readable += [(item_ids[id(record)], record) for record in loaded]
        vectors = prepare(np.concatenate(raw), config.dim, config.metric)
        updated = {item_id: v for (item_id, _), v in zip(readable, vectors)}
        ids = np.array(list(updated), dtype=np.int64)
        with sync.writing():
            store.replace_vectors(updated)
            sync.apply(ids, vectors, ids, store.written_seq)
        report.updated += len(updated)
        if progress:
            progress(len(items))
    report.seconds = time.perf_counter() - started
    return report
