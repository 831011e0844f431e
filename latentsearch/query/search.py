"""Turning queries into vectors and FAISS results into hits."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import InvalidInputError
from ..media import IMAGE_SUFFIXES, open_image
from ..types import Hit, Item
from ..vectors import as_matrix, prepare

if TYPE_CHECKING:
    from ..encoders.lazy import LazyEncoder
    from ..stores.sql import SqlStore


class ItemSource(Protocol):
    """Where hits get their items: the store, or a cache in front of it."""

    def get(self, ids: Sequence[int]) -> dict[int, Item]: ...


@dataclass
class QueryVectors:
    """The vectors of a batch of queries; ``exclude[i]`` is the item a query-by-id came from."""

    vectors: np.ndarray
    exclude: list[int | None]

    @property
    def extra(self) -> int:
        """How many more neighbours to ask FAISS for, so excluding the query item still leaves k."""
        return int(any(e is not None for e in self.exclude))

    @classmethod
    def build(
        cls, queries: Sequence[Any], encoder: LazyEncoder, store: SqlStore, dim: int, metric: str
    ) -> QueryVectors:
        """Each query as a vector (texts and images encoded together, item ids read from the
        store), prepared for the ``metric``; ``exclude`` notes the items queried by id."""
        if isinstance(queries, (str, bytes)):
            raise InvalidInputError("search_batch() takes a list of queries, not a single one")
        rows = np.zeros((len(queries), dim), dtype=np.float32)
        exclude: list[int | None] = [None] * len(queries)
        texts: dict[int, str] = {}
        images: dict[int, Any] = {}
        by_id: dict[int, int] = {}
        for i, q in enumerate(queries):
            if isinstance(q, str):
                texts[i] = q
            elif isinstance(q, Path):
                images[i] = _image_query(q)
            elif isinstance(q, numbers.Integral) and not isinstance(q, bool):
                by_id[i] = int(q)
            elif isinstance(q, (np.ndarray, list, tuple)):
                rows[i] = as_matrix(q, dim, "query vector")[0]
            elif hasattr(q, "convert") and hasattr(q, "size"):
                images[i] = q
            else:
                raise InvalidInputError(
                    f"cannot search by a {type(q).__name__}; use text, a PIL image, an image Path, "
                    "a vector or an item id"
                )
        if (texts or images) and not encoder.present:
            raise InvalidInputError("this collection has no encoder; search it with vectors or item ids")
        model = encoder.get() if texts or images else None
        if texts:
            rows[list(texts)] = model.encode_text(list(texts.values()))  # type: ignore[union-attr]
        if images:
            rows[list(images)] = model.encode_image(list(images.values()))  # type: ignore[union-attr]
        if by_id:
            found, vectors = store.vectors(list(by_id.values()))
            known = dict(zip(found.tolist(), vectors))
            for i, item_id in by_id.items():
                if item_id not in known:  # ids beyond 64 bits are no row's: the store leaves them out
                    raise InvalidInputError(f"no item with id {show_int(item_id)} in this collection")
                rows[i], exclude[i] = known[item_id], item_id
        return cls(prepare(rows, dim, metric, "query vector"), exclude)


def show_int(n: Any) -> str:
    """An integer for a message: its digits, or its size where it has too many to print
    (Python refuses to print an int of over 4,300 digits)."""
    n = int(n)
    return str(n) if n.bit_length() <= 256 else f"<a {n.bit_length()}-bit integer>"


def _image_query(path: Path) -> Any:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InvalidInputError(f"{path} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
    try:
        return open_image(path.expanduser())
    except Exception as exc:
        raise InvalidInputError(f"cannot read the image {path}: {exc}") from exc


def to_hits(
    D: np.ndarray, I: np.ndarray, exclude: list[int | None], k: int, store: ItemSource
) -> list[list[Hit]]:
    """Hits for each row of FAISS's ``(D, I)``: -1 padding and the query item itself left out,
    at most ``k`` per row; see :func:`hits_from_ranked`."""
    rows = [
        [(i, s) for s, i in zip(scores.tolist(), ids.tolist()) if i >= 0 and i != skip]
        for scores, ids, skip in zip(D, I, exclude)
    ]
    return [hits[:k] for hits in hits_from_ranked(rows, store)]


def hits_from_ranked(rows: Sequence[Sequence[tuple[int, float]]], store: ItemSource) -> list[list[Hit]]:
    """Hits for lists of ``(id, score)``, the items of the whole batch fetched in one query;
    ids deleted since the index snapshot are skipped."""
    items = store.get(list({i for row in rows for i, _ in row}))
    make = Hit._make
    out = []
    for row in rows:
        hits = []
        for item_id, score in row:
            item = items.get(item_id)
            if item is not None:
                hits.append(make((item_id, float(score), item.key, item.source, item.modality, item.text,
                                  item.metadata, item.document)))
        out.append(hits)
    return out


def best_per_document(hits: list[Hit], k: int) -> list[Hit]:
    """Each document once, by its best passage (hits come closest first), at most ``k``."""
    seen: set[str] = set()
    out = []
    for hit in hits:
        doc = hit.document or hit.key or str(hit.id)
        if doc not in seen:
            seen.add(doc)
            out.append(hit)
    return out[:k]
