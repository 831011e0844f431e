"""JSONL and CSV files read line by line, as bytes: each line decoded on its own, so a line that
is not UTF-8, not JSON or not CSV, or that is over :data:`MAX_RECORD_BYTES`, is one bad line (a
:class:`Bad`, with the reason) and the lines after it read as before. No line is held whole past
the limit, so neither a file without newlines nor one that grows while read fills the memory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from .records import printable

MAX_RECORD_BYTES = 64 * 1024 * 1024
"""The longest JSONL line or CSV row (bytes); a longer one is skipped."""

_SKIP_BLOCK = 1 << 20  # bytes read at a time past the end of a line that is too long


class Bad:
    """A line that cannot be read, and why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def lines(fh: BinaryIO, limit: int | None = None) -> Iterator[bytes | Bad]:
    """The lines of a binary file with their ends, a UTF-8 BOM dropped; a line over ``limit``
    bytes (default :data:`MAX_RECORD_BYTES`) is a :class:`Bad`, read past in blocks to its end."""
    limit = MAX_RECORD_BYTES if limit is None else limit
    first = True
    while line := fh.readline(limit + 1):
        if first:
            line, first = line.removeprefix(b"\xef\xbb\xbf"), False
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := fh.readline(_SKIP_BLOCK)) and not rest.endswith(b"\n"):
                pass
            yield Bad(f"line over {limit:,} bytes (MAX_RECORD_BYTES)")
        else:
            yield line


def _not_utf8(raw: bytes, exc: UnicodeDecodeError) -> Bad:
    return Bad(f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")


def jsonl_values(fh: BinaryIO) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON or Bad)`` for each line that is not blank."""
    for number, line in enumerate(lines(fh), start=1):
        if isinstance(line, Bad):
            yield number, line
            continue
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, _not_utf8(line, exc)
            continue
        try:
            yield number, json.loads(text)
        except RecursionError:
            yield number, Bad("JSON nested too deeply to read (metadata may nest 64 levels)")
        except ValueError as exc:
            yield number, Bad(f"not JSON ({exc})")


class _CsvLines:
    """The lines a ``csv.reader`` reads, decoded one by one (bytes that are not UTF-8 kept as
    lone surrogates, found again in the row); counts them, and raises :class:`_TooLong` for a
    line over the limit so that the row is skipped and reading goes on."""

    def __init__(self, fh: BinaryIO):
        self.lines = lines(fh)
        self.number = 0

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.number += 1
        if isinstance(line, Bad):
            raise _TooLong(line.reason)
        return line.decode("utf-8", "surrogateescape")


class _TooLong(Exception):
    pass


def csv_rows(fh: BinaryIO) -> Iterator[tuple[int, list[str] | Bad]]:
    """``(line the row starts on, its fields or Bad)`` for each row of a CSV file. After a bad
    row reading starts again at the next line (a quoted field cut short is not resumed)."""
    if csv.field_size_limit() < MAX_RECORD_BYTES:
        # Process-wide, and only ever raised: rows are bounded by lines() already, and the
        # default 128 KiB would refuse a document in a text field.
        csv.field_size_limit(MAX_RECORD_BYTES)
    feed = _CsvLines(fh)
    reader = csv.reader(feed)
    while True:
        start = feed.number + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except (_TooLong, csv.Error) as exc:
            reason = str(exc) if isinstance(exc, _TooLong) else f"not CSV ({exc})"
            yield start, Bad(reason)
            reader = csv.reader(feed)
            continue
        bad = next((f for f in row if not f.isascii() and printable(f) != f), None)
        if bad is not None:
            byte = next(ord(c) - 0xDC00 for c in bad if "\udc80" <= c <= "\udcff")
            yield start, Bad(f"not UTF-8 (byte 0x{byte:02x})")
        else:
            yield start, row
