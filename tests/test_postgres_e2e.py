"""A collection end to end on PostgreSQL (and, the same way, on its default SQLite file)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

import latentsearch
from latentsearch.collection import Collection
from latentsearch.errors import CollectionLockedError, InvalidInputError
from latentsearch.stores.sql import SqlStore

TEXTS = [
    "ships sailing across the open sea",
    "a cat sleeping on a warm windowsill",
    "stock markets fell sharply on monday",
    "fresh bread baking in a stone oven",
    "the orchestra played a quiet symphony",
    "mountain trails covered in winter snow",
]
KEYS = ["ships", "cat", "markets", "bread", "orchestra", "mountains"]
METADATA = [{"topic": k, "n": i, "tags": ["é", {"nested": [i]}]} for i, k in enumerate(KEYS)]
QUERIES = ["boats on the sea", "a sleeping cat", "symphony orchestra", "winter snow"]


def schema_exists(url: str, schema: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema})
            return found.first() is not None
    finally:
        engine.dispose()


def answers(col: Collection) -> list[list[tuple[int, str | None, float]]]:
    """The top 3 hits per query, leaving out zero scores (no shared word), whose order is a tie."""
    return [
        [(h.id, h.key, round(h.score, 5)) for h in hits if abs(h.score) > 1e-6]
        for hits in col.search_batch(QUERIES, k=3)
    ]


def test_collection_end_to_end(tmp_path: Path, store_url: str) -> None:
    on_postgres = not store_url.startswith("sqlite")
    store = store_url if on_postgres else None
    path = tmp_path / "My Notes"
    col = latentsearch.create(path, encoder="hashing:64", index="Flat", store=store)
    schema = col.config.store_schema
    try:
        if on_postgres:
            assert schema is not None and re.fullmatch(r"ls_my_notes_[0-9a-f]{8}", schema)
            assert schema_exists(store_url, schema)
            assert not (path / "metadata.db").exists()
        else:
            assert schema is None and (path / "metadata.db").exists()
        manifest = json.loads((path / "latentsearch.json").read_text())
        assert (manifest["store_url"], manifest["store_schema"]) == (store, schema)

        ids = col.add(TEXTS, metadata=METADATA, keys=KEYS)
        assert len(ids) == len(set(ids)) == len(TEXTS)
        hits = col.search("boats on the sea", k=3)
        assert [h.key for h in hits][0] == "ships"
        assert (hits[0].id, hits[0].text, hits[0].metadata) == (ids[0], TEXTS[0], METADATA[0])
        assert [item.key for item in col.get([ids[2], max(ids) + 100, ids[0]])] == ["markets", "ships"]
        with pytest.raises(InvalidInputError, match="exists already"):
            col.add(["another ship"], keys=["ships"])
        assert col.upsert(["a cat asleep in the sun"], keys=["cat"]) == [ids[1]]
        before = answers(col)
        assert all(before), before  # every query has a real (non-tied) hit to compare
        col.close()

        with latentsearch.open(path) as col:
            assert answers(col) == before
            assert len(col) == len(TEXTS)
            assert col.delete(keys=["ships"]) == 1
            assert col.delete(ids=[ids[0]]) == 0
            assert ids[0] not in [h.id for h in col.search("boats on the sea", k=len(TEXTS))]
            col.reindex("HNSW16")
            info = col.info()
            assert info["index"] == info["index_in_use"] == "HNSW16"
            assert info["items"] == info["indexed"] == len(TEXTS) - 1
            assert isinstance(info["store_bytes"], int)
            if on_postgres:
                assert info["store"] == make_url(store_url).render_as_string(hide_password=True)
                assert info["store"].startswith("postgresql")
            else:
                assert info["store"] == f"sqlite:///{path / 'metadata.db'}"
            assert col.delete(keys=["markets"]) == 1  # HNSW cannot remove: a tombstone until rebuilt
            after = answers(col)
            assert all(h[1] not in ("ships", "markets") for hits in after for h in hits)
            assert [hits[0][1] for hits in after[1:]] == ["cat", "orchestra", "mountains"]

        with latentsearch.open(path) as col:
            assert col.config.index == "HNSW16"
            assert answers(col) == after
            assert len(col) == len(TEXTS) - 2

        # Invariant 1: the index is derived; without its files it is rebuilt from the store.
        (path / "index.faiss").unlink()
        (path / "index.json").unlink()
        with latentsearch.open(path) as col:
            assert answers(col) == after
    finally:
        col.close()
        if schema:
            SqlStore(store_url, 64, schema=schema).drop()
            assert not schema_exists(store_url, schema)


@pytest.mark.postgres
def test_one_writer_per_postgres_collection(
    tmp_path: Path, pg_url: str, hashing_collection: Callable[..., Collection]
) -> None:
    first = hashing_collection("first", store=pg_url)
    first.add(["written by the first writer"])
    shutil.copytree(first.path, tmp_path / "copy")  # the same manifest: the same schema, another lock file
    with latentsearch.open(tmp_path / "copy") as second, first.writing():  # first holds the lock now
        second.lock_timeout = 0.2
        with pytest.raises(CollectionLockedError):
            second.add(["written by a second writer at the same time"])
