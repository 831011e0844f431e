"""Long texts split into passages for the write path: each passage a record of its own, keyed so
that no user key can be a passage's (see :data:`~.records.PASSAGE_SEPARATOR`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..encoders.base import Encoder
from .chunking import ChunkConfig, TokenCounter, counter_for, split_passages
from .records import PASSAGE_SEPARATOR, Record

if TYPE_CHECKING:
    from ..encoders.lazy import LazyEncoder


@dataclass(frozen=True)
class Splitter:
    """Splits long texts into passages that fit the encoder (see :mod:`.chunking`)."""

    counter: TokenCounter
    max_tokens: int
    overlap_tokens: int
    min_tokens: int

    @classmethod
    def for_encoder(cls, encoder: Encoder | None, config: ChunkConfig) -> Splitter:
        counter, limit = counter_for(encoder)
        if config.max_tokens is None and config.overlap_tokens >= limit // 2:
            # A model with a short context (CLIP: 77 tokens) gets a proportionate overlap.
            config = ChunkConfig(None, limit // 4, min(config.min_tokens, limit // 4))
        return cls(counter, config.resolve(limit), config.overlap_tokens, config.min_tokens)

    def split(self, record: Record) -> list[Record]:
        """One record per passage; a text that fits stays one record with its own key. A passage
        is keyed by its document's key, :data:`~.records.PASSAGE_SEPARATOR` and its number: a
        character no user key may hold, so no record's key can be a passage's."""
        passages = split_passages(record.text or "", self.counter, self.max_tokens, self.overlap_tokens, self.min_tokens)
        if len(passages) <= 1:
            return [record]
        doc = record.document or record.key
        return [
            Record(
                text=p.text,
                key=f"{doc}{PASSAGE_SEPARATOR}{p.index}" if doc is not None else None,
                source=record.source,
                metadata={**record.metadata, "passage": p.index, "start": p.start, "end": p.end},
                stat=record.stat,
                document=doc,
                warning=record.warning if p.index == 0 else None,
            )
            for p in passages
        ]


class LazySplitter:
    """A :class:`Splitter` made on the first text to split: a run with nothing new to index
    loads no model."""

    def __init__(self, encoder: LazyEncoder, config: ChunkConfig):
        self.encoder, self.config = encoder, config
        self._splitter: Splitter | None = None

    def split(self, record: Record) -> list[Record]:
        if self._splitter is None:  # only the reader thread splits
            self._splitter = Splitter.for_encoder(self.encoder.get(), self.config)
        return self._splitter.split(record)
