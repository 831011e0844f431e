"""Typed SQLAlchemy 2.0 tables of a collection's store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-assigns ids to an INTEGER PRIMARY KEY; elsewhere ids are 64-bit.
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


def _where_not_null(name: str, unique: bool = False) -> Index:
    """An index of the rows where ``name`` is set. Precomputed vectors have no key, hash or
    document: a full index would still take an entry (a B-tree insert) for each of their NULLs,
    which slowed bulk inserts of vectors into SQLite by half (BENCHMARKS.md). Lookups by value
    (``=``, ``IN``) use it all the same. Stores made before it keep their full indexes."""
    where = text(f'"{name}" IS NOT NULL')
    return Index(f"ix_items_{name}", name, unique=unique, sqlite_where=where, postgresql_where=where)


class Item(Base):
    """One indexed thing (a text, an image, a passage, a vector) with its vector and metadata."""

    __tablename__ = "items"
    __table_args__ = (
        *(_where_not_null(name, unique=name == "key") for name in ("key", "content_hash", "document")),
        # AUTOINCREMENT: SQLite never hands out the id of a deleted row again (invariant 3).
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    key: Mapped[str | None] = mapped_column(String(2048))
    source: Mapped[str | None] = mapped_column(Text)
    modality: Mapped[str] = mapped_column(String(16))
    text: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    # The document an item came from: its own key, or for a passage the key of its document.
    document: Mapped[str | None] = mapped_column(String(2048))
    # Size and mtime of the source file, so an unchanged file is skipped without reading it.
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    file_mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Change(Base):
    """Every add, update and delete, numbered in commit order (invariant 2)."""

    __tablename__ = "changes"
    __table_args__ = {"sqlite_autoincrement": True}

    seq: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(BigInteger, index=True)
    op: Mapped[str] = mapped_column(String(8))  # add | update | delete


class Info(Base):
    """Facts about the collection that must travel with the store (encoder, dimension)."""

    __tablename__ = "info"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ClusterBase(DeclarativeBase):
    """The corpus clustering's tables (see :mod:`latentsearch.query.corpus_clusters`).

    Kept out of :class:`Base` so stores made before them open and check as before: they are
    created when a collection is first clustered (or a ``cluster`` filter is first used).
    """


class ClusterRow(ClusterBase):
    """One cluster of the stored clustering: its centroid, label, size and representatives."""

    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    label: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    centroid: Mapped[bytes] = mapped_column(LargeBinary)  # float32, the collection's dimension
    representatives: Mapped[list[int]] = mapped_column(Json, default=list)  # item ids, nearest first


class Assignment(ClusterBase):
    """The cluster each item belongs to (items.id -> clusters.id)."""

    __tablename__ = "assignments"

    item_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    cluster_id: Mapped[int] = mapped_column(Integer, index=True)
