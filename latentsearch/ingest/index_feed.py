"""The index thread of the write path: committed writes reach the index in the background."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..collection import Collection
    from .pipeline import Stages


class IndexFeed:
    """Applies committed writes to a collection's index in a thread of its own, in commit order,
    so the store's next transaction (and the caller's next ``add``) overlaps the index's work on
    the last one. At most one write waits (bounded memory). Everything that reads the index first
    waits for it (:meth:`Collection.index`); an error in the index surfaces there or at the next
    write, and drops the in-memory index, which the next use reloads from its snapshot and the
    store's change log (which holds every committed write).
    """

    def __init__(self, col: Collection):
        self.col = col
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="latentsearch-index")
        self.pending: Future[None] | None = None

    def submit(
        self, ids: np.ndarray, vectors: np.ndarray, replaced: np.ndarray, seq: int, stages: Stages | None = None
    ) -> None:
        """Queue committed rows (up to change ``seq``) for the index; ``stages.index`` gets the time."""
        self.wait()
        self.pending = self.pool.submit(self._apply, ids, vectors, replaced, seq, stages)

    def _apply(self, ids: np.ndarray, vectors: np.ndarray, replaced: np.ndarray, seq: int, stages: Stages | None) -> None:
        t0 = time.perf_counter()
        self.col._applied_own_write(ids, vectors, replaced, seq)
        if stages is not None:
            stages.index += time.perf_counter() - t0

    def wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            try:
                pending.result()
            except BaseException:
                self.col._index = None  # in an unknown state: reloaded on next use
                raise

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown()
