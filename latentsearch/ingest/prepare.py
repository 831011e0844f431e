"""Each chunk of inputs sorted against the store before it is encoded: unchanged files (not even
read), files read and hashed (a few threads: decoding images releases the GIL) and split into
passages, content the store already has a vector for, and the passages a changed document lost.
The reading half needs no store, so it runs where the encoder runs (a Ray worker, too)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError, error_reason
from ..types import IMAGE, TEXT, VECTOR, Skipped
from .records import Record, check_item, printable

if TYPE_CHECKING:
    from ..stores.sql import SqlStore

READ_THREADS = 4


@dataclass
class Prepared:
    """A chunk after the reader: what to encode, what to reuse, what is unchanged."""

    encode: list[tuple[Record, str]] = field(default_factory=list)  # (record, content hash)
    reuse: list[tuple[Record, str, np.ndarray]] = field(default_factory=list)
    existing: dict[str, int] = field(default_factory=dict)  # key -> id of the item it replaces
    slots: list[Record | int | None] = field(default_factory=list)  # per input: id, record or None (skipped)
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)  # same content, new stat
    stale: list[int] = field(default_factory=list)  # passages a changed document no longer has
    skipped: list[Skipped] = field(default_factory=list)
    unchanged: int = 0
    warnings: list[Skipped] = field(default_factory=list)
    size: int = 0  # inputs in the chunk, for progress


def unchanged_files(store: SqlStore, chunk: list[Record | Skipped], prep: Prepared) -> list[Record]:
    """The records of ``chunk`` to read: files whose size and mtime match the store are
    unchanged (counted in ``prep``, never read); skips found earlier go to ``prep.skipped``."""
    records = [r for r in chunk if isinstance(r, Record)]
    prep.skipped += [r for r in chunk if isinstance(r, Skipped)]
    states = store.file_states([_doc(r) for r in records if r.stat is not None and _doc(r)])
    fresh: list[Record] = []
    for r in records:
        if r.stat is not None and states.get(_doc(r)) == (r.stat.size, r.stat.mtime_ns):  # type: ignore[arg-type]
            prep.unchanged += 1
        else:
            fresh.append(r)
    return fresh


def read_records(
    fresh: list[Record], preprocess: Callable[[Any], Any] | None, splitter: Any, prep: Prepared
) -> list[tuple[Record, str | None]]:
    """Read, hash and split ``fresh`` records (files read by a few threads): ``(record, content
    hash)`` for each item to store; what cannot be read or stored goes to ``prep.skipped``.
    Needs no store: it runs where the encoder runs (a Ray worker, too)."""
    files = [r for r in fresh if r.text_path is not None or r.image_path is not None]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        read = {id(r): out for r, out in zip(files, pool.map(lambda r: _load(r, preprocess), files))}
    loaded: list[tuple[Record, str | None]] = []
    for record in fresh:
        record, digest, err = read.get(id(record)) or _load(record, preprocess)
        if err is not None:
            prep.skipped.append(Skipped(record.source or str(record.key), err))
            continue
        if record.warning:
            prep.warnings.append(Skipped(record.source or str(record.key), record.warning))
        passages = splitter.split(record) if splitter is not None and record.modality == TEXT else [record]
        try:
            for p in passages:
                check_item(p)  # the text now whole, and a passage's key longer than its document's
        except InvalidInputError as exc:
            prep.skipped.append(Skipped(printable(record.source or str(record.key)), str(exc)))
            continue
        if len(passages) > 1:
            loaded += [(p, p.content_hash()) for p in passages]
        else:
            loaded.append((record, digest))
    return loaded


def decide(
    store: SqlStore, loaded: list[tuple[Record, str | None]], on_conflict: str, prep: Prepared
) -> list[int]:
    """Sort loaded records against the store into ``prep``: unchanged (same content and
    metadata: only the file's new stat is kept), reused (content the store has a vector for: a
    renamed or copied file), to encode; and the stale passages of changed documents. Returns the
    positions in ``loaded`` that went to ``prep.encode``, in order."""
    existing = store.keys_to_ids([r.key for r, _ in loaded if r.key is not None])
    if existing and on_conflict == "error":
        raise InvalidInputError(f"key {next(iter(existing))!r} exists already; use upsert() to replace it")
    # A changed document may now have fewer passages: its items not written again go.
    documents = {_doc(r) for r, _ in loaded if _doc(r)}
    keep = {r.key for r, _ in loaded}
    prep.stale = [i for i, key in store.items_of_documents(sorted(documents)) if key not in keep]  # type: ignore[arg-type]
    reusable = store.vectors_by_hash([d for r, d in loaded if d and r.modality != VECTOR])
    # Same content may come with other metadata: then the item is updated (its vector reused).
    same = [existing[r.key][0] for r, d in loaded if r.key in existing and existing[r.key][1] == d]
    stored = store.get(same) if same else {}
    positions: list[int] = []
    for i, (record, digest) in enumerate(loaded):
        old = existing.get(record.key) if record.key is not None else None
        if old:
            prep.existing[record.key] = old[0]  # type: ignore[index]
        if old and old[1] == digest and stored[old[0]].metadata == record.metadata:
            # touched, same content and metadata: remember the new stat only
            if record.stat is not None:
                prep.stats[_doc(record)] = (record.stat.size, record.stat.mtime_ns)  # type: ignore[index]
            prep.slots.append(old[0])
            prep.unchanged += 1
            continue
        prep.slots.append(record)
        if digest in reusable:  # a renamed or copied file: its vector is already known
            prep.reuse.append((record, digest, reusable[digest]))  # type: ignore[arg-type]
        else:
            prep.encode.append((record, digest))  # type: ignore[arg-type]
            positions.append(i)
    return positions


def _doc(record: Record) -> str | None:
    return record.document or record.key


def _load(record: Record, preprocess: Callable[[Any], Any] | None = None) -> tuple[Record, str | None, str | None]:
    """Read and hash one record (and turn an image into model input when the encoder can);
    an error becomes the reason it is skipped."""
    try:
        record.load()
        if preprocess is not None and record.image is not None:
            record.image = preprocess(record.image)
        if record.modality == VECTOR and record.key is None:
            return record, None, None  # no key: nothing to compare with, so no hash needed
        return record, record.content_hash(), None
    except FileNotFoundError:
        return record, "", "file not found (it vanished, or the path is wrong)"
    except ValueError as exc:  # a reason already worded for the user (empty, binary, too large)
        return record, "", str(exc)
    except Exception as exc:  # OSError, and the many types Pillow raises for one bad file
        what = "image" if record.modality == IMAGE else "file"
        record.image = None if record.image_path is not None else record.image  # no half-read pixels kept
        return record, "", f"unreadable {what}: {error_reason(exc)}"


def release_images(records: Iterable[Record]) -> None:
    """Drop the decoded pixels (or model input) of encoded image files: only their file is
    kept, so a chunk waiting for its transaction holds no images."""
    for record in records:
        if record.image_path is not None:
            record.image = None
