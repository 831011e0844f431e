"""Creating and opening without trusting what a folder says.

A first ``index`` killed right after its store appeared can be run again (the collection is
built in a hidden sibling folder and renamed into place; the next create removes what a killed
one left, on PostgreSQL its schema too). A manifest cannot turn on ``trust_remote_code``: only
the user can, by an argument or an environment variable, and the refusal comes before any model
code loads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

import latentsearch
from latentsearch.cli import cli
from latentsearch.encoders import TRUST_REMOTE_CODE_ENV, RemoteCodeRefusedError, runs_remote_code
from latentsearch.encoders.lazy import LazyEncoder
from latentsearch.errors import CollectionExistsError
from latentsearch.identity import STAGING, publish, stage
from latentsearch.stores.sql import SqlStore

REPO = Path(__file__).resolve().parents[1]

# Runs `latentsearch ARGS...` and dies (exit status 9, no cleanup of any kind) the moment the
# new collection's store has been created: what a kill -9 at that point leaves.
KILLED_AFTER_STORE = """
import os, sys
from latentsearch.stores import sql

made = sql.SqlStore.create

def create_and_die(self, info):
    made(self, info)
    print("SCHEMA", self.schema, flush=True)
    os._exit(9)

sql.SqlStore.create = create_and_die
from latentsearch.cli import cli
cli.main(sys.argv[1:], prog_name="latentsearch")
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


def schema_exists(url: str, schema: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text("SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"), {"s": schema})
            return found.first() is not None
    finally:
        engine.dispose()


def drop_schema(url: str, schema: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        engine.dispose()


# -- 15. an interrupted first index -------------------------------------------------------------


def test_a_first_index_killed_after_the_store_appeared_can_be_run_again(db, tmp_path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("tides follow the moon")
    (tmp_path / "docs" / "b.txt").write_text("bread rises with yeast")
    path = tmp_path / "col"
    args = ["index", str(path), str(tmp_path / "docs"), "--encoder", "hashing:64", "-q"]
    args += ["--db", db] if db else []
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_STORE, *args], cwd=REPO, capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    orphan = killed.stdout.split("SCHEMA", 1)[1].split()[0]
    assert not (path / "latentsearch.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".col{STAGING}")], "the killed create's folder"
    if db:
        assert schema_exists(db, orphan)
    try:
        again = CliRunner().invoke(cli, args)
        assert again.exit_code == 0, (again.output, again.exception)
        with latentsearch.open(path) as col:
            assert len(col) == 2 and col.search("moon tides", k=1)[0].text == "tides follow the moon"
            schema = col.config.store_schema
        assert not [p for p in tmp_path.iterdir() if STAGING in p.name]  # the leftover is gone
        if db:
            assert schema != orphan and not schema_exists(db, orphan)  # and so is its schema
    finally:
        if db:
            drop_schema(db, orphan)
            if (path / "latentsearch.json").exists():
                drop_schema(db, json.loads((path / "latentsearch.json").read_text())["store_schema"])


def test_a_folder_an_older_create_left_half_made_is_reused(tmp_path) -> None:
    """Before creates were atomic, a kill left metadata.db (no items) and no manifest."""
    path = tmp_path / "col"
    path.mkdir()
    SqlStore(f"sqlite:///{path / 'metadata.db'}", 64).create({"dim": "64"})
    with latentsearch.create(path, encoder="hashing:64", index="Flat") as col:
        col.add(["it works"])
    assert len(latentsearch.open(path)) == 1
    other = tmp_path / "kept"
    other.mkdir()
    store = SqlStore(f"sqlite:///{other / 'metadata.db'}", 4)
    store.create({"dim": "4"})
    store.insert_vectors(__import__("numpy").ones((1, 4), dtype="float32"))
    store.close()
    with pytest.raises(CollectionExistsError):  # a store with items is never removed
        latentsearch.create(other, encoder="hashing:64")
    assert (other / "metadata.db").exists()


def test_a_create_that_loses_the_race_removes_its_folder(tmp_path) -> None:
    path = tmp_path / "col"
    staged, lock = stage(path)
    try:
        path.mkdir()
        (path / "x").write_text("made meanwhile")
        with pytest.raises(CollectionExistsError, match="created by another process"):
            publish(staged, path)
    finally:
        lock.release(force=True)
    assert staged.exists()  # Collection.create discards it; a live lock keeps others off it
    stage(tmp_path / "col")[1].release(force=True)  # a later create removes unlocked leftovers
    assert not staged.exists()


# -- 17. remote code -----------------------------------------------------------------------------------


SPEC = "sentence-transformers:/models/sent-by-mail?trust_remote_code=true"


@pytest.fixture
def remote_code_collection(tmp_path, monkeypatch):
    """A collection whose manifest was edited to name a model that runs its own code; loading
    any encoder fails the test."""
    path = tmp_path / "col"
    with latentsearch.create(path, encoder="hashing:64", index="Flat") as col:
        col.add(["some text"])
    data = json.loads((path / "latentsearch.json").read_text())
    (path / "latentsearch.json").write_text(json.dumps({**data, "encoder": SPEC}))
    monkeypatch.delenv(TRUST_REMOTE_CODE_ENV, raising=False)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("latentsearch.encoders.ENCODERS.create", no_model)
    return path


def test_a_manifest_cannot_turn_on_remote_code(remote_code_collection) -> None:
    with pytest.raises(RemoteCodeRefusedError) as err:
        latentsearch.open(remote_code_collection)
    message = str(err.value)
    assert str(remote_code_collection) in message and TRUST_REMOTE_CODE_ENV in message
    assert "trust_remote_code=True" in message
    result = CliRunner().invoke(cli, ["search", str(remote_code_collection), "anything"])
    assert result.exit_code != 0 and TRUST_REMOTE_CODE_ENV in result.output
    assert "a model was loaded" not in result.output


def test_the_user_can_allow_remote_code(remote_code_collection, monkeypatch) -> None:
    from latentsearch.collection import Collection

    with Collection.open(remote_code_collection, trust_remote_code=True) as col:
        assert len(col) == 1  # opened; the model loads on first need
    monkeypatch.setenv(TRUST_REMOTE_CODE_ENV, "1")
    with latentsearch.open(remote_code_collection) as col:
        assert col.encoder_slot.trust_remote_code
    monkeypatch.setenv(TRUST_REMOTE_CODE_ENV, "0")
    with pytest.raises(RemoteCodeRefusedError):
        latentsearch.open(remote_code_collection)


def test_the_lazy_encoder_refuses_remote_code_it_was_not_allowed(monkeypatch) -> None:
    monkeypatch.delenv(TRUST_REMOTE_CODE_ENV, raising=False)
    with pytest.raises(RemoteCodeRefusedError):
        LazyEncoder(SPEC, "").get()
    with pytest.raises(RemoteCodeRefusedError):
        LazyEncoder(SPEC, "x").changed()


@pytest.mark.parametrize(
    ("spec", "runs"),
    [
        (SPEC, True),
        ("clip:/m?trust_remote_code=1", True),
        ("st:/m?trust_remote_code", True),
        ("st:/m?trust_remote_code=false", False),
        ("minilm", False),
        ("hashing:64", False),
        ("timm:resnet18?pretrained=false", False),
    ],
)
def test_which_specs_run_remote_code(spec: str, runs: bool) -> None:
    assert runs_remote_code(spec) is runs
