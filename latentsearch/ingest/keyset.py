"""A set of strings at 8 bytes each, for the "seen before in this run?" checks of ingestion.

A run over a million files must not hold a million paths or keys (hundreds of bytes each as
Python strings). :class:`KeySet` keeps a 64-bit BLAKE2b digest per string instead: recent ones in
a small Python set, merged into one sorted numpy array when it fills. Two different strings share
a digest with probability about n² / 2⁶⁵ (3 in 100 million for a million strings); the cost of
such a collision is one input reported as a duplicate.
"""

from __future__ import annotations

import hashlib

import numpy as np

BUFFER = 4096  # digests held in the Python set before they are merged into the sorted array


def digest(key: str) -> int:
    """64 bits of BLAKE2b of the string (lone surrogates, as in undecodable file names, included)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class KeySet:
    """Membership of strings in about 8 bytes each (see the module docstring)."""

    def __init__(self, buffer: int = BUFFER):
        self._sorted = np.zeros(0, dtype=np.uint64)
        self._recent: set[int] = set()
        self._buffer = buffer

    def __len__(self) -> int:
        return len(self._sorted) + len(self._recent)

    def __contains__(self, key: str) -> bool:
        return self._has(digest(key))

    def _has(self, h: int) -> bool:
        if h in self._recent:
            return True
        i = int(np.searchsorted(self._sorted, np.uint64(h)))
        return i < len(self._sorted) and int(self._sorted[i]) == h

    def add(self, key: str) -> bool:
        """Add ``key``; False when it was there already."""
        h = digest(key)
        if self._has(h):
            return False
        self._recent.add(h)
        if len(self._recent) >= self._buffer:
            recent = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
            self._sorted = np.union1d(self._sorted, recent)
            self._recent.clear()
        return True
