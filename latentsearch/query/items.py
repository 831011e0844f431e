"""A cache of stored items for building hits without a store query, kept consistent with writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..types import Item

if TYPE_CHECKING:
    from ..stores.sql import SqlStore

CAPACITY = 200_000  # items held at most; a full cache starts afresh (the hot items return at once)


class ItemCache:
    """Items by id, read from the store on a miss.

    Consistency: :class:`~latentsearch.indexes.sync.IndexSync` calls :meth:`forget` with the
    ids of updated and deleted items under its write lock, and searches read the cache under
    its read lock, so a search never pairs an index entry with an item of another version.
    Items written by other processes are forgotten when the index catches up with them.
    """

    def __init__(self, store: SqlStore, capacity: int = CAPACITY):
        self.store, self.capacity = store, capacity
        self._items: dict[int, Item] = {}

    def get(self, ids: Sequence[int]) -> dict[int, Item]:
        """The items of ``ids`` that exist, by id (one store query for those not cached)."""
        items = self._items
        found: dict[int, Item] = {}
        missing = []
        for i in ids:
            item = items.get(i)
            if item is None:
                missing.append(i)
            else:
                found[i] = item
        if missing:
            fetched = self.store.get(missing)
            found.update(fetched)
            if len(items) + len(fetched) > self.capacity:
                items = self._items = {}
            items.update(fetched)
        return found

    def forget(self, ids: np.ndarray | None) -> None:
        """Drop these items (``None``: all of them)."""
        if ids is None:
            self._items = {}
            return
        items = self._items
        for i in ids.tolist():
            items.pop(i, None)
