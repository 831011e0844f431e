"""Crash safety and resumption: ``latentsearch index`` killed with SIGKILL, then run again.

Kills land at deterministic points (``LATENTSEARCH_KILL_AFTER_COMMITS``: the process kills itself
right after its N-th committed write) and at random moments (after the run has visibly committed
something, so a slow machine does not kill before anything happened). After every kill the
collection must open consistent (every committed item indexed once, nothing in the index without
its row); running the same command again finishes the job without duplicates. A reader searching
while a writer indexes sees only committed items.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

import latentsearch
from latentsearch.testing_hooks import KILL_AFTER_COMMITS

N = 20_000
KILLED = -signal.SIGKILL
DATABASES = [("Flat", "sqlite"), ("HNSW16", "sqlite"), pytest.param("Flat", "postgres", marks=pytest.mark.postgres)]


def write_corpus(path: Path, n: int = N) -> Path:
    rng = random.Random(0)
    words = "ship sea salt star bread yeast whale song code sort hash vaccine sleep train plane".split()
    with open(path, "w") as fh:
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(12)) + f" doc{i}"
            fh.write(json.dumps({"_id": f"r{i}", "text": text, "n": i}) + "\n")
    return path


def index_command(col: Path, corpus: Path, index: str, db: str | None = None) -> list[str]:
    return [sys.executable, "-m", "latentsearch.cli", "index", str(col), str(corpus),
            "--encoder", "hashing:32", "--index", index, "--batch-size", "32", "-q",
            *(["--db", db] if db else [])]


def index_env(kill_after_commits: int | None = None) -> dict[str, str]:
    """This process's environment, with the kill hook set to ``kill_after_commits`` (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != KILL_AFTER_COMMITS}
    if kill_after_commits is not None:
        env[KILL_AFTER_COMMITS] = str(kill_after_commits)
    return env


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


def assert_complete(col_path: Path, n: int) -> None:
    """Consistent, with exactly the corpus's ``n`` records, each key once."""
    assert assert_consistent(col_path) == n
    with latentsearch.open(col_path) as col:
        keys = [item.key for item in col.get(col.store.ids().tolist())]
    assert len(keys) == n and set(keys) == {f"r{i}" for i in range(n)}


def committed_rows(col_path: Path) -> int:
    """Rows the collection's store has committed, read with plain SQL (0 before the store exists):
    cheap enough to poll while a writer runs, and it takes no lock a writer waits for."""
    manifest = col_path / "latentsearch.json"
    if not manifest.exists():
        return 0
    try:
        config = json.loads(manifest.read_text())
    except ValueError:  # being written
        return 0
    if config.get("store_url"):
        url, table = config["store_url"], f'"{config["store_schema"]}".items'
    else:
        db = col_path / "metadata.db"
        if not db.exists():
            return 0
        url, table = f"sqlite:///file:{db}?mode=ro&uri=true", "items"
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(text(f"SELECT count(*) FROM {table}")))
    except SQLAlchemyError:  # tables not created yet, or the database file is busy
        return 0
    finally:
        engine.dispose()


def wait_for_progress(col_path: Path, proc: subprocess.Popen, more_than: int, timeout: float = 300) -> bool:
    """Wait until the store has more than ``more_than`` rows (True) or ``proc`` has exited (False)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if committed_rows(col_path) > more_than:
            return True
        assert time.monotonic() < deadline, f"no row committed in {timeout} s"
        time.sleep(0.02)
    return False


@contextmanager
def dropped_after(col: Path, db: str | None) -> Iterator[None]:
    """Drop the collection's PostgreSQL schema (if any) when the block ends."""
    try:
        yield
    finally:
        drop_store(col, db)


def drop_store(col: Path, db: str | None) -> None:
    if db and (col / "latentsearch.json").exists():
        from latentsearch.stores.sql import SqlStore

        schema = json.loads((col / "latentsearch.json").read_text())["store_schema"]
        SqlStore(db, 32, schema=schema).drop()


@pytest.mark.parametrize("value, printed, exit_status",
                         [("2", "1", KILLED), (None, "1 2 3 4 5", 0), ("0", "", 1), ("x", "", 1)],
                         ids=["at-2", "unset", "zero", "not-a-number"])
def test_the_kill_hook_kills_at_the_nth_commit(value, printed, exit_status):
    """``after_commit`` SIGKILLs its process at the N-th call when the variable says N, does
    nothing when it is unset, and refuses a value that is not a positive integer."""
    code = ("from latentsearch import testing_hooks\n"
            "for i in range(5):\n    testing_hooks.after_commit()\n    print(i + 1, flush=True)\n")
    env = index_env()
    if value is not None:
        env[KILL_AFTER_COMMITS] = value
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == exit_status, done.stderr
    assert done.stdout.split() == printed.split()
    if exit_status == 1:
        assert f"{KILL_AFTER_COMMITS} must be a positive integer" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("index, database", DATABASES)
