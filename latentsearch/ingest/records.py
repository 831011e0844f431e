"""Records: one thing to index, before it is encoded."""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat as stat_module
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..media import MAX_IMAGE_PIXELS, open_image, to_rgb  # noqa: F401 - the ingest side's names for them
from ..stores.jsonvalues import INT64, WHOLE_FLOATS, store_number
from ..types import IMAGE, TEXT, VECTOR

if TYPE_CHECKING:
    from PIL.Image import Image



@dataclass(frozen=True)
class FileStat:
    """Size and modification time of a source file: equal stats mean the file is unchanged."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStat:
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns)


@dataclass(eq=False)  # records are compared by identity: they may hold arrays and images
class Record:
    """One input: a text, an image or a vector, with its key, source and metadata.

    Files are read late: ``text_path`` and ``image_path`` are opened by :meth:`load` in the
    pipeline's reader stage, so a stream of records holds no file contents, and a file whose
    ``stat`` matches the stored one is never read at all.
    """

    text: str | None = None
    text_path: Path | None = None
    image: Image | None = None
    image_path: Path | None = None
    vector: np.ndarray | None = None
    key: str | None = None
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    stat: FileStat | None = None  # of the source file, for incremental re-indexing
    document: str | None = None  # the key of the document a passage belongs to
    warning: str | None = None  # something the user should hear about, e.g. a fallback encoding
    max_bytes: int | None = None  # the most bytes load() reads of text_path (None: MAX_TEXT_FILE_BYTES)

    @property
    def modality(self) -> str:
        if self.text is not None or self.text_path is not None:
            return TEXT
        if self.vector is not None:
            return VECTOR
        return IMAGE

    def load(self) -> None:
        """Read the text file or decode the image (raises ``OSError``/``ValueError`` with a reason)."""
        if self.text is None and self.text_path is not None:
            from .readers import MAX_TEXT_FILE_BYTES, read_text_file

            limit = MAX_TEXT_FILE_BYTES if self.max_bytes is None else self.max_bytes
            self.text, self.warning = read_text_file(self.text_path, limit)
        elif self.image is None and self.image_path is not None:
            self.image = open_image(self.image_path)

    def content_hash(self) -> str:
        """A hash of what the encoder sees: the text, the image file's bytes or the pixels."""
        h = hashlib.blake2b(digest_size=16)
        if self.text is not None:
            h.update(b"t" + self.text.encode("utf-8", "surrogatepass"))
        elif self.vector is not None:
            h.update(b"v" + np.ascontiguousarray(self.vector, dtype=np.float32).tobytes())
        elif self.image_path is not None:
            h.update(b"f")
            with open(self.image_path, "rb") as fh:
                if not stat_module.S_ISREG(os.fstat(fh.fileno()).st_mode):  # replaced by a device since
                    raise ValueError("not a regular file")
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        elif self.image is not None:
            h.update(b"i" + repr(self.image.size).encode() + self.image.convert("RGB").tobytes())
        return h.hexdigest()


# -- what every store can hold ------------------------------------------------------------------
# The limits are PostgreSQL's, checked before anything is written and on every backend alike, so a
# collection can move from SQLite to PostgreSQL and an input is refused the same way on both.

MAX_NAME_BYTES = 2048
"""Most UTF-8 bytes in a key, document or source: the columns are ``VARCHAR(2048)`` and PostgreSQL's
B-tree index takes at most 2,704 bytes per entry, so 2,048 characters of CJK (6 KiB) would not fit."""

MAX_TEXT_BYTES = 512 * 1024
"""Most UTF-8 bytes in the text of one item. PostgreSQL's full-text index (a ``tsvector``, computed
from the text) holds at most 1 MiB - 1 of words and positions, and for text of distinct short
words that is 1.6 times the text's own size (800 KB of such text overflowed it): half the tsvector
limit is kept. Long documents are split into passages well below this (``index`` does it by
default), so only one huge item (``add``, ``--no-chunk``) is refused."""

MAX_METADATA_DEPTH = 64
"""Most levels of dicts and lists in metadata (deeper, or a dict that holds itself, is refused)."""

PASSAGE_SEPARATOR = "\x1f"
"""Between a document's key and a passage's number in the passage's key (``doc\x1f0``): the ASCII
unit separator, a control character that no user key may contain (:func:`check_name`), so no
user key can name a passage. Collections made before keyed passages ``doc#0``: they read as
before, and a changed document's passages are written again under the new keys."""

_RESERVED = re.compile("[\x00\x1f]")  # NUL (PostgreSQL refuses it) and PASSAGE_SEPARATOR
_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN = frozenset({str, int, float, bool, type(None)})  # exact types JSON holds as they are
NOT_CONVERTED = object()  # what a ``convert`` hook of json_safe returns for a value it does not know


