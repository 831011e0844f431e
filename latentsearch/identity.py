"""Which collection the files in a folder belong to, and making a new folder all at once.

A collection id (a UUID made once by ``create``) is recorded in the manifest, in the store's
``info`` table and in the index snapshot's ``index.json``. Opening checks that the store is
this collection's and fits the manifest (dimension, vector type, metric); the index ignores a
snapshot that names another id (see :mod:`latentsearch.indexes.sync`). Collections made before
ids existed are unbound: the next write gives them one (:func:`bind`).

``create`` builds a new collection in a hidden sibling folder and renames it into place, so a
killed create leaves no half-made collection at the path: the next create there removes the
leftover (and on PostgreSQL the schema it made).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.request import pathname2url

import numpy as np
from filelock import FileLock, Timeout

from .config import CollectionConfig, fsync_dir, manifest_path, read_manifest, write_manifest
from .errors import CollectionExistsError, CorruptCollectionError, LatentSearchError
from .stores.sql import COLLECTION_ID, SqlStore, sqlite_url

log = logging.getLogger(__name__)

STORE_FILE = "metadata.db"
STAGING = ".creating-"  # .NAME.creating-HEX: a collection being made, renamed to NAME when complete
STAGE_LOCK = ".lock"  # held by the process making a staged folder
# What a create of an older version left when killed before writing the manifest.
HALF_MADE = {STORE_FILE, f"{STORE_FILE}-wal", f"{STORE_FILE}-shm", f"{STORE_FILE}-journal", ".lock"}


def new_collection_id() -> str:
    return uuid.uuid4().hex


# -- opening: is this store the collection's? -----------------------------------------------------


def check_store(path: Path, config: CollectionConfig, store: SqlStore) -> None:
    """Before anything reads the store: it exists, belongs to this collection and holds
    vectors of the manifest's dimension and type; otherwise an error naming the file at fault."""
    manifest = manifest_path(path)
    file = store.sqlite_file
    if file is not None and not file.exists():
        raise CorruptCollectionError(
            f"the store file {file} of the collection at {path} is missing (deleted or moved); "
            f"put it back (from a backup), or delete {path} and index again"
        )
    store.check_schema()
    info = store.info()
    theirs = info.get(COLLECTION_ID)
    if theirs and config.collection_id and theirs != config.collection_id:
        raise mismatch(manifest, store, config.collection_id, theirs)
    if "dim" in info and info["dim"] != str(config.dim):
        raise CorruptCollectionError(
            f"the manifest {manifest} says the vectors have dimension {config.dim}, but the store "
            f"{store.location} holds vectors of dimension {info['dim']}: the manifest was edited or "
            f"comes from another collection; restore it (\"dim\": {info['dim']})"
        )
    for field in ("vector_dtype", "metric"):
        mine = getattr(config, field)
        if field in info and info[field] != mine:
            raise CorruptCollectionError(
                f"the manifest {manifest} says {field} {mine!r}, but the store {store.location} was made "
                f"with {info[field]!r}: the manifest was edited or comes from another collection; restore it"
            )
    size, expected = store.vector_bytes(), config.dim * np.dtype(config.vector_dtype).itemsize
    if size is not None and size != expected:
        raise CorruptCollectionError(
            f"the store {store.location} holds vectors of {size} bytes, but the manifest {manifest} says "
            f"{config.dim} {config.vector_dtype} values ({expected} bytes): the manifest or the store comes "
            "from another collection; put back this collection's own"
        )


def mismatch(manifest: Path, store: SqlStore, mine: str | None, theirs: str | None) -> CorruptCollectionError:
    what = f"the store file {store.sqlite_file}" if store.sqlite_file else f"the store {store.location}"
    return CorruptCollectionError(
        f"{what} belongs to another collection (id {theirs}) than the manifest {manifest} (id {mine}): "
        "one of them was copied from another collection; put back this collection's own store and manifest"
    )


def bind(path: Path, config: CollectionConfig, store: SqlStore) -> CollectionConfig:
    """Under the writer lock: make the manifest and the store name one collection id, giving a
    collection made by an older version its id (the manifest first: a crash between the two
    writes leaves a bound manifest and an unbound store, which the next write completes).
    Returns the configuration with the id."""
    theirs = store.collection_id()
    if config.collection_id is None:
        on_disk = read_manifest(path)  # another process may have bound it meanwhile
        cid = on_disk.collection_id or theirs or new_collection_id()
        if on_disk.collection_id is None:
            write_manifest(path, on_disk.replace(collection_id=cid))
            log.info("the collection at %s now has the id %s", path, cid)
        config = config.replace(collection_id=cid)
    if theirs is None:
        store.set_info(COLLECTION_ID, config.collection_id)  # type: ignore[arg-type]
    elif theirs != config.collection_id:
        raise mismatch(manifest_path(path), store, config.collection_id, theirs)
    return config


# -- creating: all at once ------------------------------------------------------------------------


def schema_name(path: Path) -> str:
    """A fresh PostgreSQL schema name for a collection at ``path``."""
    return f"{schema_prefix(path)}{secrets.token_hex(4)}"


def schema_prefix(path: Path) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", path.name.lower()).strip("_")[:40] or "collection"
    return f"ls_{slug}_"


