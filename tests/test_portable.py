"""Portable collections: ``latentsearch export`` to Parquet, JSONL and .npy, and ``import`` into
a new collection on SQLite and PostgreSQL: the same items (every column), vectors bit for bit, the
same ids unless --new-ids, the same search results, files still known to incremental indexing; a
killed import or export leaves nothing; bad files and untrusted encoder specs are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import latentsearch
from latentsearch import portable
from latentsearch.cli import cli
from latentsearch.errors import InvalidInputError
from latentsearch.stores.transfer import iter_rows
from helpers import assert_one_line_error, write_small_corpus

pytest.importorskip("pyarrow")
ENC = "hashing:64"


def run(*args: object) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def everything(path: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    with latentsearch.open(path) as col:
        rows, vectors = [], []
        for r, v in iter_rows(col.store):
            rows += r
            vectors.append(v)
    return rows, np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)


def ranked(hits: list[Any]) -> list[Any]:
    """Hits in score order with ties by id (an index built in another order breaks ties otherwise)."""
    return sorted(hits, key=lambda h: (-round(h.score, 5), h.id))


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    """Files indexed (file states, passages), then records with metadata, an update and a delete
    (so the ids have a gap)."""
    corpus = write_small_corpus(tmp_path / "corpus")
    assert run("index", tmp_path / "notes", corpus, "--encoder", ENC, "-q").exit_code == 0
    with latentsearch.open(tmp_path / "notes") as col:
        ids = col.add(["alpha beta", "gamma délta ✓", "épsilon"], metadata=[{"n": 1, "tags": ["a", "b"]}, {"x": {"y": 2.5}}, {}],
                      keys=["r1", "r2", "r3"])
        col.upsert(["alpha beta gamma"], keys=["r1"], metadata=[{"n": 10}])
        col.delete(ids=[ids[2]])
    return tmp_path / "notes"


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_round_trip_keeps_everything(notes: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"notes.{suffix}"
    r = run("export", notes, out, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["items"] == len(everything(notes)[0])
    r = run("import", tmp_path / "copy", out)
    assert r.exit_code == 0, r.output
    before, after = everything(notes), everything(tmp_path / "copy")
    assert after[0] == before[0]  # every column, ids and times included
    assert after[1].tobytes() == before[1].tobytes()  # bit for bit
    with latentsearch.open(notes) as a, latentsearch.open(tmp_path / "copy") as b:
        assert b.config.encoder == a.config.encoder and b.config.encoder_fingerprint == a.config.encoder_fingerprint
        assert b.config.collection_id != a.config.collection_id
        for q in ("alpha", "ships", "gamma"):
            assert ranked(b.search(q, k=5)) == ranked(a.search(q, k=5))
        assert b.verify()["indexed"] == len(b)
    # the files are known: indexing the same folder again changes nothing
    r = run("index", tmp_path / "copy", tmp_path / "corpus", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["added"] == 0 and json.loads(r.stdout)["updated"] == 0, r.output


def test_new_ids_and_the_vectors_file(notes: Path, tmp_path: Path) -> None:
    assert run("export", notes, tmp_path / "n.jsonl").exit_code == 0
    assert run("import", tmp_path / "renumbered", tmp_path / "n.jsonl", "--new-ids").exit_code == 0
    before, after = everything(notes), everything(tmp_path / "renumbered")
    assert [r["id"] for r in after[0]] == list(range(1, len(before[0]) + 1))
    assert [r["key"] for r in after[0]] == [r["key"] for r in before[0]]
    assert run("export", notes, tmp_path / "v.npy").exit_code == 0
    assert np.load(tmp_path / "v.npy").tobytes() == before[1].tobytes()
    assert_one_line_error(run("import", tmp_path / "x", tmp_path / "v.npy"), "vectors only")


def test_float16_vectors_come_back_bit_for_bit(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    with latentsearch.create(tmp_path / "h", encoder=None, dim=8, metric="l2", vector_dtype="float16") as col:
        col.add(x)
    assert run("export", tmp_path / "h", tmp_path / "h.parquet").exit_code == 0
    assert run("import", tmp_path / "h2", tmp_path / "h.parquet").exit_code == 0
    assert everything(tmp_path / "h2")[1].tobytes() == everything(tmp_path / "h")[1].tobytes()
    with latentsearch.open(tmp_path / "h2") as col:
        assert col.config.vector_dtype == "float16" and col.search(x[5], k=1)[0].id == 6


@pytest.mark.postgres
def test_import_into_postgresql(notes: Path, tmp_path: Path, pg_url: str) -> None:
    assert run("export", notes, tmp_path / "n.parquet").exit_code == 0
    r = run("import", tmp_path / "pg", tmp_path / "n.parquet", "--db", pg_url)
    try:
        assert r.exit_code == 0, r.output
        before, after = everything(notes), everything(tmp_path / "pg")
        assert after[0] == before[0] and after[1].tobytes() == before[1].tobytes()
        with latentsearch.open(tmp_path / "pg") as col:
            assert col.store.engine.dialect.name == "postgresql"
            with latentsearch.open(notes) as a:
                assert ranked(col.search("alpha", k=3)) == ranked(a.search("alpha", k=3))
    finally:
        with latentsearch.open(tmp_path / "pg") as col:
            col.store.drop()


def test_a_killed_import_leaves_nothing(notes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("export", notes, tmp_path / "n.jsonl").exit_code == 0
    monkeypatch.setattr(portable, "BATCH", 2)
    calls = []

    def dies(store: Any, rows: Any, vectors: Any) -> int:
        calls.append(len(rows))
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a Ctrl-C half-way
        return real(store, rows, vectors)

    real = portable.insert_rows
    monkeypatch.setattr(portable, "insert_rows", dies)
    with pytest.raises(KeyboardInterrupt):
        portable.import_collection(tmp_path / "n.jsonl", tmp_path / "copy")
    assert not (tmp_path / "copy").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".copy")]
    monkeypatch.setattr(portable, "insert_rows", real)
    assert portable.import_collection(tmp_path / "n.jsonl", tmp_path / "copy") == len(everything(notes)[0])


def test_a_failed_export_leaves_no_file(notes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        yield from ()
        raise OSError("disk full")

    monkeypatch.setattr(portable, "_batches", broken)
    with latentsearch.open(notes) as col, pytest.raises(OSError):
        portable.export(col, tmp_path / "n.parquet")
    assert list(tmp_path.glob("*n.parquet*")) == []


def test_bad_inputs_are_named(notes: Path, tmp_path: Path) -> None:
    assert_one_line_error(run("export", notes, tmp_path / "n.csv"), ".parquet, .jsonl or .npy")
    (tmp_path / "plain.jsonl").write_text('{"id": 1}\n')
    assert_one_line_error(run("import", tmp_path / "a", tmp_path / "plain.jsonl"), "not a latentsearch export")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    assert_one_line_error(run("import", tmp_path / "a", tmp_path / "junk.parquet"), "cannot read")
    assert_one_line_error(run("import", tmp_path / "a", tmp_path / "missing.jsonl"), "no export at")
    assert run("export", notes, tmp_path / "n.jsonl").exit_code == 0
    assert_one_line_error(run("import", notes, tmp_path / "n.jsonl"), "already exists")
    lines = (tmp_path / "n.jsonl").read_text().splitlines()
    broken = json.loads(lines[1])
    broken["vector"] = broken["vector"][:3]
    (tmp_path / "short.jsonl").write_text("\n".join([lines[0], json.dumps(broken)]) + "\n")
    assert_one_line_error(run("import", tmp_path / "b", tmp_path / "short.jsonl"), "64 values")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_encoder_that_runs_code_needs_the_users_consent(notes: Path, tmp_path: Path) -> None:
    assert run("export", notes, tmp_path / "n.jsonl").exit_code == 0
    lines = (tmp_path / "n.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    header["latentsearch"]["manifest"]["encoder"] = "torch:evil.module:build"
    (tmp_path / "evil.jsonl").write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    r = run("import", tmp_path / "e", tmp_path / "evil.jsonl")
    assert r.exit_code != 0 and "runs the Python code" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "e").exists()
    with pytest.raises(InvalidInputError):
        portable.read_header(tmp_path / "n.npy")
