"""Token-aware splitting of long documents into overlapping passages that fit an encoder.

An encoder truncates its input at a fixed number of tokens, so a long document must be cut into
passages first. :func:`split_passages` cuts by tokens (as counted by a :class:`TokenCounter`),
lets consecutive passages share ``overlap_tokens`` tokens, and prefers to end a passage at a
paragraph or sentence end near the end of its window. Every passage is an exact slice of the
original text, with its character offsets, so a search hit can point back into the document.

Nothing here imports torch or transformers: :class:`HFTokenCounter` only calls the tokenizer it
is given, and :func:`counter_for` looks for sentence-transformers only among modules already
imported (an encoder holding a ``SentenceTransformer`` has imported it).
"""

from __future__ import annotations

import copy

import math
import re
import sys
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import InvalidInputError

__all__ = [
    "DEFAULT_WORD_LIMIT",
    "ChunkConfig",
    "HFTokenCounter",
    "Passage",
    "TokenCounter",
    "WordTokenCounter",
    "counter_for",
    "split_passages",
]

DEFAULT_WORD_LIMIT = 256
"""Tokens per passage for an encoder without a tokenizer (whitespace-separated words)."""

_BOUNDARY_ZONE = 0.2  # a boundary is looked for in the last 20% of a window
_MAX_START_BACKTRACK = 16  # tokens an overlap start may move back to reach the start of a word
_SANE_MAX_SEQ_LENGTH = 1_000_000  # above this a tokenizer's "limit" is a placeholder for none
_SENTENCE_END = re.compile(r"[.?!][\"'”’»)\]]*\Z")
_SENTENCE_TAIL = 8  # characters before a cut searched for the sentence end (with closers)
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")
_WORD = re.compile(r"\S+")

Span = tuple[int, int]


@dataclass(frozen=True)
class Passage:
    """One passage: ``text == original[start:end]`` (character offsets), ``index`` from 0."""

    index: int
    start: int
    end: int
    text: str


@runtime_checkable
class TokenCounter(Protocol):
    """Tells where an encoder's tokens lie in a text."""

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """The ``(start, end)`` character span of each token of ``text``, in order, without
        special tokens (``[CLS]``, ``[SEP]``, ...)."""
        ...


class WordTokenCounter:
    """Whitespace-separated words as tokens (``\\S+``), for encoders without a tokenizer."""

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _WORD.finditer(text)]

    def __repr__(self) -> str:
        return "WordTokenCounter()"


class HFTokenCounter:
    """The tokens of a Hugging Face *fast* tokenizer (one that returns offset mappings)."""

    def __init__(self, tokenizer: Any) -> None:
        if not callable(tokenizer):
            raise InvalidInputError(
                f"HFTokenCounter needs a Hugging Face tokenizer, not {type(tokenizer).__name__}"
            )
        if getattr(tokenizer, "is_fast", True) is False:
            raise InvalidInputError(
                f"the tokenizer {type(tokenizer).__name__} is a slow (Python) tokenizer, which "
                "cannot report token offsets; load the model with a fast tokenizer"
            )
        # A copy of its own: a fast tokenizer keeps its truncation and padding settings in shared
        # state that each call changes, so counting tokens (no truncation) in the reader thread
        # while the encoder tokenizes a padded batch in another breaks the batch.
        self.tokenizer = copy.deepcopy(tokenizer)

    def offsets(self, text: str) -> list[tuple[int, int]]:
        # No truncation, and verbose=False: a document longer than the model's limit is the
        # whole point here, so the tokenizer's "sequence is too long" warning is noise.
        encoded = self.tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            truncation=False,
            verbose=False,
        )
        return [(int(s), int(e)) for s, e in encoded["offset_mapping"]]

    def __repr__(self) -> str:
        return f"HFTokenCounter({type(self.tokenizer).__name__})"


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(max_tokens: int | None, overlap_tokens: int, min_tokens: int) -> None:
    """Raise :class:`InvalidInputError` for settings that cannot split anything
    (``max_tokens=None`` skips the checks that need it)."""
    if max_tokens is not None and (not _is_count(max_tokens) or max_tokens < 1):
        raise InvalidInputError(f"max_tokens must be a positive integer, not {max_tokens!r}")
    if not _is_count(overlap_tokens) or overlap_tokens < 0:
        raise InvalidInputError(
            f"overlap_tokens must be a non-negative integer, not {overlap_tokens!r}"
        )
    if not _is_count(min_tokens) or min_tokens < 0:
        raise InvalidInputError(f"min_tokens must be a non-negative integer, not {min_tokens!r}")
    if max_tokens is not None and overlap_tokens >= max_tokens:
        raise InvalidInputError(
            f"overlap_tokens ({overlap_tokens}) must be smaller than max_tokens ({max_tokens}), "
            "or no passage would move past the one before it"
        )


