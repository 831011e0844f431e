"""Fuzzing, bounded to seconds: random metadata goes through the door (``json_safe``) into a
SQLite and a PostgreSQL store, and comes back the same from both; random filters over it match
the same items on both; random record files with bad lines lose exactly their bad lines."""

from __future__ import annotations

import json
import secrets
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentsearch.errors import InvalidInputError
from latentsearch.ingest import lines as lines_module
from latentsearch.ingest.records import json_safe
from latentsearch.ingest.sources import records_from_paths
from latentsearch.stores.sql import NewItem, SqlStore
from latentsearch.types import Skipped

DIM = 4
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = ["a", "b", "ü", "x y", "日本"]
EDGES = [2**53, 2**53 + 1, 2**53 - 1, 9007199254740992.0, 2**63 - 1, -(2**63), 0, -0.0, 0.1, 1e16, 1e300,
         5e-324, 1.7976931348623157e308, 1.2345678901234568e18, 10**20, 2**64]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),  # NaN and the infinities included: the door refuses them
    st.sampled_from(EDGES),
    st.text(max_size=6),
    st.sampled_from(["\ud800", "a\x00b", "Zürich", "", "\U0001f600"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3), max_leaves=8)
metadata = st.dictionaries(st.sampled_from(KEYS), values, max_size=4)
operands = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), st.sampled_from(EDGES), st.text(max_size=3))
filters = st.builds(
    lambda key, op, operand, listed: {key: {op: listed if op in ("$in", "$nin") else operand}},
    st.sampled_from(KEYS + ["a.b", "b.ü"]),
    st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"]),
    operands,
    st.lists(operands, max_size=3),
)


@pytest.fixture(scope="module")
def stores(pg_url, tmp_path_factory):
    """An empty SQLite store and an empty PostgreSQL store (its own schema)."""
    made = [
        SqlStore(f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'store.db'}", DIM),
        SqlStore(pg_url, DIM, schema=f"ls_test_{secrets.token_hex(6)}"),
    ]
    for store in made:
        store.create({"dim": str(DIM)})
    yield made
    made[1].drop()
    for store in made:
        store.close()


def canonical(value) -> str:
    """JSON text that tells 1 from 1.0 and ignores key order (jsonb sorts keys its own way)."""
    return json.dumps(value, sort_keys=True)


def matches(store: SqlStore, ids: list[int], where: dict) -> set[int] | str:
    """Positions of the items matching ``where``, or the error that refused it."""
    try:
        found = {int(i) for batch, _ in store.iter_where(where) for i in batch}
    except InvalidInputError as exc:
        return f"refused: {exc}"
    return {ids.index(i) for i in found}


@pytest.mark.postgres
@FUZZ
@given(metas=st.lists(metadata, max_size=6), wheres=st.lists(filters, min_size=1, max_size=6))
def test_metadata_round_trips_and_filters_agree_on_sqlite_and_postgresql(stores, metas, wheres):
    accepted = []
    for meta in metas:
        try:
            accepted.append(json_safe(meta))
        except InvalidInputError as exc:
            assert "\n" not in str(exc)
    written = [store.write([NewItem(np.ones(DIM, np.float32), "vector", metadata=m) for m in accepted]) for store in stores]
    try:
        got = [store.get(ids) for store, ids in zip(stores, written)]
        for position, meta in enumerate(accepted):
            back = [canonical(g[ids[position]].metadata) for g, ids in zip(got, written)]
            assert back == [canonical(meta)] * 2, (meta, back)
            assert json_safe(meta) == meta  # the door's form is a fixed point
        for where in wheres:
            sqlite, postgres = (matches(store, ids, where) for store, ids in zip(stores, written))
            assert sqlite == postgres, (where, accepted)
    finally:
        for store, ids in zip(stores, written):
            store.write(deletes=ids)


# -- record files with random bad lines ---------------------------------------------------------

JSONL_LINES = {
    "good": None,
    "blank": b"   ",
    "not utf-8": b'{"text": "caf\xe9"}',
    "not json": b'{"text": ',
    "not an object": b"[1, 2]",
    "nan": b'{"text": "t", "m": NaN}',
    "deep": b'{"text": "t", "m": ' + b"[" * 80 + b"]" * 80 + b"}",
    "too deep for json": b'{"text": "t", "m": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "surrogate": b'{"text": "\\ud800"}',
    "nul": b'{"text": "t", "m": "\\u0000"}',
    "no text": b'{"other": 1}',
    "too long": b'{"text": "' + b"x" * 400 + b'"}',
}
CSV_LINES = {"good": None, "blank": b"", "not utf-8": b"caf\xe9,x", "too long": b"y" * 400 + b",z", "nul": b"a\x00b,x"}


@FUZZ
@given(kinds=st.lists(st.sampled_from(sorted(JSONL_LINES)), max_size=25))
def test_a_jsonl_file_loses_exactly_its_bad_lines(kinds, monkeypatch):
    monkeypatch.setattr(lines_module, "MAX_RECORD_BYTES", 300)
    kinds = ["good", *kinds]  # (an empty file is skipped whole)
    rows = [json.dumps({"id": f"g{i}", "text": f"good {i}"}).encode() if k == "good" else JSONL_LINES[k] for i, k in enumerate(kinds)]
    with tempfile.TemporaryDirectory() as folder:
        f = Path(folder) / "r.jsonl"
        f.write_bytes(b"\n".join(rows))
        found = list(records_from_paths([f]))
    good = {f"g{i}" for i, k in enumerate(kinds) if k == "good"}
    bad = {str(i + 1) for i, k in enumerate(kinds) if k not in ("good", "blank")}
    assert {r.key for r in found if not isinstance(r, Skipped)} == good
    skipped = [s for s in found if isinstance(s, Skipped)]
    assert {s.source.rsplit(":", 1)[1] for s in skipped} == bad and len(skipped) == len(bad)
    assert all(s.reason and "\n" not in s.reason for s in skipped)


@FUZZ
@given(kinds=st.lists(st.sampled_from(sorted(CSV_LINES)), max_size=25), crlf=st.booleans())
def test_a_csv_file_loses_exactly_its_bad_rows(kinds, crlf, monkeypatch):
    monkeypatch.setattr(lines_module, "MAX_RECORD_BYTES", 300)
    rows = [b"text,n"] + [f"good {i},{i}".encode() if k == "good" else CSV_LINES[k] for i, k in enumerate(kinds)]
    with tempfile.TemporaryDirectory() as folder:
        f = Path(folder) / "r.csv"
        f.write_bytes((b"\r\n" if crlf else b"\n").join(rows))
        found = list(records_from_paths([f]))
    skipped = [s for s in found if isinstance(s, Skipped)]
    bad = {str(i + 2) for i, k in enumerate(kinds) if k not in ("good", "blank")}  # the header is line 1
    assert {s.source.rsplit(":", 1)[1] for s in skipped} == bad and len(skipped) == len(bad)
    assert {r.text for r in found if not isinstance(r, Skipped)} == {f"good {i}" for i, k in enumerate(kinds) if k == "good"}
