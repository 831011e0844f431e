"""JSON values as SQLite and PostgreSQL keep and compare them, made the same on both: the numbers
a store keeps (:func:`store_number`, for stored metadata and filter operands alike), numbers bound
at their exact value (:func:`bind_number`) and metadata keys looked up as they are stored
(:func:`sqlite_path`)."""

from __future__ import annotations

import json
import math
import sqlite3
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import Float, Integer, Numeric, bindparam

from ..errors import InvalidInputError

INT64 = 2**63  # SQLite's integers: -INT64 <= i < INT64
WHOLE_FLOATS = 1e16  # from here on a float is a whole number and its repr has an exponent


def store_number(value: int | float, where: str = "value") -> int | float:
    """The number a store keeps for ``value``, the same on SQLite and PostgreSQL; stored metadata
    (:func:`latentsearch.ingest.records.json_safe`) and filter operands both go through it.

    PostgreSQL's jsonb keeps a number as the exact decimal of its JSON text and gives it back as
    that text; SQLite keeps the text and reads 64-bit integers and doubles out of it. So that both
    give back and compare the same numbers:

    - NaN and ±Infinity are refused (JSON has none: SQLite would store text it cannot parse);
    - ``-0.0`` becomes ``0.0`` (a decimal has no negative zero);
    - a float of magnitude 1e16 or more (always a whole number, written ``1e+16``) becomes the
      integer its shortest decimal form denotes, as PostgreSQL gives it back: ``1e300`` is
      ``10**300``;
    - an integer beyond 64 bits is refused unless it is such a float's integer: SQLite reads it
      as a double, so it would compare differently there.
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(
                f"{where} is {value}; numbers must be finite (JSON has no NaN or Infinity): store null or a string"
            )
        if value == 0.0:
            return 0.0
        if abs(value) >= WHOLE_FLOATS:
            return int(Decimal(repr(float(value))))
        return float(value)
    number = int(value)
    if -INT64 <= number < INT64:
        return number
    try:
        nearest = int(Decimal(repr(float(number))))
    except OverflowError:
        nearest = None
    if nearest != number:
        raise InvalidInputError(
            f"{where} is an integer of {len(str(abs(number)))} digits, beyond 64-bit integers, which SQLite "
            "holds only approximately; store it as a string (or as a float if an approximation will do)"
        )
    return number


def bind_number(value: int | float, dialect: str) -> Any:
    """A number that :func:`store_number` made, bound at its exact value. On PostgreSQL a decimal
    (a float as its shortest decimal: the very number jsonb keeps for it; a float parameter would
    make PostgreSQL compare as doubles, so ``9007199254740992.0`` would match ``2**53 + 1``). On
    SQLite an integer or a double, which SQLite compares exactly with each other; an integer
    beyond 64 bits is one a float became, so it is bound as that float, as SQLite reads it."""
    if dialect == "postgresql":
        exact = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
        return bindparam(None, exact, type_=Numeric())
    if isinstance(value, int) and -INT64 <= value < INT64:
        return bindparam(None, value, type_=Integer())
    return bindparam(None, float(value), type_=Float())


def sqlite_path(segments: tuple[str, ...]) -> tuple[str, ...]:
    """The path segments to look up on SQLite. Stored metadata is JSON text with non-ASCII keys
    escaped (``"\\u00fc"``, as Python's json writes it), and an older SQLite (3.40, for one)
    compares a key with the path as written, escapes and all: there a segment is escaped the
    same way (a newer one decodes both, and is given the plain key). (Quotes,
    backslashes and control characters, which JSON escapes too, are refused in keys.)"""
    if all(s.isascii() for s in segments) or _sqlite_reads_escaped_keys():
        return segments
    return tuple(json.dumps(s)[1:-1] for s in segments)


@cache
def _sqlite_reads_escaped_keys() -> bool:
    """Whether this SQLite finds the key ``ü`` stored escaped (as Python's json writes it)."""
    with sqlite3.connect(":memory:") as conn:
        return conn.execute("""SELECT json_extract('{"\\u00fc": 1}', '$."ü"')""").fetchone()[0] == 1