@dataclass(frozen=True)
class ChunkConfig:
    """How to split documents.

    ``max_tokens``: tokens per passage; ``None`` means the encoder's limit (see
    :func:`counter_for`). ``overlap_tokens``: tokens shared by consecutive passages.
    ``min_tokens``: a last passage adding fewer tokens of its own than this is merged away when
    the passage before it can take its tokens and still fit, else kept (0 turns this off; see
    :func:`split_passages`). Use :meth:`resolve` with the limit from :func:`counter_for`.
    """

    max_tokens: int | None = None
    overlap_tokens: int = 32
    min_tokens: int = 16

    def __post_init__(self) -> None:
        _validate(self.max_tokens, self.overlap_tokens, self.min_tokens)

    def resolve(self, limit: int) -> int:
        """The tokens per passage for an encoder that takes at most ``limit`` tokens."""
        if not _is_count(limit) or limit < 1:
            raise InvalidInputError(f"the encoder's token limit must be positive, not {limit!r}")
        max_tokens = limit if self.max_tokens is None else self.max_tokens
        if max_tokens > limit:
            raise InvalidInputError(
                f"max_tokens ({max_tokens}) is more than the encoder takes ({limit} tokens), so "
                "passages would be truncated; leave max_tokens unset or lower it"
            )
        _validate(max_tokens, self.overlap_tokens, self.min_tokens)
        return max_tokens