def check_free(path: Path) -> None:
    """An error unless ``path`` can become a new collection: absent or an empty folder (a folder
    that only a killed create of an older version wrote to is emptied first)."""
    if manifest_path(path).exists():
        raise CollectionExistsError(f"a collection already exists at {path}; open it instead")
    if path.is_dir() and not path.is_symlink():
        _clear_half_made(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise CollectionExistsError(f"{path} exists and is not an empty folder")


def stage(path: Path) -> tuple[Path, FileLock]:
    """A new hidden sibling folder of ``path`` to build the collection in, locked by this
    process (leftovers of killed creates at ``path`` are removed first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_stages(path)
    staged = path.parent / f".{path.name}{STAGING}{secrets.token_hex(4)}"
    staged.mkdir()
    lock = FileLock(str(staged / STAGE_LOCK), thread_local=False)
    lock.acquire(timeout=0)
    return staged, lock


def publish(staged: Path, path: Path) -> None:
    """Rename the complete ``staged`` folder to ``path`` (absent, or an empty folder it replaces)."""
    try:
        os.rename(staged, path)  # POSIX replaces an empty folder, and nothing else
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EACCES):
            raise
        try:  # where renaming onto an empty folder is refused (Windows): remove it first
            path.rmdir()
            os.rename(staged, path)
        except OSError:
            raise CollectionExistsError(f"{path} was created by another process meanwhile; open it instead") from exc
    fsync_dir(path.parent)


def build(path: Path, config: CollectionConfig, fill: Callable[[SqlStore], None] | None = None) -> None:
    """Make the collection ``config`` describes at ``path``: in a locked hidden sibling folder,
    the manifest first (so what a killed build leaves names its store), then the store, then
    ``fill(store)`` (an import's rows), then one rename into place. Killed at any point, it leaves
    nothing at ``path``; the next build there removes what it left."""
    staged, lock = stage(path)
    try:
        write_manifest(staged, config)
        made = SqlStore(config.store_url or sqlite_url(staged / STORE_FILE), config.dim, config.vector_dtype, config.store_schema)
        try:
            made.create({"encoder": config.encoder, "dim": str(config.dim), "metric": config.metric,
                         "vector_dtype": config.vector_dtype, "collection_id": config.collection_id or ""})
            if fill is not None:
                fill(made)
        finally:
            made.close()
        publish(staged, path)
    except BaseException:
        if staged.exists():
            discard(staged, config)
        raise
    finally:
        lock.release(force=True)


def discard(staged: Path, config: CollectionConfig | None) -> None:
    """Remove a staged folder that will not become a collection, and the schema its store made."""
    if config is not None and config.store_schema and config.store_url:
        _drop_schema(config, staged)
    shutil.rmtree(staged, ignore_errors=True)


def remove_stale_stages(path: Path) -> list[Path]:
    """Remove the staged folders of creates at ``path`` whose process is gone (its lock is free)."""
    removed = []
    prefix = f".{path.name}{STAGING}"
    try:
        entries = [e for e in path.parent.iterdir() if e.name.startswith(prefix)]
    except OSError:
        return removed
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir():
            continue
        lock = FileLock(str(entry / STAGE_LOCK), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # a create in progress
        try:
            try:
                config: CollectionConfig | None = read_manifest(entry)
            except (OSError, LatentSearchError, TypeError):
                config = None
            if config is not None and config.store_schema and config.store_url:
                if not re.fullmatch(re.escape(schema_prefix(path)) + "[0-9a-f]{8}", config.store_schema):
                    log.warning("not touching the schema %r named in %s: not one create makes", config.store_schema, entry)
                    config = None
            log.warning("removing %s, left by a create of %s that did not finish", entry, path)
            discard(entry, config)
            removed.append(entry)
        finally:
            lock.release(force=True)
    return removed


def _drop_schema(config: CollectionConfig, where: Path) -> None:
    """Drop the PostgreSQL schema of a create that did not finish, if it holds no items and
    names no other collection."""
    store = SqlStore(config.store_url, config.dim, config.vector_dtype, config.store_schema)  # type: ignore[arg-type]
    try:
        if not store.exists():
            return
        if store.collection_id() not in (None, config.collection_id) or store.count():
            log.warning("leaving the store %s named in %s: it holds items or another collection", store.location, where)
            return
        store.drop()
    except Exception as exc:  # cleanup must not hide what the caller is doing
        log.warning("could not remove the store %s of an unfinished create: %s", store.location, exc)
    finally:
        store.close()


def _clear_half_made(path: Path) -> None:
    """Empty a folder holding only an item-less ``metadata.db`` and no manifest: what a create of
    an older version left when killed before it wrote the manifest."""
    names = {p.name for p in path.iterdir()}
    if STORE_FILE not in names or not names <= HALF_MADE:
        return
    try:
        db = sqlite3.connect(f"file:{pathname2url(str(path / STORE_FILE))}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            items = db.execute("SELECT count(*) FROM items").fetchone()[0] if "items" in tables else 0
        finally:
            db.close()
    except sqlite3.Error:
        return  # not a database we can read: not ours to remove
    if items:
        return
    log.warning("removing the empty store a create of %s left when it was interrupted", path)
    for name in names:
        (path / name).unlink(missing_ok=True)
