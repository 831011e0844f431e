"""Concurrency is a contract: one Collection shared by many threads, and several processes.

Searching threads (by text, vector and id, with and without filters) run while one thread adds,
upserts, deletes and reindexes. Every hit must be an item that existed when the search began
(never one whose ``delete`` had returned), carry that item's own metadata, and no thread may see
an exception; afterwards ``verify()`` is clean. ``LATENTSEARCH_STRESS_SECONDS`` sets how long the
threads run (a few seconds by default; the issue's check runs 20).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import latentsearch
from latentsearch.errors import InvalidInputError

SECONDS = float(os.environ.get("LATENTSEARCH_STRESS_SECONDS", "3"))
DIM = 64
READERS = 8


def _vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal((n, DIM)).astype(np.float32)


@pytest.mark.parametrize("index", ["HNSW16", "Flat"])
def test_threads_search_while_one_thread_writes(tmp_path: Path, store_url: str, hashing_collection, index: str):
    store = None if store_url.startswith("sqlite") else store_url
    col = hashing_collection("stress", index=index, store=store)
    rng = np.random.default_rng(0)
    first = col.add(_vectors(rng, 1000), metadata=[{"n": i, "even": i % 2 == 0} for i in range(1000)])
    tag = {i: n for n, i in enumerate(first)}  # id -> the "n" its metadata must carry
    deleted: set[int] = set()  # ids whose delete() has returned
    live = list(first)
    errors: list[BaseException] = []
    stop = threading.Event()
    counts = {"searches": 0, "hits": 0, "writes": 0}
    lock = threading.Lock()

    def writer() -> None:
        wrng = np.random.default_rng(1)
        n = 1000
        rounds = 0
        try:
            while not stop.is_set():
                rounds += 1
                new = col.add(_vectors(wrng, 500), metadata=[{"n": n + j, "even": (n + j) % 2 == 0} for j in range(500)])
                with lock:
                    tag.update({i: n + j for j, i in enumerate(new)})
                    live.extend(new)
                n += 500
                gone = random.Random(rounds).sample(live, 50)
                assert col.delete(ids=gone) == 50
                with lock:
                    deleted.update(gone)
                    live[:] = [i for i in live if i not in deleted]
                col.upsert([f"keyed text {rounds % 7} version {rounds}"], keys=[f"k{rounds % 7}"],
                           metadata=[{"n": -1, "even": True}])
                if rounds % 5 == 0:
                    col.reindex()
                counts["writes"] += 1
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)
            stop.set()

    def reader(seed: int) -> None:
        r = random.Random(seed)
        qrng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                with lock:
                    gone_before = set(deleted)
                    some_live = r.choice(live)
                kind = r.choice(["text", "vector", "id"])
                query = {"text": "keyed text version", "vector": _vectors(qrng, 1)[0], "id": some_live}[kind]
                where = {"even": True} if seed % 2 else None
                try:
                    hits = col.search(query, k=10, where=where)
                except InvalidInputError as exc:  # the queried item was deleted meanwhile
                    assert kind == "id" and "no item with id" in str(exc)
                    continue
                for h in hits:
                    assert h.id not in gone_before, f"deleted item {h.id} came back"
                    n = h.metadata["n"]
                    # (an add may be searchable a moment before it returns its ids to the test)
                    assert n == -1 or n == tag.get(h.id, n), (h.id, h.metadata)
                    if where:
                        assert h.metadata["even"] is True
                counts["searches"] += 1
                counts["hits"] += len(hits)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in range(READERS)]
    for t in threads:
        t.start()
    time.sleep(SECONDS)
    stop.set()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    # It observed something: searches with hits ran while writes landed.
    assert counts["searches"] > READERS and counts["hits"] > 0 and counts["writes"] >= 1, counts
    report = col.verify()
    assert report["missing_from_index"] == report["not_in_store"] == report["indexed_twice"] == []
    assert report["items"] == len(live) + len({f"k{r % 7}" for r in range(1, counts["writes"] + 1)})


def test_two_processes_write_in_turns_and_lose_nothing(tmp_path: Path):
    path = tmp_path / "shared"
    latentsearch.create(path, encoder=None, dim=8, index="Flat").close()
    script = (
        "import sys, numpy as np, latentsearch\n"
        "col = latentsearch.open(sys.argv[1])\n"
        "col.lock_timeout = 60\n"
        "who = sys.argv[2]\n"
        "for i in range(30):\n"
        "    col.upsert([np.full(8, i + 1, dtype=np.float32)], keys=[f'{who}-{i}'])\n"
        "col.close()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), who], stderr=subprocess.PIPE, text=True)
             for who in ("a", "b")]
    for p in procs:
        assert p.wait(300) == 0, p.stderr.read()
    with latentsearch.open(path) as col:
        assert len(col) == 60
        assert set(col.store.keys_to_ids([f"{w}-{i}" for w in "ab" for i in range(30)])) == {
            f"{w}-{i}" for w in "ab" for i in range(30)
        }
        report = col.verify()
        assert report["indexed"] == 60 and report["missing_from_index"] == report["indexed_twice"] == []


def test_a_reader_process_sees_writes_of_another_open_process(tmp_path: Path):
    path = tmp_path / "fresh"
    writer = latentsearch.create(path, encoder="hashing:32", index="Flat")
    reader = latentsearch.open(path)  # checks the store before every search (the default)
    lazy = latentsearch.open(path, read_consistency_interval=None)  # never re-checks once loaded
    try:
        writer.add(["the first text"])
        assert [h.text for h in reader.search("the first text", k=5)] == ["the first text"]
        assert [h.text for h in lazy.search("the first text", k=5)] == ["the first text"]
        writer.add(["a second text"])
        assert len(reader.search("a second text", k=5)) == 2
        assert len(lazy.search("a second text", k=5)) == 1  # as documented: its snapshot stands
        lazy.sync.catch_up()  # the explicit call
        assert len(lazy.search("a second text", k=5)) == 2
    finally:
        for c in (writer, reader, lazy):
            c.close()


def test_reads_never_write(tmp_path: Path):
    path = tmp_path / "ro"
    with latentsearch.create(path, encoder=None, dim=8, index="Flat") as col:
        col.add(np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32))
        col.cluster(2)
        col.add(np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32))
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()}
    seq_before = latentsearch.open(path).store.max_seq()
    with latentsearch.open(path) as col:
        col.search(np.ones(8, np.float32), k=5, where={"cluster": 0})
        col.nearest_clusters(np.ones(8, np.float32))
        col.cluster_members(0)
        col.corpus_clusters()
        col.info()
        col.verify()
        assert col.store.max_seq() == seq_before
    after = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if not p.name.startswith("metadata.db-")}
    assert {k: v for k, v in before.items() if not k.startswith("metadata.db-")} == after
