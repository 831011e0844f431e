"""The files of an on-disk index (see :mod:`.ondisk`): generations and their names, reading the
memory-mapped lists, removing what no snapshot names any more, and what is resident."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config import pid_alive
from .factory import _ivf

_GENERATION = re.compile(r"\.?index-(?P<pid>\d+)-(?P<token>[0-9a-f]+)(?:\..*)?")


def new_generation() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def read_base(path: Path) -> Any:
    """The merged index at ``path``, its lists memory-mapped from the ``.ivfdata`` beside it."""
    import faiss

    with quiet_stdout():  # FAISS prints the lists file's new location on stdout
        return faiss.read_index(str(path.resolve()), faiss.IO_FLAG_ONDISK_SAME_DIR)


def empty_like(base_path: Path) -> Any:
    """An empty in-memory index of the base's trained type (quantiser and codebooks, no lists)."""
    import faiss

    index = faiss.read_index(str(base_path), faiss.IO_FLAG_SKIP_IVF_DATA)
    ivf = _ivf(index)
    lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.own_invlists = False  # the placeholder FAISS read in place of the lists (leaked, a few bytes)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns it now
    ivf.ntotal = index.ntotal = 0
    return index


def remove_stale(folder: Path, meta_file: str, keep: set[str]) -> list[Path]:
    """Remove on-disk index files and shard folders (``index-<generation>…``) that neither
    ``keep`` (names) nor the snapshot ``folder / meta_file`` names, of generations whose process
    is gone or is this one; returns what was removed. Call it holding the writer lock, after
    ``index.json`` was written."""
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    keep = keep | committed_files(folder / meta_file)
    kept_generations = {m["pid"] + "-" + m["token"] for name in keep if (m := _GENERATION.fullmatch(name))}
    for entry in entries:
        m = _GENERATION.fullmatch(entry.name)
        if m is None or entry.name in keep:
            continue
        generation, pid = f"{m['pid']}-{m['token']}", int(m["pid"])
        if entry.name.endswith(".shards") and generation in kept_generations:
            continue
        if pid != os.getpid() and pid_alive(pid):
            continue  # that process may be building it, or searching its mapping
        try:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def committed_files(meta_path: Path) -> set[str]:
    """The on-disk index files the ``index.json`` at ``meta_path`` names (none for an in-memory
    snapshot, or when it cannot be read)."""
    try:
        data = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return set()
    od = data.get("on_disk") if isinstance(data, dict) else None
    if not isinstance(od, dict):
        return set()
    return {str(od[k]) for k in ("base", "lists", "members", "delta") if isinstance(od.get(k), str)}


def mapped_resident_bytes(path: Path) -> int | None:
    """How much of ``path``, memory-mapped by this process, is in RAM now (the ``Rss`` of its
    mappings in ``/proc/self/smaps``); None where the system does not tell (not Linux)."""
    target = str(path.resolve())
    total, inside = 0, False
    try:
        with open("/proc/self/smaps") as fh:
            for line in fh:
                first = line.split(None, 1)[0]
                if "-" in first and not first.endswith(":"):  # a mapping's header line
                    inside = line.rstrip("\n").endswith(target)
                elif inside and first == "Rss:":
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return total


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence what C++ code prints on stdout (file descriptor 1) for the block: FAISS's on-disk
    lists print their progress there ("resizing …", "updating ondisk filename …"), which would
    corrupt ``--json`` output and tells a user nothing. Process-wide: another thread's writes to
    file descriptor 1 during the block (a build or an open, never a search) are lost too."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stdout.flush()
    saved, devnull = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def after_save(folder: Path, index_file: str, meta_file: str, kept: set[str]) -> None:
    """After a snapshot was written: an on-disk one (``kept``: its file names) makes the
    in-memory snapshot's ``index_file`` stale; other builds' files go once their process is gone."""
    if kept:
        (folder / index_file).unlink(missing_ok=True)
    remove_stale(folder, meta_file, kept)
