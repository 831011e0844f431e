"""Plain value types shared by the API, the CLI and the benchmarks."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any, NamedTuple

TEXT = "text"
IMAGE = "image"
VECTOR = "vector"
MODALITIES = (TEXT, IMAGE, VECTOR)


class Hit(NamedTuple):
    """One search result.

    ``score`` is the similarity for the ``cosine`` and ``ip`` metrics (higher is closer) and the
    squared Euclidean distance for ``l2`` (lower is closer); hits always come closest first.
    A named tuple: immutable, and made in a fraction of a dataclass's time (a batch search
    builds thousands).
    """

    id: int
    score: float
    key: str | None
    source: str | None
    modality: str
    text: str | None
    metadata: dict[str, Any]
    document: str | None = None  # the document a passage belongs to (its own key otherwise)

    @property
    def image_path(self) -> str | None:
        return self.source if self.modality == IMAGE else None

    def snippet(self, width: int = 80) -> str:
        """The text shortened to ``width`` characters, or the image path."""
        if self.text is None:
            return self.source or ""
        flat = " ".join(self.text.split())
        return flat if len(flat) <= width else flat[: width - 1] + "…"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": self.score,
            "key": self.key,
            "source": self.source,
            "modality": self.modality,
            "text": self.text,
            "metadata": self.metadata,
            "document": self.document,
        }


@dataclass(frozen=True)
class Skipped:
    """An input that was not indexed, and why."""

    source: str
    reason: str


@dataclass
class IndexReport:
    """What one ingestion run did. ``inputs`` counts what was read (files and records, as the
    progress bar does); ``added``, ``updated`` and ``removed`` count items (a long document is
    several passages); ``unchanged`` and ``skipped`` count inputs."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    inputs: int = 0
    removed: int = 0  # passages a changed document no longer has
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[Skipped] = field(default_factory=list)  # indexed, but worth knowing about
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # busy seconds per stage (overlapping)
    pruned: int = 0
    ids: array = field(default_factory=lambda: array("q"))  # per input, in order (8 bytes each)

    @property
    def items_per_second(self) -> float:
        done = self.added + self.updated
        return done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "inputs": self.inputs,
            "removed": self.removed,
            "skipped": [{"source": s.source, "reason": s.reason} for s in self.skipped],
            "warnings": [{"source": s.source, "reason": s.reason} for s in self.warnings],
            "pruned": self.pruned,
            "seconds": round(self.seconds, 3),
            "stages": {k: round(v, 3) for k, v in self.stages.items()},
            "items_per_second": round(self.items_per_second, 1),
        }


@dataclass(frozen=True)
class Item:
    """A stored item, as :meth:`Collection.get` returns it."""

    id: int
    key: str | None
    source: str | None
    modality: str
    text: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    document: str | None = None


@dataclass(frozen=True)
class Cluster:
    """A group of nearest neighbours: members closest first, the member nearest the group's
    centre, the mean score of its members (the query's similarity for cosine/ip) and a label."""

    id: int
    label: str
    size: int
    score: float
    representative: Hit
    members: list[Hit]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "size": self.size,
            "score": self.score,
            "representative": self.representative.to_dict(),
            "members": [m.to_dict() for m in self.members],
        }


class Deleted(int):
    """How many items a ``delete`` removed (an ``int``), and which of the ids and
    keys it was given named no item."""

    missing_ids: list[int]
    missing_keys: list[str]

    def __new__(cls, count: int, missing_ids: list[int], missing_keys: list[str]) -> Deleted:
        self = super().__new__(cls, count)
        self.missing_ids, self.missing_keys = missing_ids, missing_keys
        return self