def printable(text: str) -> str:
    """``text`` with bytes that were not UTF-8 (a file name's, kept as lone surrogates by
    ``surrogateescape``) shown as ``\xff``, so it can be printed and written as UTF-8."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _surrogate_reason(text: str, what: str) -> str | None:
    if text.isascii() or not (m := _SURROGATE.search(text)):
        return None
    return (
        f"{what} holds a lone surrogate ({m.group()!r} at character {m.start()}), which is not Unicode "
        "text and cannot be stored as UTF-8 (bytes in another encoding, decoded with surrogateescape?)"
    )


def check_name(value: Any, what: str = "key") -> None:
    """Raise :class:`InvalidInputError` unless ``value`` can be a key, document or source on every
    store: a non-empty str of UTF-8 text, at most :data:`MAX_NAME_BYTES` bytes, without NUL
    (PostgreSQL refuses it) or :data:`PASSAGE_SEPARATOR` (reserved for passages)."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{what} must be a non-empty string, not {value!r}"[:200])
    if reason := _surrogate_reason(value, f"{what} {printable(value)[:80]!r}"):
        raise InvalidInputError(reason)
    _check_length(value, what)
    if m := _RESERVED.search(value):
        raise InvalidInputError(
            f"{what} {value[:80]!r} holds the control character {m.group()!r}; keys, documents and "
            "sources may not (PostgreSQL refuses \\x00, and \\x1f separates a passage's number)"
        )


