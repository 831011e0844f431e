"""Files from another collection, or edited ones, are recognised instead of trusted.

A collection id binds the manifest, the store and the index snapshot: another collection's
snapshot is ignored (rebuilt from the store), another collection's store is an error naming both
files, and a snapshot that claims the right id but holds other vectors fails a sampled content
check. A manifest whose dimension or vector type disagrees with the store is an error naming the
manifest, not a reshape crash. Also: a deleted store file, stale temporary files of killed saves,
huge float32 vectors under cosine.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete

import latentsearch
from latentsearch.errors import CorruptCollectionError
from latentsearch.stores.models import Info
from latentsearch.stores.sql import SqlStore

WORDS = [f"w{i}a w{i}b w{i}c" for i in range(40)]
OTHER_WORDS = [f"v{i}x v{i}y v{i}z" for i in range(40)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> str | None:
    """The store of the collections a test makes: metadata.db in the folder, or PostgreSQL."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


def two_collections(hashing_collection, db: str | None, index: str = "Flat") -> tuple[Path, Path, dict[int, str]]:
    """Collections A and B of the same dimension and index spec, each with 40 items (ids 1-40
    in both) and a saved snapshot; returns their folders and A's texts by id."""
    a = hashing_collection("a", index=index, store=db)
    ids = a.add(WORDS)
    a.close()
    b = hashing_collection("b", index=index, store=db)
    assert b.add(OTHER_WORDS) == ids
    b.close()
    assert (a.path / "index.faiss").exists() and (b.path / "index.faiss").exists()
    return a.path, b.path, dict(zip(ids, WORDS))


def copy_snapshot(src: Path, dst: Path) -> None:
    for name in ("index.faiss", "index.json"):
        shutil.copyfile(src / name, dst / name)


def manifest(path: Path) -> dict:
    return json.loads((path / "latentsearch.json").read_text())


def edit_manifest(path: Path, **changes: object) -> None:
    (path / "latentsearch.json").write_text(json.dumps({**manifest(path), **changes}))


def assert_finds_itself(path: Path, texts: dict[int, str]) -> None:
    with latentsearch.open(path) as col:
        for item_id, text in texts.items():
            hit = col.search(text, k=1)[0]
            assert (hit.id, hit.text) == (item_id, text)
        report = col.verify()
        assert report["missing_from_index"] == report["not_in_store"] == report["indexed_twice"] == []
        assert report["vectors_checked"] == len(texts) and report["vectors_differ"] == []


# -- 1. another collection's snapshot or store ------------------------------------------------------


@pytest.mark.parametrize("index", ["Flat", "HNSW16"])
def test_another_collections_snapshot_is_ignored(hashing_collection, db, index, tmp_path, caplog) -> None:
    a, b, texts = two_collections(hashing_collection, db, index)
    copy_snapshot(b, a)
    caplog.set_level(logging.WARNING, logger="latentsearch")
    assert_finds_itself(a, texts)  # rebuilt from A's store, not B's vectors under A's ids
    assert "belongs to another collection" in caplog.text
    with latentsearch.open(a) as col:  # the next write saves A's own snapshot, not B's
        col.add(["one more"])
    snap = json.loads((a / "index.json").read_text())
    assert snap["collection_id"] == manifest(a)["collection_id"] != manifest(b)["collection_id"]
    caplog.clear()
    assert_finds_itself(a, {**texts, len(texts) + 1: "one more"})
    assert "building the index" not in caplog.text  # that snapshot is used as it is


@pytest.mark.parametrize("index", ["Flat", "HNSW16"])
def test_a_snapshot_claiming_this_collection_but_holding_other_vectors_is_ignored(
    hashing_collection, db, index, caplog
) -> None:
    """The content check: a few vectors of the snapshot compared with the store's on load."""
    a, b, texts = two_collections(hashing_collection, db, index)
    copy_snapshot(b, a)
    forged = json.loads((a / "index.json").read_text())
    forged["collection_id"] = manifest(a)["collection_id"]
    (a / "index.json").write_text(json.dumps(forged))
    caplog.set_level(logging.WARNING, logger="latentsearch")
    assert_finds_itself(a, texts)
    assert "holds other vectors than the store" in caplog.text


def test_another_collections_store_is_an_error_naming_both_files(hashing_collection, db) -> None:
    a, b, _ = two_collections(hashing_collection, db)
    if db is None:
        for suffix in ("", "-wal", "-shm"):
            (a / f"metadata.db{suffix}").unlink(missing_ok=True)
            if (b / f"metadata.db{suffix}").exists():
                shutil.copyfile(b / f"metadata.db{suffix}", a / f"metadata.db{suffix}")
        named = str(a / "metadata.db")
    else:
        edit_manifest(a, store_schema=manifest(b)["store_schema"])
        named = manifest(b)["store_schema"]
    with pytest.raises(CorruptCollectionError) as err:
        latentsearch.open(a)
    message = str(err.value)
    assert named in message and str(a / "latentsearch.json") in message
    assert "another collection" in message


def test_verify_compares_vectors_not_only_ids(hashing_collection, db) -> None:
    col = hashing_collection("c", store=db)
    ids = col.add(WORDS[:10])
    assert col.verify()["vectors_differ"] == []
    with col.sync.writing() as index:  # an index that holds the right ids with a wrong vector
        index.remove(np.array([ids[3]]))
        index.add(np.array([ids[3]]), np.ones((1, 64), dtype=np.float32))
    report = col.verify()
    assert report["missing_from_index"] == report["not_in_store"] == []
    assert report["vectors_checked"] == 10 and report["vectors_differ"] == [ids[3]]
    assert col.verify(vectors=3)["vectors_checked"] == 3
    assert col.verify(vectors=0)["vectors_checked"] == 0


