"""``latentsearch serve`` as a real process on a free port: the client against it, SIGTERM
draining requests and closing cleanly, concurrent clients with a writer, and ``kill -9`` in the
middle of a stream of writes (the collection reopens consistent with every acknowledged write)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import latentsearch  # noqa: E402
from latentsearch.serve.errors import ServiceUnavailableError  # noqa: E402
import serving  # noqa: E402
from serving import Server, free_port  # noqa: E402

TOKEN = "t0ken-for-tests"


@contextmanager
def running(paths: list[Path], log: Path, *args: str, token: str | None = TOKEN) -> Iterator[Server]:
    """``latentsearch serve PATHS`` with ``token`` as its write token (LATENTSEARCH_TOKEN)."""
    with serving.running(paths, log, *args, env={"LATENTSEARCH_TOKEN": token} if token else None) as server:
        yield server


def make_collection(path: Path, n: int = 200) -> Path:
    words = "ship sea salt star bread yeast whale song code sort hash vaccine sleep train plane".split()
    texts = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(6)) + f" doc{i}" for i in range(n)]
    with latentsearch.create(path, encoder="hashing:64", index="Flat") as col:
        col.add(texts, metadata=[{"n": i, "even": i % 2 == 0} for i in range(n)], keys=[f"d{i}" for i in range(n)])
    return path


def assert_consistent(path: Path, keys_to_ids: dict[str, int]) -> None:
    """The collection opens with the index matching the store and every acknowledged write in it."""
    with latentsearch.open(path) as col:
        report = col.verify()
        assert report["missing_from_index"] == [] and report["not_in_store"] == [] and report["indexed_twice"] == []
        found = {i.key: i.id for i in col.get(list(keys_to_ids.values()))}
        assert found == keys_to_ids


class Writer(threading.Thread):
    """Upserts batches of texts through the client until told to stop or the server goes away;
    ``acked`` maps each key of an acknowledged batch to its id."""

    def __init__(self, url: str, batch: int = 10):
        super().__init__(daemon=True)
        self.remote = latentsearch.connect(url, token=TOKEN, timeout=30).collection("notes")
        self.batch, self.acked, self.errors = batch, {}, []  # type: ignore[var-annotated]
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            keys = [f"w{i}-{j}" for j in range(self.batch)]
            try:
                ids = self.remote.upsert([f"written text {k} ship sea" for k in keys], keys=keys)
            except ServiceUnavailableError:
                return  # the server is gone: the batch may or may not have committed
            except Exception as exc:
                self.errors.append(exc)
                return
            self.acked.update(zip(keys, ids))
            i += 1


@pytest.mark.slow
def test_client_against_a_served_process_then_sigterm(tmp_path: Path) -> None:
    path = make_collection(tmp_path / "notes")
    with running([path], tmp_path / "server.log") as server:
        remote = latentsearch.connect(server.url).collection("notes")
        with latentsearch.open(path) as col:
            for query in ["whale song", "bread yeast salt", 17]:
                assert remote.search(query, k=8) == col.search(query, k=8)
            assert remote.search("star", k=5, where={"even": True}) == col.search("star", k=5, where={"even": True})
        writer = Writer(server.url)
        writer.start()
        deadline = time.monotonic() + 60
        while len(writer.acked) < 30 and writer.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        server.proc.send_signal(signal.SIGTERM)  # while writes stream in
        assert server.proc.wait(60) == 0, server.output()
        writer.stop.set()
        writer.join(60)
        assert writer.errors == [] and len(writer.acked) >= 30
    out = server.output()
    assert f"serving at {server.url}" in out and "notes (200 items; encoder hashing:64 on cpu; index Flat)" in out
    assert "closed the collection notes" in out and "Traceback" not in out
    assert_consistent(path, writer.acked)


@pytest.mark.slow
def test_concurrent_clients_with_one_writer(tmp_path: Path) -> None:
    path = make_collection(tmp_path / "notes")
    errors: list[BaseException] = []
    with running([path], tmp_path / "server.log") as server:
        reader = latentsearch.connect(server.url).collection("notes")  # one httpx client, shared by threads

        def read(seed: int) -> None:
            try:
                for i in range(20):
                    hits = reader.search_batch([f"ship sea doc{seed}", "written text"], k=5, where={"n": {"$exists": False}} if i % 5 == 0 else None)
                    assert all(len(row) <= 5 for row in hits)
                    assert reader.get([h.id for h in hits[0]]) is not None
            except BaseException as exc:
                errors.append(exc)

        writer = Writer(server.url, batch=5)
        writer.start()
        readers = [threading.Thread(target=read, args=(s,)) for s in range(8)]
        for t in readers:
            t.start()
        for t in readers:
            t.join(120)
        writer.stop.set()
        writer.join(60)
        assert errors == [] and writer.errors == [] and writer.acked
        deleted = reader.client.request("DELETE", "/api/collections/notes/items", json={"keys": ["d0"]},
                                        headers={"Authorization": f"Bearer {TOKEN}"})
        assert deleted["deleted"] == 1
        assert ' status="5' not in httpx.get(server.url + "/metrics").text  # no 5xx answered
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0
    assert_consistent(path, writer.acked)


def test_kill_9_during_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = make_collection(tmp_path / "notes", n=50)
    with running([path], tmp_path / "server.log") as server:
        writer = Writer(server.url, batch=20)
        writer.start()
        deadline = time.monotonic() + 60
        while len(writer.acked) < 200 and writer.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        server.proc.kill()  # SIGKILL: no shutdown, no snapshot saved
        assert server.proc.wait(30) == -signal.SIGKILL
        writer.join(60)
        assert writer.errors == [] and len(writer.acked) >= 200
    assert_consistent(path, writer.acked)


def test_a_collection_that_cannot_open_stops_the_server(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "latentsearch.json").write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "latentsearch.cli", "serve", str(broken), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "cannot serve the collection 'broken'" in proc.stderr and "Traceback" not in proc.stderr


def test_command_line_refusals(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from latentsearch.cli import cli

    a = make_collection(tmp_path / "a" / "notes", n=2)
    b = make_collection(tmp_path / "b" / "notes", n=2)
    result = CliRunner().invoke(cli, ["serve", str(a), str(b)])
    assert result.exit_code == 1 and "two collections named 'notes'" in result.output
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "no collection at" in result.output
    result = CliRunner().invoke(cli, ["serve", str(a), "--token", "same", "--read-token", "same"])
    assert result.exit_code == 1 and "the same" in result.output
    assert "Example:" in CliRunner().invoke(cli, ["serve", "--help"]).output
