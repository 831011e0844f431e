"""Bulk inserts at the driver level, for the write path's large batches.

SQLAlchemy's Core ``executemany`` runs every value of every row through its bind machinery, which
costs more than SQLite's own insert for a batch of vectors with metadata. Here each column is
converted once, as a whole: by the same bind processor SQLAlchemy would use (so the stored bytes
are identical: JSON text, timestamps, blobs), applied once for a value shared by the whole batch
and row by row otherwise. The rows then go to the driver in one ``executemany``, except on SQLite,
where they go as multi-row ``INSERT ... VALUES (...), (...), ...`` statements of up to
:data:`ROWS_PER_STATEMENT` rows: one statement per row made SQLite copy the pages each row touched
into its statement journal, so that the statement could be undone alone (the full-text trigger
asks for that), 32 KiB per row of vectors. PostgreSQL's driver pipelines an ``executemany``, which
ran 16,400 vectors/s against 12,300 for statements of 1,000 rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import chain, repeat
from typing import Any

from sqlalchemy import Connection, Dialect, Table, select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from ..errors import LatentSearchError

PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
BATCH = 10_000  # ids per IN (...) clause: well under SQLite's limit of 32,766 variables
ROWS_PER_STATEMENT = 1000


class StoreWriteError(LatentSearchError, SQLAlchemyError):
    """The database refused rows for a reason the checks before writing do not know of; the
    message is the database's first line, never the batch's values. Also a ``SQLAlchemyError``,
    the type callers caught before (the driver's error is its ``__cause__``)."""


def chunks(values: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    """``values`` in slices of ``size`` (one statement each)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def sqlite_max_variables(dialect: Dialect) -> int:
    """How many bound values one SQLite statement may hold (the limit rose in SQLite 3.32)."""
    version = getattr(dialect.dbapi, "sqlite_version_info", (0,))
    return 32_766 if version >= (3, 32) else 999


class Same:
    """A value every row of the batch shares (converted once)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class BulkInsert:
    """``INSERT INTO table (columns) VALUES (...)`` for many rows through the driver.

    ``schema`` qualifies the table (the store's PostgreSQL schema: driver-level SQL does not go
    through SQLAlchemy's schema translation). A column that is NULL in every row of a batch is
    written as the literal ``NULL`` rather than bound row by row. A driver with named or numbered
    parameters gets SQLAlchemy's own ``executemany`` of the same rows instead.
    """

    def __init__(self, table: Table, columns: Sequence[str], dialect: Dialect, schema: str | None = None):
        self.table = table
        self.columns = list(columns)
        self.placeholder = PLACEHOLDERS.get(dialect.paramstyle)
        quote = dialect.identifier_preparer.quote
        name = quote(table.name) if not schema else f"{quote(schema)}.{quote(table.name)}"
        self.head = f"INSERT INTO {name} ({', '.join(quote(c) for c in self.columns)}) VALUES "
        self.multirow = dialect.name == "sqlite"  # see the module's docstring
        self.max_parameters = sqlite_max_variables(dialect) if self.multirow else 0
        self.processors = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in self.columns]

    def execute(self, conn: Connection, values: Mapping[str, Sequence[Any] | Same], rows: int) -> None:
        """Insert ``rows`` rows; ``values`` gives each column as a sequence, or one shared value.

        A row the database refuses raises :class:`StoreWriteError` with the
        database's reason in one line: SQLAlchemy's own error would print the batch's parameters,
        megabytes of vectors and texts.
        """
        try:
            self._execute(conn, values, rows)
        except DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
            raise StoreWriteError(
                f"the database refused a batch of {rows} rows for the table {self.table.name}: {reason}"
            ) from exc.orig

    def _execute(self, conn: Connection, values: Mapping[str, Sequence[Any] | Same], rows: int) -> None:
        if not rows:
            return
        given = [values[name] for name in self.columns]
        for name, value in zip(self.columns, given):
            if not isinstance(value, Same) and len(value) != rows:
                raise ValueError(f"column {name}: {len(value)} values for {rows} rows")
        if self.placeholder is None:
            plain = [repeat(v.value, rows) if isinstance(v, Same) else v for v in given]
            conn.execute(self.table.insert(), [dict(zip(self.columns, row)) for row in zip(*plain)])
            return
        row_sql, columns = [], []
        for value, process in zip(given, self.processors):
            if isinstance(value, Same) and value.value is None:
                row_sql.append("NULL")
            elif isinstance(value, Same):
                row_sql.append(self.placeholder)
                columns.append(repeat(process(value.value) if process else value.value, rows))
            else:
                row_sql.append(self.placeholder)
                columns.append(map(process, value) if process else value)
        row = f"({', '.join(row_sql)})"
        if not self.multirow and columns:  # (with nothing to bind, zip would give no rows)
            conn.exec_driver_sql(self.head + row, list(zip(*columns)))
            return
        width = len(columns)
        step = max(1, min(ROWS_PER_STATEMENT, self.max_parameters // max(width, 1)))
        flat = list(chain.from_iterable(zip(*columns)))
        statement = self.head + ", ".join([row] * step)
        for start in range(0, rows, step):
            n = min(step, rows - start)
            sql = statement if n == step else self.head + ", ".join([row] * n)
            conn.exec_driver_sql(sql, tuple(flat[start * width : (start + n) * width]))


class SelectByIds:
    """``SELECT columns FROM table WHERE id IN (...)`` through the driver, each column converted
    by SQLAlchemy's own result processor (JSON parsed as SQLAlchemy would); the read side of
    :class:`BulkInsert`, for fetching the items of many hits at once. A driver with named or
    numbered parameters gets SQLAlchemy's own ``select`` instead."""

    def __init__(self, table: Table, columns: Sequence[str], dialect: Dialect, schema: str | None = None):
        self.table, self.names = table, list(columns)
        self.placeholder = PLACEHOLDERS.get(dialect.paramstyle)
        quote = dialect.identifier_preparer.quote
        self.name = quote(table.name) if not schema else f"{quote(schema)}.{quote(table.name)}"
        self.columns = ", ".join(quote(c) for c in columns)
        processors = [table.c[c].type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
        self.processors = [(i, p) for i, p in enumerate(processors) if p is not None]

    def rows(self, conn: Connection, ids: Sequence[int]) -> Iterator[Sequence[Any]]:
        """The rows of these ids that exist (in no particular order), one statement per BATCH."""
        for chunk in chunks([int(i) for i in ids]):
            if self.placeholder is None:
                yield from conn.execute(select(*(self.table.c[c] for c in self.names)).where(self.table.c.id.in_(chunk)))
                continue
            sql = f"SELECT {self.columns} FROM {self.name} WHERE id IN ({', '.join([self.placeholder] * len(chunk))})"
            for raw in conn.exec_driver_sql(sql, tuple(chunk)):
                row = list(raw)
                for i, process in self.processors:
                    row[i] = process(row[i])
                yield row
