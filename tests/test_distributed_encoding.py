"""Encoding on Ray (``index --ray``, ``index_paths(engine="ray")``): the same collection as a
single-process run, the same incremental rules, and the same crash safety: a worker killed
mid-run is retried and its batch written once; a driver killed mid-run leaves committed batches,
and running the command again finishes the job with no duplicates. On SQLite and PostgreSQL.

One local Ray cluster serves the whole test session (``ray_cluster`` in conftest.py); CLI runs in
subprocesses join it by address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import latentsearch
from latentsearch.collection import Collection
from latentsearch.errors import InvalidInputError
from latentsearch.testing_hooks import KILL_WORKER_ONCE

sys.path.insert(0, str(Path(__file__).parent))
from test_crash import KILLED, assert_complete, drop_store, index_command, index_env, write_corpus  # noqa: E402

N = 1_200  # records in the kill tests: several dozen batches of 32


def write_folder(folder: Path) -> Path:
    """Text files, one long enough to be split into passages, and a JSONL file of records."""
    folder.mkdir()
    for i in range(40):
        (folder / f"note{i}.txt").write_text(f"note {i} about ships and the sea " * (1 + i % 3))
    (folder / "long.txt").write_text(" ".join(f"word{i}" for i in range(3000)))
    with open(folder / "records.jsonl", "w") as fh:
        for i in range(300):
            fh.write(json.dumps({"_id": f"r{i}", "text": f"record {i} on bread and yeast", "n": i}) + "\n")
    return folder


def contents(col: Collection) -> dict[str, tuple]:
    """Every item by key: its text, metadata, document and vector bytes."""
    items = col.get(col.store.ids().tolist())
    found, vectors = col.store.vectors([i.id for i in items])
    assert list(found) == [i.id for i in items]
    return {
        i.key: (i.text, json.dumps(i.metadata, sort_keys=True), i.document, np.asarray(v, np.float32).tobytes())
        for i, v in zip(items, vectors)
    }


def vector_of(col: Collection, path: Path) -> np.ndarray:
    (item_id, _), = col.store.keys_to_ids([str(path.resolve())]).values()
    return col.store.vectors([item_id])[1][0]


def test_ray_builds_the_same_collection_as_one_process(ray_cluster: str, tmp_path: Path, hashing_collection) -> None:
    folder = write_folder(tmp_path / "docs")
    local, ray = hashing_collection("local"), hashing_collection("ray")
    a = local.index_paths([folder], batch_size=16)
    b = ray.index_paths([folder], batch_size=16, engine="ray")
    assert (b.added, b.inputs, b.skipped) == (a.added, a.inputs, a.skipped)
    assert a.added > 341  # the long file became passages
    assert list(b.ids) == list(a.ids)  # the same ids, in input order
    assert contents(ray) == contents(local)
    assert [h.key for h in ray.search("ships and the sea", k=5)] == [h.key for h in local.search("ships and the sea", k=5)]

    # Incremental: nothing changed, one file changed, one renamed (its vector kept), one gone.
    again = ray.index_paths([folder], batch_size=16, engine="ray")
    assert (again.added, again.updated, again.unchanged) == (0, 0, a.inputs)
    (folder / "note1.txt").write_text("a new text about whales")
    kept = vector_of(ray, folder / "note2.txt")
    (folder / "note2.txt").rename(folder / "moved.txt")
    for col in (local, ray):
        col.index_paths([folder], batch_size=16, prune=True, engine="ray" if col is ray else "local")
    assert contents(ray) == contents(local)
    assert np.array_equal(vector_of(ray, folder / "moved.txt"), kept)
    assert ray.verify()["missing_from_index"] == []


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_killed_worker_is_retried_and_its_batch_written_once(
    ray_cluster: str, tmp_path: Path, hashing_collection, store: str, request: pytest.FixtureRequest, monkeypatch
) -> None:
    url = request.getfixturevalue("pg_url") if store == "postgres" else None
    corpus = write_corpus(tmp_path / "corpus.jsonl", N)
    col = hashing_collection(store=url)
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_WORKER_ONCE, f"{marker}:5")  # the first worker at its 5th batch dies
    report = col.index_paths([corpus], batch_size=32, engine="ray", actors=2)
    assert marker.exists()  # a worker did die
    assert (report.added, report.inputs) == (N, N)
    keys = [item.key for item in col.get(col.store.ids().tolist())]
    assert len(keys) == N and set(keys) == {f"r{i}" for i in range(N)}
    verified = col.verify()
    assert verified["items"] == N and verified["indexed_twice"] == [] and verified["missing_from_index"] == []
    # Run again: the record file's lines carry no file state, but chunks the store holds unchanged
    # are counted on the driver and never sent to be encoded.
    again = col.index_paths([corpus], batch_size=32, engine="ray", actors=2)
    assert (again.added, again.unchanged, again.stages["encode"]) == (0, N, 0.0)
    assert list(again.ids) == list(report.ids)


@pytest.mark.parametrize("db", [None, pytest.param("postgres", marks=pytest.mark.postgres)], ids=["sqlite", "postgres"])
def test_a_killed_driver_leaves_what_it_committed_and_a_rerun_finishes(
    ray_cluster: str, tmp_path: Path, db: str | None, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if db else None
    corpus = write_corpus(tmp_path / "corpus.jsonl", N)
    col = tmp_path / "col"
    command = index_command(col, corpus, "Flat", url) + ["--ray", ray_cluster]
    try:
        killed = subprocess.run(command, env=index_env(kill_after_commits=6), capture_output=True, text=True, timeout=300)
        assert killed.returncode == KILLED, killed.stderr
        with latentsearch.open(col) as partial:
            assert 0 < len(partial) < N
        rerun = subprocess.run(command, env=index_env(), capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert_complete(col, N)
    finally:
        drop_store(col, url)


def test_cli_index_on_ray_and_its_errors(ray_cluster: str, tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", 200)
    col = tmp_path / "col"
    env = index_env()
    ok = subprocess.run(index_command(col, corpus, "Flat") + ["--ray", ray_cluster, "--actors", "1", "--json"],
                        env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["added"] == 200
    # --actors alone, an address nothing listens at, and nonsense: clear errors, no collection made.
    for extra, words in [(["--actors", "2"], "--ray"), (["--ray", "127.0.0.1:9"], "cannot reach"),
                         (["--ray", "not an address"], "not a Ray cluster address")]:
        out = subprocess.run(index_command(tmp_path / "other", corpus, "Flat") + extra, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode != 0 and words in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and out.stderr.count("Error:") == 1, out.stderr
        assert not (tmp_path / "other").exists()


def test_engine_and_actors_are_checked_before_anything_is_read(hashing_collection, tmp_path: Path) -> None:
    col = hashing_collection()
    with pytest.raises(InvalidInputError, match="engine must be one of"):
        col.index_paths([tmp_path], engine="spark")
    with pytest.raises(InvalidInputError, match="actors must be"):
        col.index_paths([tmp_path], actors=2)  # no Ray
    with pytest.raises(InvalidInputError, match="actors must be"):
        col.add_records([], engine="ray", actors=0)
    assert len(col) == 0


@pytest.mark.slow
def test_minilm_on_ray_gives_the_vectors_of_one_process(ray_cluster: str, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(30):
        (folder / f"{i}.txt").write_text(f"Document {i}: vaccines, sleep and the training of neural networks. " * (i % 4 + 1))
    local = Collection.create(tmp_path / "local", encoder="minilm", index="Flat")
    ray = Collection.create(tmp_path / "ray", encoder="minilm", index="Flat")
    with local, ray:
        local.index_paths([folder])
        ray.index_paths([folder], engine="ray", actors=1)
        a, b = contents(local), contents(ray)
        assert a.keys() == b.keys()
        for key in a:
            va, vb = (np.frombuffer(x[3], np.float32) for x in (a[key], b[key]))
            assert float(va @ vb) > 0.9999, key  # one model, other batches: equal up to float rounding
        assert [h.key for h in ray.search("sleep", k=3)] == [h.key for h in local.search("sleep", k=3)]


@pytest.mark.parametrize("resources, actors, expected", [
    ({"CPU": 16.0}, None, (16, 1.0, 0.0)),             # one encoder per core
    ({"CPU": 16.0}, 4, (4, 4.0, 0.0)),                 # fewer, with the cores shared among them
    ({"CPU": 2.0}, 8, (8, 0.25, 0.0)),                 # more actors than cores: fractions
    ({"CPU": 16.0, "GPU": 2.0}, None, (2, 8.0, 1.0)),  # one per GPU
    ({"CPU": 8.0, "GPU": 1.0}, 2, (2, 4.0, 0.5)),      # two sharing a GPU
])
def test_the_actor_pool_follows_the_cluster(resources, actors, expected) -> None:
    from types import SimpleNamespace

    from latentsearch.distributed.encoding import Pool

    pool = Pool.for_cluster(SimpleNamespace(cluster_resources=lambda: resources), actors)
    assert (pool.actors, pool.cpus, pool.gpus) == expected


@pytest.mark.slow
def test_images_on_ray_give_the_vectors_of_one_process(ray_cluster: str, tmp_path: Path) -> None:
    pytest.importorskip("timm")
    from PIL import Image

    folder = tmp_path / "pics"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (30 + 5 * i, 40, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    (folder / "broken.png").write_bytes(b"not a png")
    spec = "timm:resnet18?pretrained=false"
    with Collection.create(tmp_path / "local", encoder=spec, index="Flat") as local, \
            Collection.create(tmp_path / "ray", encoder=spec, index="Flat") as ray:
        a = local.index_paths([folder])
        b = ray.index_paths([folder], engine="ray", actors=1)
        assert (b.added, [s.source for s in b.skipped]) == (a.added, [s.source for s in a.skipped]) == (5, [s.source for s in a.skipped])
        assert len(b.skipped) == 1 and "broken.png" in b.skipped[0].source and b.skipped[0].reason == a.skipped[0].reason
        x, y = contents(local), contents(ray)
        assert x.keys() == y.keys()
        for key in x:
            assert np.allclose(np.frombuffer(x[key][3], np.float32), np.frombuffer(y[key][3], np.float32), atol=1e-5)