def test_sigkill_right_after_a_commit_then_resume(tmp_path, index, database, request):
    """Deterministic kills: right after the 1st commit of a run, after the 3rd of the next, and
    right after the very last commit (the store is complete, the run is not finished). Each
    committed chunk survives, nothing else appears, and a last run finishes the job."""
    n = 4_000
    db = request.getfixturevalue("pg_url") if database == "postgres" else None
    corpus = write_corpus(tmp_path / "corpus.jsonl", n)
    col = tmp_path / "col"

    def run(kill_after_commits: int | None) -> subprocess.CompletedProcess:
        return subprocess.run(index_command(col, corpus, index, db), env=index_env(kill_after_commits),
                              capture_output=True, text=True, timeout=600)

    with dropped_after(col, db):
        first = run(kill_after_commits=1)
        assert first.returncode == KILLED, (
            f"{KILL_AFTER_COMMITS}=1 did not kill the run (exit {first.returncode}): SqlStore must call "
            f"latentsearch.testing_hooks.after_commit() after each committed write\n{first.stderr[-2000:]}"
        )
        per_commit = assert_consistent(col)
        assert 0 < per_commit < n, "the first commit is one chunk of the corpus"
        commits = math.ceil(n / per_commit)
        assert commits >= 6, (per_commit, n)
        done = 1
        for kill_after in (3, commits - 4):  # the second kill lands right after the last commit
            killed = run(kill_after)
            assert killed.returncode == KILLED, (kill_after, killed.returncode, killed.stderr[-2000:])
            done += kill_after
            assert assert_consistent(col) == min(n, done * per_commit), f"killed after {kill_after} more commits"
        assert done == commits
        last = run(kill_after_commits=None)
        assert last.returncode == 0, last.stderr
        assert_complete(col, n)


@pytest.mark.slow
@pytest.mark.parametrize("index, database", DATABASES)
def test_sigkill_at_random_moments_then_resume(tmp_path, index, database, request):
    """Random kills, each after the run has committed something new: a kill may land after the
    run finished (fine), but at least one must land mid-run. When a run finishes before any kill
    did, the collection is started over with shorter delays, so a fast machine gets there too."""
    db = request.getfixturevalue("pg_url") if database == "postgres" else None
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    col = tmp_path / "col"
    rng = random.Random(1)
    spread, counts, mid_run, log = 1.5, [], 0, []
    with dropped_after(col, db):
        for _ in range(10):
            before = counts[-1] if counts else 0
            if mid_run >= 2 or (mid_run and before == N):
                break
            if before == N:  # finished before any kill landed mid-run: start over, killing sooner
                drop_store(col, db)
                shutil.rmtree(col)
                counts, spread = [], spread / 4
                before = 0
            proc = subprocess.Popen(index_command(col, corpus, index, db), env=index_env(),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                if wait_for_progress(col, proc, more_than=before):
                    time.sleep(rng.uniform(0, spread))
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                returncode = proc.wait(timeout=600)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                stderr = proc.stderr.read().decode(errors="replace")
                proc.stderr.close()
            assert returncode in (0, KILLED), stderr[-3000:]
            counts.append(assert_consistent(col))
            log.append((round(spread, 3), returncode, counts[-1]))
            assert counts[-1] > before, f"a run never loses what an earlier one committed: {log}"
            if returncode == KILLED and counts[-1] < N:
                mid_run += 1
        assert mid_run >= 1, f"no kill landed mid-run (spread, exit, items): {log}"
        done = subprocess.run(index_command(col, corpus, index, db), env=index_env(),
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert_complete(col, N)


@pytest.mark.slow
def test_a_reader_sees_only_committed_items_while_a_writer_indexes(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    col = tmp_path / "col"
    latentsearch.create(col, encoder="hashing:32", index="Flat").close()  # what the writer's command would make
    seen = []
    with latentsearch.open(col) as reader:  # open before the writer starts: reads begin with its first commit
        writer = subprocess.Popen(index_command(col, corpus, "Flat"), env=index_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_progress(col, writer, more_than=0)
            while writer.poll() is None and len(seen) < 50:
                hits = reader.search("ship sea salt", k=5)
                n = len(reader)
                # Every hit is a committed row with its metadata, never a half-written one.
                assert all(h.key and h.key.startswith("r") and "n" in h.metadata for h in hits)
                seen.append(n)
                time.sleep(0.05)
        finally:
            _, stderr = writer.communicate(timeout=600)
        assert writer.returncode == 0, stderr.decode(errors="replace")[-3000:]
    assert seen == sorted(seen)
    assert any(0 < n < N for n in seen), f"the reader never saw the writer mid-run: {seen}"
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
