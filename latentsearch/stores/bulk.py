"""Bulk inserts at the driver level, for the write path's large batches.

SQLAlchemy's Core ``executemany`` runs every value of every row through its bind machinery, which
costs more than SQLite's own insert for a batch of vectors with metadata. Here each column is
converted once, as a whole: by the same bind processor SQLAlchemy would use (so the stored bytes
are identical: JSON text, timestamps, blobs), applied once for a value shared by the whole batch
and row by row otherwise. The rows then go to the driver's ``executemany`` in one call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any

from sqlalchemy import Connection, Dialect, Table, select

PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
BATCH = 10_000  # ids per IN (...) clause: well under SQLite's limit of 32,766 variables


def chunks(values: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    """``values`` in slices of ``size`` (one statement each)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Same:
    """A value every row of the batch shares (converted once)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


class BulkInsert:
    """``INSERT INTO table (columns) VALUES (...)`` for many rows through the driver.

    ``schema`` qualifies the table (the store's PostgreSQL schema: driver-level SQL does not go
    through SQLAlchemy's schema translation). A driver with named or numbered parameters gets
    SQLAlchemy's own ``executemany`` of the same rows instead.
    """

    def __init__(self, table: Table, columns: Sequence[str], dialect: Dialect, schema: str | None = None):
        self.table = table
        self.columns = list(columns)
        placeholder = PLACEHOLDERS.get(dialect.paramstyle)
        self.sql: str | None = None
        if placeholder is not None:
            quote = dialect.identifier_preparer.quote
            name = quote(table.name) if not schema else f"{quote(schema)}.{quote(table.name)}"
            self.sql = (
                f"INSERT INTO {name} ({', '.join(quote(c) for c in self.columns)}) "
                f"VALUES ({', '.join([placeholder] * len(self.columns))})"
            )
        self.processors = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in self.columns]

    def execute(self, conn: Connection, values: Mapping[str, Sequence[Any] | Same], rows: int) -> None:
        """Insert ``rows`` rows; ``values`` gives each column as a sequence, or one shared value."""
        if not rows:
            return
        for name in self.columns:
            value = values[name]
            if not isinstance(value, Same) and len(value) != rows:
                raise ValueError(f"column {name}: {len(value)} values for {rows} rows")
        if self.sql is None:
            plain = [repeat(v.value, rows) if isinstance(v, Same) else v for v in (values[c] for c in self.columns)]
            conn.execute(self.table.insert(), [dict(zip(self.columns, row)) for row in zip(*plain)])
            return
        columns = []
        for name, process in zip(self.columns, self.processors):
            value = values[name]
            if isinstance(value, Same):
                columns.append(repeat(process(value.value) if process else value.value, rows))
            else:
                columns.append(map(process, value) if process else value)
        conn.exec_driver_sql(self.sql, list(zip(*columns)))


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