def _check_length(value: str, what: str) -> None:
    size = len(value) if value.isascii() else len(value.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise InvalidInputError(
            f"{what} {value[:40]!r}… is {size:,} bytes of UTF-8; keys, documents and sources may have "
            f"at most {MAX_NAME_BYTES:,} (PostgreSQL's index limit): use a shorter one"
        )


def check_text(text: str, what: str = "the text", whole: bool = True) -> None:
    """Raise :class:`InvalidInputError` unless ``text`` can be an item's text on every store:
    UTF-8 text without NUL and, when ``whole`` (the text of one item, not a document that will
    be split), at most :data:`MAX_TEXT_BYTES` bytes."""
    if reason := _surrogate_reason(text, what):
        raise InvalidInputError(reason)
    if (at := text.find("\x00")) >= 0:
        raise InvalidInputError(f"{what} holds a NUL character (\\x00 at character {at}), which PostgreSQL cannot store; remove it")
    if whole and len(text) > MAX_TEXT_BYTES // 4:  # (UTF-8 takes at most 4 bytes a character)
        size = len(text.encode("utf-8"))
        if size > MAX_TEXT_BYTES:
            raise InvalidInputError(
                f"{what} is {size:,} bytes of UTF-8; an item's text may have at most {MAX_TEXT_BYTES:,} "
                "(PostgreSQL's full-text index is bounded): split it into passages or shorten it"
            )


def make_storable(record: Record, whole: bool = True) -> None:
    """Check that every store can hold ``record`` (its key, document, source, text and metadata;
    the text's size only when ``whole``, see :func:`check_text`) and make its metadata JSON-safe
    (:func:`json_safe`) in place; raises :class:`InvalidInputError` with the one-line reason."""
    for what, value in (("the key", record.key), ("the document", record.document), ("the source", record.source)):
        if value is not None:
            check_name(value, what)
    if record.text is not None:
        if not isinstance(record.text, str):
            raise InvalidInputError(f"the text is a {type(record.text).__name__}, not a str")
        check_text(record.text, "the text", whole)
    meta = {} if record.metadata is None else record.metadata
    if not isinstance(meta, Mapping):
        raise InvalidInputError(f"the metadata is a {type(meta).__name__}, not a dict")
    record.metadata = json_safe(meta if type(meta) is dict else dict(meta))


def check_item(record: Record) -> None:
    """What only the item about to be written shows, for a record that :func:`make_storable`
    passed with ``whole=False``: the size of its text (a passage's, once a document is split)
    and the length of a passage's key (its document's key and a number)."""
    if record.text is not None:
        check_text(record.text, "the text")
    if record.key is not None:
        _check_length(record.key, "the passage key" if record.document is not None else "the key")


# -- metadata as JSON ------------------------------------------------------------------------------


def _plain_ok(value: Any) -> bool:
    """Whether a value of a flat dict is stored as it is (the fast path of :func:`json_safe`)."""
    kind = type(value)
    if kind is str:
        return (value.isascii() or not _SURROGATE.search(value)) and "\x00" not in value
    if kind is float:  # finite, below 1e16 and not -0.0 (NaN fails the comparison)
        return abs(value) < WHOLE_FLOATS and (value != 0.0 or math.copysign(1.0, value) > 0)
    if kind is int:
        return -INT64 <= value < INT64
    return kind is bool or value is None


def json_safe(value: Any, where: str = "metadata", convert: Callable[[Any, str], Any] | None = None) -> Any:
    """``value`` as JSON every store holds alike, or :class:`InvalidInputError` naming where not.

    numpy scalars and arrays become plain; numbers become what the stores keep
    (:func:`~latentsearch.stores.jsonvalues.store_number`: no NaN or Infinity, ``-0.0`` is ``0.0``,
    1e16 and beyond are integers); strings and keys must be UTF-8 text without NUL (PostgreSQL's
    jsonb refuses ``\u0000``); dicts and lists nest at most :data:`MAX_METADATA_DEPTH` levels (a
    dict holding itself is refused as too deep). ``convert(value, where)`` may turn a value of
    another type into JSON-able values (or return :data:`NOT_CONVERTED`: then it is an error).
    """
    if type(value) is dict and all(type(k) is str and _plain_ok(k) and _plain_ok(v) for k, v in value.items()):
        return value  # already storable: no copy (this runs once per stored item)
    return _json(value, where, 0, convert)


def _json(value: Any, where: str, depth: int, convert: Callable[[Any, str], Any] | None) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return store_number(value, where)
    if isinstance(value, str):
        check_text(value, where, whole=False)
        return value if type(value) is str else str(value)
    if isinstance(value, np.generic):
        return _json(value.item(), where, depth, convert)
    if isinstance(value, (Mapping, list, tuple, np.ndarray)):
        if depth >= MAX_METADATA_DEPTH:
            raise InvalidInputError(
                f"{where} nests dicts and lists deeper than {MAX_METADATA_DEPTH} levels (or holds itself); "
                "flatten it"
            )
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                key = k if type(k) is str else str(k)
                check_text(key, f"{where} key {printable(key)[:40]!r}", whole=False)
                out[key] = _json(v, f"{where}.{key}", depth + 1, convert)
            return out
        return [_json(v, f"{where}[{i}]", depth + 1, convert) for i, v in enumerate(value)]
    if convert is not None and (converted := convert(value, where)) is not NOT_CONVERTED:
        return _json(converted, where, depth + 1, convert)
    raise InvalidInputError(
        f"{where} holds a {type(value).__name__}; metadata values must be JSON: "
        "str, int, float, bool, None, lists and dicts"
    )


def make_records(
    inputs: Sequence[Any] | np.ndarray,
    metadata: Sequence[dict[str, Any]] | None,
    keys: Sequence[str] | None,
) -> list[Record]:
    """Records for ``add``: a 2-D array is vectors; str is text; Path and PIL images are images."""
    if isinstance(inputs, np.ndarray) and inputs.ndim == 2:
        items: list[Any] = list(inputs)
    elif isinstance(inputs, np.ndarray):
        if inputs.ndim == 1:
            raise InvalidInputError(
                f"add() got a 1-D array of shape {inputs.shape}, which is one vector; pass a 2-D array "
                f"of shape (1, {inputs.shape[0]}) (or a list of vectors)"
            )
        raise InvalidInputError(f"add() takes a 2-D array of vectors, of shape (n, dim), not one of shape {inputs.shape}")
    elif isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence | np.ndarray):
        raise InvalidInputError("add() takes a list of inputs (or a 2-D array of vectors), not a single one")
    else:
        items = list(inputs)
    if keys is not None and len(keys) != len(items):
        raise InvalidInputError(f"{len(items)} inputs but {len(keys)} keys")
    metas = checked_metadata(metadata, len(items))
    records = []
    for i, value in enumerate(items):
        record = record_for(value)
        if keys is not None:
            record.key = keys[i]
        if metas is not None:
            record.metadata = metas[i]
        try:
            make_storable(record)
        except InvalidInputError as exc:
            raise InvalidInputError(f"input {i}: {exc}") from None
        records.append(record)
    return records


def checked_metadata(metadata: Sequence[Mapping[str, Any]] | None, n: int) -> list[dict[str, Any]] | None:
    """One JSON-safe dict per input (numpy values made plain), or the error naming the bad one."""
    if metadata is None:
        return None
    if len(metadata) != n:
        raise InvalidInputError(f"{n} inputs but {len(metadata)} metadata")
    out = []
    for i, meta in enumerate(metadata):
        if not isinstance(meta, Mapping):
            raise InvalidInputError(f"metadata {i} is a {type(meta).__name__}, not a dict")
        out.append(json_safe(meta if type(meta) is dict else dict(meta), f"metadata {i}"))
    return out


def record_for(value: Any) -> Record:
    if isinstance(value, str):
        return Record(text=value)
    if isinstance(value, Path):
        return Record(image_path=value.expanduser().resolve(), source=str(value.expanduser().resolve()))
    if isinstance(value, np.ndarray):
        return Record(vector=value)
    if hasattr(value, "convert") and hasattr(value, "size"):  # a PIL image
        return Record(image=value)
    raise InvalidInputError(
        f"cannot add a {type(value).__name__}; give str (text), PIL images, Paths of images or vectors"
    )
