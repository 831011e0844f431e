"""On-disk IVF indexes: the inverted lists in a memory-mapped file beside the snapshot.

``IVF1024,PQ32?on_disk=true`` (``latentsearch reindex COL --index IVF1024,PQ32 --on-disk``, or
``col.reindex("IVF1024,PQ32", on_disk=True)``) keeps an index larger than RAM: only the trained
quantiser, the table of lists and two bitmaps stay in memory; the codes and ids are read from the
file through the page cache as searches probe their lists.

**Build** (:func:`build_on_disk`, under the collection's writer lock):

1. the quantiser (and the PQ/SQ codebooks) is trained once, on :data:`TRAIN_SAMPLE` stored vectors
   drawn with a fixed seed (more when the spec needs more: 39 per list, 39 per PQ centroid);
2. the ids are cut into disjoint ranges; each range is added to a copy of the trained empty index
   and written to its own shard file (:mod:`latentsearch.distributed.shards`: in this process, or
   Ray tasks);
3. ``faiss.contrib.ondisk.merge_ondisk`` concatenates the shards' lists into
   ``index-<generation>.ivfdata``; ``index-<generation>.faiss`` (the trained index whose lists
   point there) and ``index-<generation>.ids`` (a bitmap of the ids it holds) go beside it.

The generation (``<pid>-<random hex>``) names a new set of files: nothing the previous
``index.json`` names is touched, so a crash at any moment of a build leaves the previous index
working. The new index takes over when :meth:`OnDiskIndex.save` writes ``index.json`` naming its
generation (one atomic rename); files of other generations are removed by later saves once their
process is gone (a process may still be searching the mapping).

**Serving** (:class:`OnDiskIndex`): the merged index, memory-mapped and read-only (read with
``IO_FLAG_ONDISK_SAME_DIR``: the ``.ivfdata`` is looked for beside the ``.faiss`` file, not at the
absolute path FAISS stored, so a moved collection folder keeps working), plus a small in-memory
*delta* index of the same trained type. Writes after the build go to the delta; items of the
on-disk part that are deleted or updated since the build are hidden at query time (an
``IDSelectorBitmap`` of its live ids), and an update's new vector lives in the delta. Searches ask
both and merge the top k by score. A save writes the delta and ``index.json``, never the lists.
On open the hidden ids are read again from the store's change log (every change after the build's
watermark), so only the delta is saved; a delta file that is missing or damaged is replaced by an
empty one and the change log since the build replayed into it.

The ``.ivfdata`` file is checked by size on open, not hashed (it may be far larger than RAM); the
small ``.faiss`` and ``.ids`` files are hashed like other snapshots.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import atomic_write_bytes, pid_alive
from ..errors import InvalidInputError
from ..testing_hooks import crash_point, shard_failure
from .factory import _ivf, build_faiss, faiss_metric, training_size
from .faiss_index import FaissIndex, Snapshot, file_digest

if TYPE_CHECKING:
    from ..stores.sql import SqlStore

log = logging.getLogger(__name__)

TRAIN_SAMPLE = 50_000  # vectors the quantiser trains on: what an in-memory build trains on (its first batch)
TRAIN_SEED = 0
_GENERATION = re.compile(r"\.?index-(?P<pid>\d+)-(?P<token>[0-9a-f]+)(?:\..*)?")
ChangedSince = Callable[[int], "tuple[np.ndarray, int]"]


def new_generation() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


class OnDiskIndex(FaissIndex):
    """An IVF index whose lists are memory-mapped from a file (the *base*, as built), plus an
    in-memory *delta* of the same trained type for later writes; see the module.

    :attr:`index` is the delta (what :class:`FaissIndex`'s callers inspect: its IVF has the
    base's quantiser and ``nlist``); :attr:`base` the memory-mapped index."""

    def __init__(
        self,
        factory: str,
        dim: int,
        metric: str,
        search: dict[str, int] | None,
        folder: Path,
        generation: str,
        base: Any,
        delta: Any,
        members: np.ndarray,
        base_watermark: int,
    ):
        # Nothing of FaissIndex.__init__: both indexes exist already.
        self.vectors = None
        self.factory, self.dim, self.metric = factory, dim, metric
        self.search_options = dict(search or {})
        self.folder, self.generation, self.base_watermark = folder, generation, base_watermark
        self.base, self.index = base, delta
        self.base_ntotal = int(base.ntotal)
        self.nlist = int(_ivf(base).nlist)
        self._members = members  # bit i: id i is in the base (packed, little bit order)
        self._live = members.copy()  # members less the hidden ids
        self._live_count = self.base_ntotal
        self.delta_file: str | None = None  # the delta's file, once saved or loaded
        self._native_ids, self.train_size, self.dead = True, 0, 0
        self._gpu: Any = False  # the lists stay on disk: never copied to a GPU
        self._gpu_lock = threading.Lock()

    # -- files ---------------------------------------------------------------------------------

    @property
    def base_path(self) -> Path:
        return self.folder / f"index-{self.generation}.faiss"

    @property
    def lists_path(self) -> Path:
        return self.folder / f"index-{self.generation}.ivfdata"

    @property
    def members_path(self) -> Path:
        return self.folder / f"index-{self.generation}.ids"

    def disk_files(self) -> list[Path]:
        files = [self.base_path, self.lists_path, self.members_path]
        return files + ([self.folder / self.delta_file] if self.delta_file else [])

    # -- cheap state ---------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return self._live_count + int(self.index.ntotal)

    def _stored(self) -> int:
        return self.base_ntotal + int(self.index.ntotal)

    @property
    def hidden(self) -> int:
        """Vectors of the on-disk part hidden because their items were deleted or updated."""
        return self.base_ntotal - self._live_count

    def describe(self) -> str:
        return f"{self.factory} (lists on disk)"

    def memory_bytes(self) -> int:
        """The in-RAM part: the delta, the quantiser and table of lists (about the size of the
        base's ``.faiss`` file) and the two id bitmaps; the lists' pages in the page cache are
        the kernel's (see :meth:`on_disk_info`)."""
        import faiss

        delta = int(faiss.serialize_index(self.index).nbytes)  # its own copy of the quantiser, too
        return delta + _size(self.base_path) + self._members.nbytes + self._live.nbytes

    def on_disk_info(self) -> dict[str, Any]:
        return {
            "index_on_disk": True,
            "index_lists_file": str(self.lists_path),
            "index_lists_bytes": _size(self.lists_path),  # the file on disk
            "index_lists_resident_bytes": mapped_resident_bytes(self.lists_path),  # its pages in RAM now
            "index_delta_vectors": int(self.index.ntotal),
            "index_hidden_vectors": self.hidden,
        }

    # -- mutation (the delta, and ids hidden in the base) ----------------------------------------

    def remove(self, ids: np.ndarray) -> int:
        import faiss

        ids = np.unique(np.asarray(ids, dtype=np.int64))
        if not len(ids):
            return 0
        removed = int(self.index.remove_ids(faiss.IDSelectorBatch(ids))) if self.index.ntotal else 0
        return removed + self._hide(ids)

    def _hide(self, ids: np.ndarray) -> int:
        """Clear the live bits of ``ids`` (unique) in the base; returns how many were live."""
        ids = ids[(ids >= 0) & (ids < 8 * len(self._live))]
        if not len(ids):
            return 0
        byte, bit = ids >> 3, (1 << (ids & 7)).astype(np.uint8)
        live = (self._live[byte] & bit) != 0
        np.bitwise_and.at(self._live, byte[live], ~bit[live])
        count = int(live.sum())
        self._live_count -= count
        return count

    def ids(self) -> np.ndarray:
        base = list_ids(_ivf(self.base).invlists)
        base = base[(base >= 0) & (base < 8 * len(self._live))]
        alive = base[((self._live[base >> 3] >> (base & 7).astype(np.uint8)) & 1) == 1]
        return np.concatenate([alive, list_ids(_ivf(self.index).invlists)])

    # -- search --------------------------------------------------------------------------------

    def _search(
        self, xq: np.ndarray, k: int, selector: Any = None, options: dict[str, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The base's and the delta's top ``k`` (the base without its hidden ids), merged."""
        import faiss

        nprobe = self.nprobe(self.nlist, options)
        keep: list[Any] = [selector]
        results = []
        if self._live_count:
            sel = selector
            if self._live_count < self.base_ntotal:
                live = faiss.IDSelectorBitmap(self._live)
                sel = live if selector is None else faiss.IDSelectorAnd(selector, live)
                keep += [live, sel]
            results.append(self.base.search(xq, k, params=faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)))
        if self.index.ntotal:
            results.append(self.index.search(xq, k, params=faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)))
        del keep
        if not results:
            return _empty(len(xq), k, self.metric)
        return results[0] if len(results) == 1 else merge_results(results, k, self.metric)

    # -- persistence ---------------------------------------------------------------------------

    def save(
        self, index_path: Path, meta_path: Path, spec: str, watermark: int, collection_id: str | None = None
    ) -> Snapshot | None:
        """Write the delta, then ``index.json`` naming this generation (the commit point), each
        atomically; the lists file is never rewritten (``index_path``, the in-memory snapshot's
        file, is not written). When this generation's files are gone (another process reindexed
        and removed them; this process still searches its mapping), nothing is written (logged):
        the snapshot on disk stays the other process's, which the store's change log completes."""
        missing = [p.name for p in self.disk_files()[:3] if not p.exists()]
        if missing:
            log.warning("not saving the on-disk index of %s: its files %s were replaced by another process's "
                        "reindex", self.folder, ", ".join(missing))
            return None
        delta_path = self.folder / f"index-{self.generation}.delta-{secrets.token_hex(4)}.faiss"
        from ..distributed.shards import write_index_atomically

        write_index_atomically(self.index, delta_path)
        snap = Snapshot(
            spec=spec,
            factory=self.factory,
            trained=True,
            watermark=watermark,
            ntotal=self.ntotal,
            dead=0,
            file_bytes=_size(delta_path),
            file_digest=file_digest(delta_path),
            collection_id=collection_id,
            on_disk={
                "generation": self.generation,
                "base": self.base_path.name,
                "base_bytes": _size(self.base_path),
                "base_digest": file_digest(self.base_path),
                "base_ntotal": self.base_ntotal,
                "base_watermark": self.base_watermark,
                "lists": self.lists_path.name,
                "lists_bytes": _size(self.lists_path),
                "members": self.members_path.name,
                "members_digest": file_digest(self.members_path),
                "delta": delta_path.name,
                "delta_ntotal": int(self.index.ntotal),
            },
        )
        atomic_write_bytes(meta_path, (json.dumps(snap.__dict__, indent=2) + "\n").encode())
        self.delta_file = delta_path.name
        return snap

    @classmethod
    def load_snapshot(
        cls, folder: Path, snap: Snapshot, dim: int, metric: str, search: dict[str, int], changed_since: ChangedSince
    ) -> tuple[OnDiskIndex, Snapshot] | None:
        """The on-disk index ``snap`` (an ``index.json`` with ``on_disk``) names, its hidden ids
        read from ``changed_since`` (the store's change log); None when its base files are
        missing or do not match. A missing or damaged delta is replaced by an empty one and the
        returned snapshot's watermark set back to the build's (the caller replays from there)."""
        od = dict(snap.on_disk or {})
        try:
            base_path, lists_path, members_path = folder / od["base"], folder / od["lists"], folder / od["members"]
            generation = str(od["generation"])
            bad = _mismatch(base_path, od["base_bytes"], od["base_digest"]) or _mismatch(
                members_path, None, od["members_digest"]
            )
            if bad is None and _size(lists_path) != od["lists_bytes"]:
                bad = f"{lists_path.name} is not the size index.json records"
            if bad is not None:
                log.warning("the on-disk index of %s is unusable (%s)", folder, bad)
                return None
            base = read_base(base_path)
            if base.d != dim or base.metric_type != faiss_metric(metric) or base.ntotal != od["base_ntotal"]:
                log.warning("the on-disk index of %s is not of this collection's dimension, metric or size", folder)
                return None
            members = np.fromfile(members_path, dtype=np.uint8)
            delta, delta_file = _read_delta(folder, snap, od)
        except (KeyError, TypeError, ValueError, OSError, RuntimeError) as exc:
            log.warning("the on-disk index of %s is unusable (%s)", folder, exc)
            return None
        if delta is None:
            log.info("replaying the changes since the on-disk build of %s into a new delta", folder)
            delta = empty_like(base_path)
            snap = replace(snap, watermark=int(od["base_watermark"]))
        self = cls(snap.factory, dim, metric, search, folder, generation, base, delta, members, int(od["base_watermark"]))
        self.delta_file = delta_file
        changed, _ = changed_since(self.base_watermark)
        self._hide(np.unique(changed))
        return self, snap


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


# -- building ------------------------------------------------------------------------------------


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
    staging = folder / f".index-{generation}.shards"
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


# -- files ---------------------------------------------------------------------------------------


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


def _read_delta(folder: Path, snap: Snapshot, od: dict[str, Any]) -> tuple[Any, str | None]:
    """The saved delta and its file name, or ``(None, None)`` when missing or not the one
    ``index.json`` records."""
    import faiss

    name = od.get("delta")
    if not name:
        return None, None
    path = folder / name
    if _mismatch(path, snap.file_bytes, snap.file_digest) is not None:
        log.warning("the delta %s of the on-disk index does not match index.json", name)
        return None, None
    delta = faiss.read_index(str(path))
    if delta.ntotal != od.get("delta_ntotal"):
        return None, None
    return delta, name


def _mismatch(path: Path, size: int | None, digest: str) -> str | None:
    if not path.exists():
        return f"{path.name} is missing"
    if size is not None and _size(path) != size:
        return f"{path.name} is not the size index.json records"
    if file_digest(path, like=digest) != digest:
        return f"{path.name} is not the file index.json records"
    return None


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
    """Send what C++ code prints on stdout (file descriptor 1) to stderr for the block: FAISS's
    on-disk lists print progress there, which would corrupt ``--json`` output."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        os.dup2(sys.stderr.fileno() if _has_fileno(sys.stderr) else os.open(os.devnull, os.O_WRONLY), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
        return True
    except (AttributeError, ValueError, OSError):
        return False


# -- numbers -------------------------------------------------------------------------------------


def list_ids(invlists: Any) -> np.ndarray:
    """Every id in FAISS inverted lists, list by list."""
    import faiss

    parts = [
        faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
        for i in range(invlists.nlist)
        if invlists.list_size(i)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def merge_results(results: list[tuple[np.ndarray, np.ndarray]], k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of several ``(D, I)`` of shape ``(nq, k)`` (smallest distances for l2,
    largest scores otherwise; ``-1`` ids last, ties in the order given)."""
    D = np.hstack([d for d, _ in results])
    I = np.hstack([i for _, i in results])
    key = D if metric == "l2" else -D
    key = np.where(I < 0, np.inf, key)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)


def _empty(nq: int, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    worst = np.finfo(np.float32).max if metric == "l2" else -np.finfo(np.float32).max
    return np.full((nq, k), worst, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
