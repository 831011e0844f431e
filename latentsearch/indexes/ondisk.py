"""On-disk IVF indexes: the inverted lists in a memory-mapped file beside the snapshot.

``IVF1024,PQ32?on_disk=true`` (``latentsearch reindex COL --index IVF1024,PQ32 --on-disk``, or
``col.reindex("IVF1024,PQ32", on_disk=True)``) keeps an index larger than RAM: only the trained
quantiser, the table of lists and two bitmaps stay in memory; the codes and ids are read from the
file through the page cache as searches probe their lists.

**Build** (:func:`.ondisk_build.build_on_disk`, under the collection's writer lock):

1. the quantiser (and the PQ/SQ codebooks) is trained once, on :data:`.ondisk_build.TRAIN_SAMPLE` stored vectors
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
generation (one atomic rename); files of other generations are removed by later saves once the
process that built them is gone or is the saving one (another may still be searching its mapping).

**Serving** (:class:`OnDiskIndex`): the merged index, memory-mapped and never written (FAISS
maps the file read-write, so it must be writable by the user; read with
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
import secrets
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import atomic_write_bytes
from .factory import _ivf, faiss_metric
from .faiss_index import FaissIndex, Snapshot, file_digest
from .ondisk_files import _size, empty_like, mapped_resident_bytes, read_base

log = logging.getLogger(__name__)

ChangedSince = Callable[[int], "tuple[np.ndarray, int]"]


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


