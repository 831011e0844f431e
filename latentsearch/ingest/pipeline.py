"""Encoding a batch of records: group by modality, load images late, keep input order."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

import numpy as np

from ..encoders.base import Encoder
from ..errors import InvalidInputError
from ..types import IMAGE, TEXT, VECTOR, Skipped
from ..vectors import as_matrix
from .records import Record, open_image

T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


@dataclass
class EncodedBatch:
    records: list[Record]  # the records that were encoded, in input order
    vectors: np.ndarray  # (len(records), dim), raw encoder output
    skipped: list[Skipped]


def encode_records(
    get_encoder: Callable[[], Encoder | None], records: Sequence[Record], dim: int, batch_size: int
) -> EncodedBatch:
    """Vectors for ``records``; an image that cannot be opened is skipped with its reason.

    ``get_encoder`` is called only when something needs encoding, so precomputed vectors and
    unchanged files never load a model.
    """
    skipped: list[Skipped] = []
    rows: list[tuple[Record, object]] = []
    for record in records:
        if record.modality == IMAGE and record.image is None:
            try:
                rows.append((record, open_image(record.image_path)))  # type: ignore[arg-type]
            except Exception as exc:  # Pillow raises many types for a bad file
                where = record.source or str(record.image_path)
                skipped.append(Skipped(where, f"unreadable image: {exc}"))
            continue
        rows.append((record, record.image if record.modality == IMAGE else None))

    out = np.zeros((len(rows), dim), dtype=np.float32)
    by_modality: dict[str, list[int]] = {}
    for i, (record, _) in enumerate(rows):
        by_modality.setdefault(record.modality, []).append(i)
    for modality, positions in by_modality.items():
        if modality == VECTOR:
            out[positions] = np.concatenate([as_matrix(rows[i][0].vector, dim) for i in positions])
            continue
        encoder = get_encoder()
        if encoder is None:
            raise InvalidInputError(
                f"this collection stores precomputed vectors only and cannot encode {modality}"
            )
        if modality == TEXT:
            out[positions] = encoder.encode_text([rows[i][0].text for i in positions], batch_size)  # type: ignore[misc]
        else:
            out[positions] = encoder.encode_image([rows[i][1] for i in positions], batch_size)  # type: ignore[misc]
    return EncodedBatch([r for r, _ in rows], out, skipped)
