"""The manifest (``latentsearch.json``): what a collection is, pinned when it is created."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import CorruptCollectionError, InvalidInputError, unknown_name

FORMAT_VERSION = 1
MANIFEST = "latentsearch.json"
METRICS = ("cosine", "ip", "l2")
VECTOR_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class CollectionConfig:
    """Everything needed to reopen a collection and get the same answers."""

    encoder: str
    dim: int
    metric: str = "cosine"
    index: str = "auto"
    encoder_fingerprint: str = ""
    store_url: str | None = None  # None: metadata.db in the collection folder
    store_schema: str | None = None  # PostgreSQL schema that holds this collection's tables
    vector_dtype: str = "float32"
    format_version: int = FORMAT_VERSION
    created_by: str = ""
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    # Made once by ``create`` and recorded in the store and the index snapshot too, so that files
    # from another collection are recognised (see identity.py). None: made by an older version
    # (unbound), given one by the next write.
    collection_id: str | None = None
    # What the last tuning of the index to its recall target found (indexes/tuning.py: Tuning):
    # written by the write that tuned, read at open so searches use it without measuring again.
    # None: nothing tuned (no target, Flat, or a manifest of an older version).
    index_tuning: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InvalidInputError(
                f"unknown metric {self.metric!r}; use one of {', '.join(METRICS)}"
            )
        if self.vector_dtype not in VECTOR_DTYPES:
            raise InvalidInputError(
                f"unknown vector dtype {self.vector_dtype!r}; use one of {', '.join(VECTOR_DTYPES)}"
            )
        if not isinstance(self.dim, int) or self.dim <= 0:
            raise InvalidInputError(f"dimension must be a positive integer, got {self.dim!r}")
        if self.format_version > FORMAT_VERSION:
            raise CorruptCollectionError(
                f"this collection has format version {self.format_version}, newer than this "
                f"latentsearch understands ({FORMAT_VERSION}); upgrade latentsearch"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectionConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise unknown_name("manifest key", key, known)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> CollectionConfig:
        return dataclasses.replace(self, **changes)


def manifest_path(folder: Path) -> Path:
    return folder / MANIFEST


def read_manifest(folder: Path) -> CollectionConfig:
    path = manifest_path(folder)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise CorruptCollectionError(f"cannot read the manifest {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CorruptCollectionError(f"the manifest {path} is not a JSON object")
    return CollectionConfig.from_dict(data)


def write_manifest(folder: Path, config: CollectionConfig) -> None:
    atomic_write_bytes(
        manifest_path(folder), (json.dumps(config.to_dict(), indent=2) + "\n").encode()
    )


def temp_path(path: Path) -> Path:
    """Where this process writes ``path`` before renaming it into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def clean_stale_temps(folder: Path, names: tuple[str, ...]) -> list[Path]:
    """Remove the temporary files (see :func:`temp_path`) of ``names`` left by processes that
    died before renaming them (a kill during a save); returns what was removed. Call it holding
    the writer lock: no other process writes these files then."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.fullmatch(entry.name)
        if not m or m["name"] not in names or int(m["pid"]) == os.getpid() or pid_alive(int(m["pid"])):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    tmp = temp_path(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
