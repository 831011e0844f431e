"""Crash safety and resumption: ``latentsearch index`` killed with SIGKILL at many moments.

After every kill the collection must open consistent (every committed item indexed once, nothing
in the index without its row); running the same command again finishes the job without
duplicates. A reader searching while a writer indexes sees only committed items.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import latentsearch

N = 20_000


def write_corpus(path: Path) -> Path:
    rng = random.Random(0)
    words = "ship sea salt star bread yeast whale song code sort hash vaccine sleep train plane".split()
    with open(path, "w") as fh:
        for i in range(N):
            text = " ".join(rng.choice(words) for _ in range(12)) + f" doc{i}"
            fh.write(json.dumps({"_id": f"r{i}", "text": text, "n": i}) + "\n")
    return path


def index_command(col: Path, corpus: Path, index: str, db: str | None = None) -> list[str]:
    return [sys.executable, "-m", "latentsearch.cli", "index", str(col), str(corpus),
            "--encoder", "hashing:32", "--index", index, "--batch-size", "32", "-q",
            *(["--db", db] if db else [])]


def assert_consistent(col_path: Path) -> int:
    with latentsearch.open(col_path) as col:
        report = col.verify()
        assert report["missing_from_index"] == []
        assert report["not_in_store"] == []
        assert report["indexed_twice"] == []
        if report["items"]:
            hit = col.search("ship sea salt", k=1)
            assert hit and hit[0].key.startswith("r")
        return report["items"]


@pytest.mark.slow
@pytest.mark.parametrize("index, database", [("Flat", "sqlite"), ("HNSW16", "sqlite"), ("Flat", "postgres")])
def test_sigkill_at_random_moments_then_resume(tmp_path, index, database, request):
    db = request.getfixturevalue("pg_url") if database == "postgres" else None
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    col = tmp_path / "col"
    rng = random.Random(1)
    counts = []
    try:
        _kill_and_resume(col, corpus, index, db, rng, counts)
    finally:
        if db and (col / "latentsearch.json").exists():
            schema = json.loads((col / "latentsearch.json").read_text())["store_schema"]
            from latentsearch.stores.sql import SqlStore

            SqlStore(db, 32, schema=schema).drop()


def _kill_and_resume(col, corpus, index, db, rng, counts):
    for _ in range(5):
        proc = subprocess.Popen(index_command(col, corpus, index, db), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.8, 2.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if (col / "latentsearch.json").exists():
            counts.append(assert_consistent(col))
    assert counts == sorted(counts), "a later run never loses what an earlier one committed"
    assert any(0 < c < N for c in counts), f"no kill landed mid-run: {counts}"
    done = subprocess.run(index_command(col, corpus, index, db), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert assert_consistent(col) == N
    with latentsearch.open(col) as c:
        assert len({i.key for i in c.get(list(range(1, 3 * N)))}) == N


def test_a_reader_sees_only_committed_items_while_a_writer_indexes(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    col = tmp_path / "col"
    subprocess.run(index_command(col, tmp_path / "nothing", "Flat"), capture_output=True)  # creates it
    writer = subprocess.Popen(index_command(col, corpus, "Flat"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = []
    try:
        with latentsearch.open(col) as reader:
            while writer.poll() is None and len(seen) < 50:
                hits = reader.search("ship sea salt", k=5)
                n = len(reader)
                # Every hit is a committed row with its metadata, never a half-written one.
                assert all(h.key and h.key.startswith("r") and "n" in h.metadata for h in hits)
                seen.append(n)
                time.sleep(0.05)
    finally:
        assert writer.wait(timeout=600) == 0
    assert seen == sorted(seen)
    assert assert_consistent(col) == N


def test_an_index_error_in_the_background_loses_nothing(tmp_path, monkeypatch):
    """The index is filled in a thread of its own; when it fails, the error reaches the caller,
    the committed rows stay, and the next use rebuilds the index from the store's change log."""
    import numpy as np

    from latentsearch.indexes.faiss_index import FaissIndex

    rng = np.random.default_rng(0)
    col = latentsearch.create(tmp_path / "col", encoder=None, dim=8, index="Flat")
    first = col.add(rng.standard_normal((50, 8), dtype=np.float32))
    col.flush()
    real_add, calls = FaissIndex.add, []

    def failing_add(self, ids, vectors):
        calls.append(len(ids))
        if len(calls) == 2:
            raise MemoryError("simulated: the index could not grow")
        return real_add(self, ids, vectors)

    monkeypatch.setattr(FaissIndex, "add", failing_add)
    monkeypatch.setattr("latentsearch.ingest.writer.VECTOR_CHUNK", 1024)
    x = rng.standard_normal((3000, 8), dtype=np.float32)
    with pytest.raises(MemoryError, match="simulated"):
        col.add(x)  # transactions of 1,024: the second one's index add fails
        col.search(x[0], k=1)  # or the error surfaces at the next read
    monkeypatch.setattr(FaissIndex, "add", real_add)
    stored = len(col)
    assert stored >= 50 + 2 * 1024  # committed chunks stay in the store
    check = col.verify()
    assert check["items"] == check["indexed"] == stored
    assert check["missing_from_index"] == check["not_in_store"] == check["indexed_twice"] == []
    hit = col.search(col.store.vectors([first[0]])[1][0], k=1)[0]
    assert hit.id == first[0]
    col.close()
    reopened = latentsearch.open(tmp_path / "col")
    assert reopened.verify()["indexed"] == stored
    reopened.close()