def unbind(path: Path, store: SqlStore) -> None:
    """Make a collection look made by a version before collection ids."""
    data = manifest(path)
    del data["collection_id"]
    (path / "latentsearch.json").write_text(json.dumps(data))
    snap = json.loads((path / "index.json").read_text())
    del snap["collection_id"]
    (path / "index.json").write_text(json.dumps(snap))
    with store.engine.begin() as conn:
        conn.execute(delete(Info).where(Info.name.in_(["collection_id", "vector_dtype"])))


def test_a_collection_without_ids_opens_and_is_bound_by_its_next_write(hashing_collection, db, caplog) -> None:
    col = hashing_collection("old", store=db)
    ids = col.add(WORDS[:10])
    col.close()
    unbind(col.path, col.store)
    before = (col.path / "latentsearch.json").read_bytes()
    caplog.set_level(logging.INFO, logger="latentsearch")
    with latentsearch.open(col.path) as old:
        assert old.search(WORDS[4], k=1)[0].id == ids[4]
        assert old.config.collection_id is None and old.store.collection_id() is None
    assert "building the index" not in caplog.text  # its snapshot is used
    assert (col.path / "latentsearch.json").read_bytes() == before  # reads never write
    with latentsearch.open(col.path) as old:
        old.add(["a write"])
        bound = manifest(col.path)["collection_id"]
        assert bound and old.config.collection_id == bound == old.store.collection_id()
    assert json.loads((col.path / "index.json").read_text())["collection_id"] == bound
    caplog.clear()
    with latentsearch.open(col.path) as again:
        assert again.search(WORDS[4], k=1)[0].id == ids[4]
    assert "building the index" not in caplog.text


# -- 2. a manifest that disagrees with the store ------------------------------------------------------


def test_a_manifest_whose_dimension_disagrees_with_the_store(hashing_collection, db, tmp_path) -> None:
    col = hashing_collection("c", store=db)
    col.add(WORDS[:5])
    col.close()
    edit_manifest(col.path, dim=32)
    with pytest.raises(CorruptCollectionError) as err:
        latentsearch.open(col.path)
    message = str(err.value)
    assert str(col.path / "latentsearch.json") in message and "dimension 32" in message and "64" in message
    from click.testing import CliRunner

    from latentsearch.cli import cli

    result = CliRunner().invoke(cli, ["info", str(col.path)])
    assert result.exit_code != 0 and "reshape" not in result.output and "dimension 32" in result.output
    edit_manifest(col.path, dim=64, vector_dtype="float16")
    with pytest.raises(CorruptCollectionError, match="vector_dtype 'float16'"):
        latentsearch.open(col.path)
    edit_manifest(col.path, vector_dtype="float32", metric="l2")
    with pytest.raises(CorruptCollectionError, match="metric 'l2'"):
        latentsearch.open(col.path)


def test_stored_vectors_of_another_size_than_the_manifest_says(hashing_collection, db) -> None:
    """Where the store's info table lacks the facts (older stores), the vectors' size decides."""
    col = hashing_collection("c", store=db)
    col.add(WORDS[:5])
    col.close()
    with col.store.engine.begin() as conn:
        conn.execute(delete(Info).where(Info.name.in_(["dim", "vector_dtype"])))
    edit_manifest(col.path, dim=32)
    with pytest.raises(CorruptCollectionError, match="vectors of 256 bytes"):
        latentsearch.open(col.path)


# -- rough edges --------------------------------------------------------------------------------------


def test_a_deleted_store_file_is_an_error_not_an_empty_store(tmp_path) -> None:
    with latentsearch.create(tmp_path / "c", encoder="hashing:64", index="Flat") as col:
        col.add(WORDS[:3])
    for name in ("metadata.db", "metadata.db-wal", "metadata.db-shm"):
        (tmp_path / "c" / name).unlink(missing_ok=True)
    with pytest.raises(CorruptCollectionError, match="store file .*metadata.db.* is missing"):
        latentsearch.open(tmp_path / "c")
    assert not (tmp_path / "c" / "metadata.db").exists()


def dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_temporary_files_of_killed_saves_are_removed_by_the_next_write(tmp_path) -> None:
    path = tmp_path / "c"
    with latentsearch.create(path, encoder="hashing:64", index="Flat") as col:
        col.add(WORDS[:3])
    pid = dead_pid()
    stale = [path / f".index.faiss.{pid}.tmp", path / f".index.json.{pid}.tmp", path / f".latentsearch.json.{pid}.tmp"]
    alive = path / ".index.faiss.1.tmp"  # pid 1 runs: a save in progress is left alone
    other = path / ".notes.123.tmp"  # not a file latentsearch writes
    for p in [*stale, alive, other]:
        p.write_bytes(b"half a file")
    with latentsearch.open(path) as col:
        col.search("w1a", k=1)
        assert all(p.exists() for p in stale)  # reads never write
        col.add(["another"])
    assert not any(p.exists() for p in stale)
    assert alive.exists() and other.exists()


def test_huge_float32_vectors_keep_their_direction_under_cosine(tmp_path) -> None:
    with latentsearch.create(tmp_path / "c", encoder=None, dim=4, index="Flat") as col:
        big, small = col.add(np.array([[3e38, 3e38, 3e38, 3e38], [1.0, 0.0, 0.0, 0.0]], dtype=np.float32))
        _, stored = col.store.vectors([big])
        np.testing.assert_allclose(stored[0], [0.5, 0.5, 0.5, 0.5], rtol=1e-6)
        hit = col.search(np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32), k=1)[0]
        assert hit.id == big and hit.score == pytest.approx(1.0, abs=1e-6)
