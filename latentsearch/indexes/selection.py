"""Index specs: parsing our ``?option`` suffix and choosing a concrete spec for ``auto``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import InvalidInputError, unknown_name

SEARCH_OPTIONS = ("nprobe", "efSearch")
# FAISS builds HNSW graphs with a candidate list of 40; 80 costs ~1.4x the build time and gives a
# graph in which efSearch 64 reaches the recall that efSearch 128 reached (benchmarks/peers.py).
DEFAULT_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 128  # FAISS's 16 loses recall quietly; 128 keeps recall@10 near 0.99 on typical data
AUTO_FLAT_LIMIT = 100_000  # exact search stays fast enough below this many vectors
AUTO_HNSW_BYTES = 8 << 30  # above this much raw vector data, compress with IVF-PQ


@dataclass(frozen=True)
class IndexSpec:
    """A FAISS factory string plus latentsearch's search-time options.

    ``IVF1024,Flat?nprobe=32`` or ``HNSW32?efSearch=256``; ``auto`` picks by size.
    """

    factory: str
    search: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> IndexSpec:
        factory, _, query = text.strip().partition("?")
        factory = factory.strip()
        if not factory:
            raise InvalidInputError("an empty index spec; use e.g. Flat, HNSW32, IVF1024,Flat or auto")
        search: dict[str, int] = {}
        for part in filter(None, query.split("&")):
            key, _, value = part.partition("=")
            if key not in SEARCH_OPTIONS:
                raise unknown_name("index search option", key, SEARCH_OPTIONS)
            try:
                search[key] = int(value)
            except ValueError:
                raise InvalidInputError(f"index option {key}={value!r} is not an integer") from None
            if search[key] <= 0:
                raise InvalidInputError(f"index option {key} must be positive, got {value}")
        if factory.lower() == "auto":
            factory = "auto"
        return cls(factory=factory, search=search)

    @property
    def is_auto(self) -> bool:
        return self.factory == "auto"

    def __str__(self) -> str:
        tail = "&".join(f"{k}={v}" for k, v in sorted(self.search.items()))
        return self.factory + (f"?{tail}" if tail else "")


def choose_auto(n: int, dim: int) -> str:
    """The factory string ``auto`` means for ``n`` vectors of dimension ``dim``.

    Exact search while small (no recall lost); HNSW while the raw vectors fit comfortably in
    memory; IVF-PQ beyond that, with about 4·√n lists and 8-bit codes of dim/4 bytes.
    """
    if n < AUTO_FLAT_LIMIT:
        return "Flat"
    if n * dim * 4 <= AUTO_HNSW_BYTES:
        return "HNSW32"
    nlist = 1 << max(4, round(math.log2(4 * math.sqrt(n))))
    m = next(m for m in (dim // 4, dim // 8, dim // 16, 1) if m >= 1 and dim % m == 0)
    return f"IVF{nlist},PQ{m}"