# -- splitting ----------------------------------------------------------------------------------


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    """``start``/``end`` moved inwards past surrounding whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _spans(counter: TokenCounter, text: str) -> list[Span]:
    n = len(text)
    return [(min(max(s, 0), n), min(max(e, s, 0), n)) for s, e in counter.offsets(text)]


class _Splitter:
    """Window arithmetic over the token spans of one text (token ranges are ``[first, stop)``)."""

    def __init__(
        self, text: str, spans: list[Span], counter: TokenCounter, max_tokens: int
    ) -> None:
        self.text = text
        self.spans = spans
        self.counter = counter
        self.max_tokens = max_tokens

    def char_range(self, first: int, stop: int) -> tuple[int, int]:
        """Character range of tokens ``first .. stop-1``, stripped of surrounding whitespace."""
        start = self.spans[first][0]
        end = max(e for _, e in self.spans[first:stop])
        return _strip(self.text, start, end)

    def count(self, first: int, stop: int) -> int:
        """How many tokens the counter finds in the passage text of tokens ``first .. stop-1``."""
        start, end = self.char_range(first, stop)
        return len(self.counter.offsets(self.text[start:end]))

    def gap(self, j: int) -> str:
        """The text between token ``j-1`` and token ``j``."""
        return self.text[self.spans[j - 1][1] : self.spans[j][0]]

    def is_paragraph_end(self, j: int) -> bool:
        return _BLANK_LINE.search(self.gap(j)) is not None

    def is_sentence_end(self, j: int) -> bool:
        end = self.spans[j - 1][1]
        gap = self.gap(j)
        tail = self.text[max(0, end - _SENTENCE_TAIL) : end]
        return bool(gap) and gap[0].isspace() and _SENTENCE_END.search(tail) is not None

    def is_word_start(self, j: int) -> bool:
        return self.spans[j - 1][1] < self.spans[j][0]

    def choose_end(self, first: int, floor: int) -> int:
        """End of a window starting at ``first`` that cannot reach the last token: the latest
        paragraph end, else sentence end, else word end in the last 20% of the window (and past
        ``floor``, the previous window's end), else exactly ``max_tokens`` tokens."""
        hard = first + self.max_tokens
        lo = max(first + math.ceil(self.max_tokens * (1 - _BOUNDARY_ZONE)), floor + 1, first + 1)
        zone = range(hard, lo - 1, -1)  # latest first
        for test in (self.is_paragraph_end, self.is_sentence_end, self.is_word_start):
            for j in zone:
                if test(j):
                    return j
        return hard

    def fit(self, first: int, stop: int, floor: int) -> int | None:
        """``stop`` lowered until the passage, tokenized on its own, has at most ``max_tokens``
        tokens (a cut inside a word can tokenize differently out of context); ``None`` when that
        would not reach past ``floor`` (so the window must start later)."""
        lowest = max(first + 1, floor + 1)
        while True:
            excess = self.count(first, stop) - self.max_tokens
            if excess <= 0:
                return stop
            if stop <= lowest:
                # a window that starts at the previous end must exist, even if over-long
                return stop if first >= floor else None
            stop = max(lowest, stop - excess)

    def next_start(self, first: int, stop: int, overlap_tokens: int) -> int:
        """First token of the window after ``first .. stop-1``: ``overlap_tokens`` before its end,
        moved back (at most 16 tokens) to the start of a word."""
        nxt = max(stop - overlap_tokens, first + 1)
        if overlap_tokens == 0:
            return nxt
        for j in range(nxt, max(first + 1, nxt - _MAX_START_BACKTRACK) - 1, -1):
            if self.is_word_start(j):
                return j
        return nxt

    def windows(self, overlap_tokens: int) -> list[tuple[int, int]]:
        n = len(self.spans)
        windows: list[tuple[int, int]] = []
        first = floor = 0  # floor: where the previous window ended
        while True:
            end = n if n - first <= self.max_tokens else self.choose_end(first, floor)
            stop = self.fit(first, end, floor)
            if stop is None:
                first += 1
                continue
            windows.append((first, stop))
            if stop >= n:
                return windows
            floor = stop
            first = self.next_start(first, stop, overlap_tokens)

    def absorb_tail(self, windows: list[tuple[int, int]], min_tokens: int) -> None:
        """Drop a last window that adds fewer than ``min_tokens`` tokens of its own by moving the
        window before it to end at the last token, when it still fits in ``max_tokens`` and still
        starts no later than the end of the window before that one (so no token is lost)."""
        n = len(self.spans)
        if len(windows) < 3 or n - windows[-2][1] >= min_tokens:
            return
        bound = windows[-3][1]
        first = max(n - self.max_tokens, windows[-2][0])
        if first > bound:
            return
        for j in range(first, min(bound, first + _MAX_START_BACKTRACK) + 1):
            if self.is_word_start(j):
                first = j
                break
        if self.count(first, n) <= self.max_tokens:
            windows[-2:] = [(first, n)]


def split_passages(
    text: str,
    counter: TokenCounter,
    max_tokens: int,
    overlap_tokens: int = 32,
    min_tokens: int = 16,
) -> list[Passage]:
    """Split ``text`` into passages of at most ``max_tokens`` tokens as ``counter`` counts them.

    A text that fits is one passage: the whole text, stripped of surrounding whitespace. A longer
    text becomes windows of at most ``max_tokens`` tokens. A window that cannot reach the end of
    the text ends, by preference, at the last paragraph end (blank line) in its final 20%, else
    the last sentence end there (``.``, ``?`` or ``!``, maybe with closing quotes or brackets,
    then whitespace), else the last word end there, else after exactly ``max_tokens`` tokens.
    The next window starts ``overlap_tokens`` tokens before that end (moved back up to 16 tokens
    to the start of a word). A passage is the exact slice of the original from its first token's
    start to its last token's end, re-counted on its own so that a cut inside a word cannot push
    it past ``max_tokens``.

    ``min_tokens``: since a window is only cut where the rest of the text does not fit in it, a
    short last fragment can never be appended to the previous passage as is. Instead, when the
    last passage adds fewer than ``min_tokens`` tokens of its own, the previous passage is moved
    to end at the end of the text (giving up some of its overlap with the one before it) when it
    then still fits and no token is left out; otherwise the short last passage is kept.

    Empty or whitespace-only text gives ``[]``; passages are never empty.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"split_passages needs a str, not {type(text).__name__}")
    _validate(max_tokens, overlap_tokens, min_tokens)
    if not text.strip():
        return []
    spans = _spans(counter, text)
    if len(spans) <= max_tokens:
        start, end = _strip(text, 0, len(text))
        return [Passage(0, start, end, text[start:end])]

    split = _Splitter(text, spans, counter, max_tokens)
    windows = split.windows(overlap_tokens)
    if min_tokens > 0:
        split.absorb_tail(windows, min_tokens)

    passages: list[Passage] = []
    for first, stop in windows:
        start, end = split.char_range(first, stop)
        if start < end:
            passages.append(Passage(len(passages), start, end, text[start:end]))
    return passages


# -- encoders -----------------------------------------------------------------------------------


def _sentence_transformer_class() -> type | None:
    module = sys.modules.get("sentence_transformers")
    cls = getattr(module, "SentenceTransformer", None) if module is not None else None
    return cls if isinstance(cls, type) else None


def counter_for(encoder: object) -> tuple[TokenCounter, int]:
    """The token counter and the tokens-per-passage limit for a latentsearch encoder.

    An encoder whose ``model`` is a sentence-transformers ``SentenceTransformer`` with a fast
    tokenizer gets that tokenizer and ``max_seq_length`` less the special tokens the tokenizer
    adds to one text (2 for BERT-style ``[CLS] … [SEP]``; 254 for all-MiniLM-L6-v2). Anything
    else (the hashing encoder, an image encoder) gets words and :data:`DEFAULT_WORD_LIMIT`; a
    tokenizer without a usable limit (``None`` or a placeholder like ``1e30``) gets its own
    tokens with :data:`DEFAULT_WORD_LIMIT`.
    """
    model = getattr(encoder, "model", None)
    st_class = _sentence_transformer_class()
    if model is None or st_class is None or not isinstance(model, st_class):
        return WordTokenCounter(), DEFAULT_WORD_LIMIT
    try:
        tokenizer = model.tokenizer  # a property: the first module's tokenizer
        max_seq_length = model.max_seq_length
    except (AttributeError, IndexError, KeyError):
        return WordTokenCounter(), DEFAULT_WORD_LIMIT
    usable = callable(tokenizer) and getattr(tokenizer, "is_fast", True) is not False
    if tokenizer is None or not usable:
        return WordTokenCounter(), DEFAULT_WORD_LIMIT
    specials = 2
    count_specials = getattr(tokenizer, "num_special_tokens_to_add", None)
    if callable(count_specials):
        try:
            specials = int(count_specials(pair=False))
        except (TypeError, ValueError, AttributeError, NotImplementedError):
            specials = 2  # an odd tokenizer keeps the BERT default
    if not _is_count(max_seq_length) or not specials < max_seq_length < _SANE_MAX_SEQ_LENGTH:
        return HFTokenCounter(tokenizer), DEFAULT_WORD_LIMIT
    return HFTokenCounter(tokenizer), max_seq_length - specials
