"""On-disk IVF indexes (``?on_disk=true``): built in shards (in this process and as Ray tasks),
merged into a memory-mapped lists file, kept in step with the store by an in-memory delta.

Every build here is checked against an in-memory index of the same trained quantiser holding the
same vectors: the merged lists must give the same ids and distances at equal nprobe."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from latentsearch.cli import cli
from latentsearch.collection import Collection
from latentsearch.errors import InvalidInputError
from latentsearch.indexes import ondisk_build
from latentsearch.indexes.ondisk import OnDiskIndex
from latentsearch.indexes.ondisk_files import empty_like
from latentsearch.indexes.selection import IndexSpec, with_on_disk
from latentsearch.testing_hooks import ONDISK_CRASH, SHARD_FAIL_ONCE
from latentsearch.vectors import exact_search

N, DIM, K = 3000, 64, 10
SPEC = "IVF32,PQ16x4?nprobe=4"  # trains on 1,248 vectors: 39 per list


def clustered(n: int = N, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, DIM)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.4 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def queries(seed: int = 1, n: int = 50) -> np.ndarray:
    return clustered(n, seed)


def in_memory_twin(col: Collection) -> object:
    """An in-memory FAISS index of the on-disk index's trained quantiser and codebooks holding
    every stored vector, added in id order (what one build in memory would hold)."""
    index = col.index()
    assert isinstance(index, OnDiskIndex)
    twin = empty_like(index.base_path)
    for ids, vectors in col.store.iter_vectors():
        twin.add_with_ids(vectors, ids)
    return twin


def assert_same_as_twin(col: Collection, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    twin = in_memory_twin(col)
    index = col.index()
    D, I = index.search(xq, K)
    Dt, It = twin.search(xq, K, params=faiss.SearchParametersIVF(nprobe=4))
    np.testing.assert_array_equal(I, It)
    np.testing.assert_array_equal(D, Dt)
    return D, I


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))


def hits(col: Collection, vector: np.ndarray, k: int = K) -> list[int]:
    _, I = col.index().search(vector[None, :], k)
    return [int(i) for i in I[0] if i >= 0]


@pytest.fixture
def filled(hashing_collection, store_url):
    """A collection of N clustered vectors, on SQLite (an external file) and on PostgreSQL."""
    col = hashing_collection(index="Flat", store=store_url)
    col.add(clustered())
    return col


# -- the spec --------------------------------------------------------------------------------------


def test_spec_remembers_on_disk_and_refuses_what_cannot_go_to_disk():
    assert str(IndexSpec.parse("IVF64,PQ8?on_disk=true&nprobe=4")) == "IVF64,PQ8?nprobe=4&on_disk=true"
    assert IndexSpec.parse(with_on_disk("IVF64,Flat")).on_disk
    assert not IndexSpec.parse("IVF64,Flat?on_disk=false").on_disk
    for spec, words in [("Flat", "needs an IVF"), ("HNSW32", "needs an IVF"), ("auto", "needs an IVF"),
                        ("IVF64,PQ8x4fs", "fast-scan"), ("IVF64,PQ8?recall=0.9", "recall=")]:
        with pytest.raises(InvalidInputError, match=words):
            with_on_disk(spec)
    with pytest.raises(InvalidInputError, match="true or false"):
        IndexSpec.parse("IVF64,Flat?on_disk=maybe")


# -- the build ------------------------------------------------------------------------------------


def test_merged_lists_equal_one_in_memory_build(filled):
    col = filled
    col.reindex(SPEC, on_disk=True, shards=3)
    assert col.config.index == "IVF32,PQ16x4?nprobe=4&on_disk=true"
    index = col.index()
    assert isinstance(index, OnDiskIndex) and index.ntotal == N
    xq = queries()
    _, I = assert_same_as_twin(col, xq)
    # recall against exact search: the in-memory twin's (4-bit PQ on 16 sub-vectors is coarse)
    import faiss

    _, It = in_memory_twin(col).search(xq, K, params=faiss.SearchParametersIVF(nprobe=4))
    ids, vectors = next(col.store.iter_vectors(batch_size=N))
    _, truth = exact_search(xq, [(ids, vectors)], K, "cosine")
    assert recall(I, truth) == recall(It, truth) > 0.2
    files = sorted(p.name for p in col.path.iterdir() if p.name.startswith("index"))
    assert [f.rsplit(".", 1)[-1] for f in files if ".delta-" not in f] == ["faiss", "ids", "ivfdata", "json"]
    assert not any(p.name.endswith(".shards") for p in col.path.iterdir())  # staging removed
    assert col.verify()["missing_from_index"] == [] and col.verify()["not_in_store"] == []


def test_shards_on_ray_equal_in_process_and_a_failed_task_is_retried(hashing_collection, ray_cluster, tmp_path,
                                                                    monkeypatch):
    col = hashing_collection(index="Flat")
    col.add(clustered())
    xq = queries()
    col.reindex(SPEC, on_disk=True, shards=1)
    here = col.index().search(xq, K)
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv(SHARD_FAIL_ONCE, f"exit:{marks}")  # the first attempt at shard 0 ends its worker
    col.reindex(SPEC, on_disk=True, ray=ray_cluster, shards=3)
    assert (marks / "shard-0.failed").exists()
    on_ray = col.index().search(xq, K)
    np.testing.assert_array_equal(here[1], on_ray[1])
    np.testing.assert_array_equal(here[0], on_ray[0])
    assert_same_as_twin(col, xq)


def test_a_shard_that_fails_once_in_process_is_retried(filled, tmp_path, monkeypatch):
    monkeypatch.setenv(SHARD_FAIL_ONCE, f"raise:{tmp_path}")
    filled.reindex(SPEC, on_disk=True, shards=2)
    assert (tmp_path / "shard-0.failed").exists()
    assert_same_as_twin(filled, queries())


def test_ray_missing_is_the_cluster_modules_error(hashing_collection, monkeypatch):
    col = hashing_collection(index="Flat")
    col.add(clustered(1500))
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    with pytest.raises(InvalidInputError, match=r"needs Ray, which is not installed: pip install"):
        col.reindex(SPEC, on_disk=True, ray="local")
    assert col.config.index == "Flat" and not list(col.path.glob("index-*"))


def test_too_few_vectors_and_non_ivf_specs_are_clear_errors(hashing_collection):
    col = hashing_collection(index="Flat")
    col.add(clustered(500))
    with pytest.raises(InvalidInputError, match="needs at least 1,248 stored vectors"):
        col.reindex(SPEC, on_disk=True)
    with pytest.raises(InvalidInputError, match="needs an IVF"):
        col.reindex("HNSW32", on_disk=True)
    with pytest.raises(InvalidInputError, match="add --on-disk"):
        col.reindex("IVF32,Flat", ray="local")
    assert col.config.index == "Flat" and len(hits(col, clustered(500)[0])) == K


# -- writes after the build -------------------------------------------------------------------------


def test_adds_deletes_and_updates_after_the_build(filled):
    col = filled
    x = clustered()
    keyed = col.upsert(x[:20] * 0.5 + clustered(20, 7) * 0.5, keys=[f"k{i}" for i in range(20)])
    col.reindex(SPEC, on_disk=True, shards=2)
    index = col.index()
    # adds go to the delta and are found
    new = clustered(30, seed=3)
    added = col.add(new)
    assert index.index.ntotal == 30 and index.ntotal == N + 20 + 30
    assert all(added[i] in hits(col, new[i]) for i in range(30))
    # deletes of on-disk items never come back
    gone = [int(i) for i in hits(col, x[5])[:3]]
    col.delete(ids=gone)
    assert not set(gone) & set(hits(col, x[5], k=50))
    # an update hides the on-disk vector; the new one lives in the delta
    old, moved = col.store.vectors([keyed[0]])[1][0], -x[100]
    col.upsert(moved[None, :], keys=["k0"])
    assert keyed[0] not in hits(col, old, k=50)
    assert hits(col, moved)[0] == keyed[0]
    assert sorted(hits(col, moved, k=50)).count(keyed[0]) == 1
    assert index.hidden == 4 and col.verify()["indexed_twice"] == []
    # an id selector (a filter) applies to both parts, and hidden ids stay hidden under it
    import faiss

    allowed = np.array(gone + added[:10] + list(range(1, 200)), dtype=np.int64)
    _, I = index.search(queries(), K, selector=faiss.IDSelectorBatch(allowed))
    assert set(I[I >= 0].tolist()) <= set(allowed.tolist()) - set(gone) and (I >= 0).any()
    assert [h.id for h in col.search(new[3], k=3)][0] == added[3]  # the façade's search, end to end
    # saving writes the delta and index.json, never the lists file
    lists = index.lists_path
    before = (lists.stat().st_mtime_ns, lists.stat().st_size)
    assert col.flush()
    assert (lists.stat().st_mtime_ns, lists.stat().st_size) == before
    xq = queries()
    expected = index.search(xq, K)
    path = col.path
    col.close()
    # reopen: the delta from its file, the hidden ids from the change log
    with Collection.open(path) as again:
        got = again.index().search(xq, K)
        np.testing.assert_array_equal(got[1], expected[1])
        assert again.index().hidden == 4
        # another process's writes (a second Collection) are caught up before a search
        with Collection.open(path) as other:
            other.delete(ids=[added[0]])
            late = other.add(new[:1] + 0.01)
        assert added[0] not in hits(again, new[0]) and late[0] in hits(again, new[0])
        report = again.verify()
        assert report["missing_from_index"] == [] and report["not_in_store"] == [] and report["indexed_twice"] == []


def test_a_damaged_delta_is_rebuilt_from_the_change_log_and_missing_lists_from_the_store(hashing_collection,
                                                                                       caplog):
    col = hashing_collection(index="Flat")
    x = clustered()
    col.add(x)
    col.reindex(SPEC, on_disk=True)
    added = col.add(clustered(5, seed=4))
    col.delete(ids=[1])
    col.flush()
    path = col.path
    delta = col.index().folder / col.index().delta_file
    col.close()
    delta.write_bytes(b"damaged")
    with Collection.open(path) as again:
        assert added[0] in hits(again, clustered(5, seed=4)[0]) and 1 not in hits(again, x[0])
        assert isinstance(again.index(), OnDiskIndex) and again.index().hidden == 1
    for lists in path.glob("index-*.ivfdata"):
        lists.unlink()
    with caplog.at_level(logging.INFO, logger="latentsearch.indexes.sync"), Collection.open(path) as again:
        index = again.index()
        assert isinstance(index, OnDiskIndex) and index.hidden == 0 and index.ntotal == N + 4
        assert "building the index" in caplog.text
        assert 1 not in hits(again, x[0]) and added[0] in hits(again, clustered(5, seed=4)[0])


# -- files ----------------------------------------------------------------------------------------------


def test_a_moved_collection_folder_keeps_its_on_disk_index(hashing_collection, tmp_path):
    col = hashing_collection(name="before", index="Flat")
    col.add(clustered())
    col.reindex(SPEC, on_disk=True)
    xq = queries()
    expected = col.index().search(xq, K)
    col.close()
    moved = tmp_path / "elsewhere" / "after"
    moved.parent.mkdir()
    shutil.move(tmp_path / "before", moved)
    with Collection.open(moved) as again:
        index = again.index()
        assert isinstance(index, OnDiskIndex) and index.lists_path.parent == moved
        got = index.search(xq, K)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
        again.add(clustered(3, seed=9))
        assert again.flush()
    with Collection.open(moved) as again:
        assert again.index().ntotal == N + 3


def test_an_exception_before_the_swap_leaves_the_old_index(hashing_collection, monkeypatch):
    col = hashing_collection(index="IVF16,Flat")
    x = clustered()
    col.add(x)
    col.flush()
    before = sorted(p.name for p in col.path.iterdir())

    def boom(name: str) -> None:
        raise RuntimeError(f"crash at {name}")

    monkeypatch.setattr(ondisk_build, "crash_point", boom)
    with pytest.raises(RuntimeError, match="before_swap"):
        col.reindex(SPEC, on_disk=True, shards=2)
    assert sorted(p.name for p in col.path.iterdir()) == before  # no new files left behind
    assert col.config.index == "IVF16,Flat" and not isinstance(col.index(), OnDiskIndex)
    assert hits(col, x[0])[0] == 1
    path = col.path
    col.close()
    with Collection.open(path) as again:
        assert again.config.index == "IVF16,Flat" and hits(again, x[0])[0] == 1


def test_a_kill_before_the_swap_leaves_the_old_index_and_the_cli(hashing_collection):
    col = hashing_collection(index="IVF16,Flat")
    x = clustered()
    col.add(x)
    col.flush()
    path = col.path
    col.close()
    command = [sys.executable, "-m", "latentsearch.cli", "reindex", str(path), "--index", "IVF64,Flat", "--on-disk"]
    killed = subprocess.run(command, env={**os.environ, ONDISK_CRASH: "before_swap"}, capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list(path.glob("index-*.ivfdata"))  # written, never committed
    with Collection.open(path) as again:
        assert again.config.index == "IVF16,Flat" and hits(again, x[0])[0] == 1
    # the CLI: a working on-disk reindex (the dead build's files are removed by its save) ...
    result = CliRunner().invoke(cli, ["reindex", str(path), "--index", "IVF64,Flat", "--on-disk"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "IVF64,Flat (lists on disk)" in result.stdout
    assert len(list(path.glob("index-*.ivfdata"))) == 1
    # ... `info --json` in a real process: stdout stays JSON though FAISS prints on reading the lists
    info = subprocess.run([sys.executable, "-m", "latentsearch.cli", "info", str(path), "--json"],
                          capture_output=True, text=True, timeout=120)
    data = json.loads(info.stdout)
    assert data["index"] == "IVF64,Flat?on_disk=true" and data["index_on_disk"] is True
    assert data["index_lists_bytes"] > data["index_ram_bytes"] > 0
    # ... and the bad spec: one line, non-zero exit
    bad = CliRunner().invoke(cli, ["reindex", str(path), "--index", "HNSW32", "--on-disk"])
    assert bad.exit_code != 0 and "needs an IVF spec" in bad.output and "Traceback" not in bad.output


def test_a_reader_whose_generation_another_reindex_replaced_keeps_working(hashing_collection, caplog):
    col = hashing_collection(index="Flat")
    x = clustered()
    col.add(x)
    col.reindex(SPEC, on_disk=True)
    with Collection.open(col.path) as reader:
        old = reader.index()
        before = hits(reader, x[7])
        col.reindex(SPEC, on_disk=True)  # a new generation; the reader's files are removed
        assert not old.lists_path.exists() and col.index().lists_path.exists()
        assert hits(reader, x[7]) == before  # the unlinked mapping still answers
        added = reader.add(clustered(2, seed=5))
        with caplog.at_level(logging.WARNING, logger="latentsearch.indexes.ondisk"):
            reader.flush()
        assert "replaced by another process's reindex" in caplog.text
    with Collection.open(col.path) as again:  # the newer generation, completed by the change log
        assert again.index().generation == col.index().generation
        assert added[0] in hits(again, clustered(2, seed=5)[0]) and again.index().ntotal == N + 2


def test_an_on_disk_spec_too_small_to_train_serves_from_memory_until_a_reindex(hashing_collection, caplog):
    col = hashing_collection(index="IVF32,Flat?on_disk=true")
    x = clustered(1000)
    with caplog.at_level(logging.WARNING, logger="latentsearch.indexes.ondisk_build"):
        col.add(x)
    assert "stays in memory until" in caplog.text
    assert not isinstance(col.index(), OnDiskIndex) and hits(col, x[3])[0] == 4
    col.add(clustered(1000, seed=2))
    col.reindex()  # the manifest's spec, now with enough vectors to train
    assert isinstance(col.index(), OnDiskIndex) and col.index().ntotal == 2000 and hits(col, x[3])[0] == 4
