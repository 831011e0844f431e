"""Every failure a user can cause is a :class:`LatentSearchError`.

Each message is one sentence that names the problem and, where there is one, what to do.
The CLI prints the message and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def error_reason(exc: BaseException) -> str:
    """``exc`` as a reason for a skip, never empty: its message, else its class's name (a
    ``MemoryError``, whose message is empty, reads "out of memory (MemoryError)")."""
    message = str(exc).strip()
    if message:
        return message
    if isinstance(exc, MemoryError):
        return "out of memory (MemoryError)"
    return f"{type(exc).__name__}, with no message"


class LatentSearchError(Exception):
    """Base class of every error latentsearch raises on purpose."""


class UnknownSpecError(LatentSearchError, ValueError):
    """An encoder or index spec that names nothing latentsearch knows."""


class InvalidInputError(LatentSearchError, ValueError):
    """Input that cannot be used: a wrong vector shape, an unreadable file, a bad option."""


class MissingFieldError(InvalidInputError):
    """A record field named in the options (``--text-field``, ``--image-field``, ``--key-field``)
    that the first record of a JSONL/CSV/Parquet file does not have."""


class ModelUnavailableError(LatentSearchError):
    """A model named by hub id that is not in the local cache while the hub cannot be reached."""


class DimensionMismatchError(InvalidInputError):
    """A vector whose dimension is not the collection's."""

    def __init__(self, expected: int, got: int, what: str = "vector") -> None:
        super().__init__(
            f"{what} has dimension {got} but the collection's vectors have dimension {expected}"
        )
        self.expected = expected
        self.got = got


class CollectionNotFoundError(LatentSearchError, FileNotFoundError):
    """No collection at the given path."""


class CollectionExistsError(LatentSearchError, FileExistsError):
    """``create`` was asked for a path that already holds a collection."""


class EncoderMismatchError(LatentSearchError):
    """A collection opened with an encoder other than the one that built it."""


class CollectionLockedError(LatentSearchError):
    """Another process is writing to the collection."""


class CorruptCollectionError(LatentSearchError):
    """A manifest or store that cannot be read back."""


def __getattr__(name: str) -> type:
    # StoreWriteError is also a SQLAlchemyError, so it lives with the store (importing this
    # module must not import SQLAlchemy); it is reachable here by name all the same.
    if name == "StoreWriteError":
        from .stores.bulk import StoreWriteError

        return StoreWriteError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def unknown_name(kind: str, name: str, known: Iterable[str]) -> UnknownSpecError:
    """An error for an unknown ``name`` of ``kind`` that lists the known names (closest first)."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UnknownSpecError(f"unknown {kind} {name!r}; known: {', '.join(known)}.{hint}")
