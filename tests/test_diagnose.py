"""explain_no_match (stores/diagnose.py): why a ``where`` filter matched no item, on SQLite and
on a real PostgreSQL. Each case is a filter that matches nothing and the message it gets (or
``None`` where the filter is fine and the data simply has no such value)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import numpy as np
import pytest

from latentsearch.stores import diagnose
from latentsearch.stores.diagnose import explain_no_match
from latentsearch.stores.sql import NewItem, SqlStore

DIM = 4

ROWS = [
    {"topic": "space", "year": 2020, "words": 120, "nested": {"a": {"b": 1}}, "tags": ["x"], "flag": True,
     "a.b": 1},
    {"topic": "sea", "year": 2021, "words": 80, "nested": {"a": {"c": "x"}}, "meta": {"k": 1}},
    {"topic": "art", "year": 2019, "mixed": 1},
    {"mixed": "one", "nulled": None},
]
TOP_FIELDS = "a.b, flag, meta, mixed, nested, nulled, tags, topic, words, year"


def make_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, rows: list[dict]) -> SqlStore:
    if request.param == "sqlite":
        url, schema = f"sqlite:///{tmp_path_factory.mktemp('diagnose') / 'store.db'}", None
    else:
        url, schema = request.getfixturevalue("pg_url"), f"ls_test_{secrets.token_hex(6)}"
    st = SqlStore(url, DIM, schema=schema)
    st.create({"dim": str(DIM)})
    if rows:
        st.write(inserts=[NewItem(np.ones(DIM, np.float32), modality="text", metadata=m) for m in rows])
    return st


def close(st: SqlStore) -> None:
    try:
        if st.schema:
            st.drop()
    finally:
        st.close()


DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module", params=DATABASES)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlStore]:
    st = make_store(request, tmp_path_factory, ROWS)
    yield st
    close(st)


@pytest.fixture(params=DATABASES)
def empty_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlStore]:
    st = make_store(request, tmp_path_factory, [])
    yield st
    close(st)


CASES: list[tuple[dict, str | None]] = [
    # a field that no item has: the fields that exist, and the closest one
    ({"yeer": 2020}, f"no item has the field 'yeer'; fields: {TOP_FIELDS}. Did you mean 'year'?"),
    ({"yeer": {"$gte": 2020}, "topic": "space"}, "no item has the field 'yeer'"),
    ({"yeer": {"$exists": True}}, "no item has the field 'yeer'"),
    ({"yeer": {"$ne": None}}, "no item has the field 'yeer'"),
    ({"$or": [{"yeer": 1}, {"topic": "zzz"}]}, "no item has the field 'yeer'"),
    ({"metadata.yeer": 1}, "no item has the field 'metadata.yeer'"),
    ({"$not": {"yeer": {"$exists": False}}}, "no item has the field 'yeer'"),
    # nested: the fields under the deepest parent that exists
    ({"nested.a.d": 1}, "no item has the field 'nested.a.d'; fields under 'nested.a': b, c"),
    ({"nested.x.y": 1}, "no item has the field 'nested.x.y'; fields under 'nested': a"),
    ({"nested.a.b.c": 1}, "no item has the field 'nested.a.b.c'; fields under 'nested.a': b, c"),
    ({"a.b": 1}, "The items have a key 'a.b' with a dot in its name, which a filter cannot reach"),
    # a value of another JSON type than the stored one
    ({"year": "2020"}, "'year' is stored as a number, the filter compares it with a string ('2020'); "
                       "write 2020 without quotes"),
    ({"year": {"$gte": "2020"}}, "'year' is stored as a number, the filter compares it with a string"),
    ({"year": {"$in": ["2020", "2021"]}}, "compares it with a string ('2020')"),
    ({"topic": 5}, "'topic' is stored as a string, the filter compares it with a number (5); write '5' in quotes"),
    ({"flag": "true"}, "'flag' is stored as a boolean, the filter compares it with a string ('true'); "
                       "write true without quotes"),
    ({"tags": "x"}, "'tags' is stored as an array, the filter compares it with a string ('x'); "
                    "filters compare single values, not the elements of an array"),
    ({"meta": 1}, "'meta' is stored as an object, the filter compares it with a number (1); filter its "
                  "fields with dotted keys such as 'meta.name'"),
    ({"mixed": True}, "'mixed' is stored as a number or a string, the filter compares it with a boolean (true)"),
    ({"nulled": "x"}, "'nulled' is stored as null, the filter compares it with a string ('x')"),
    ({"$not": {"year": {"$ne": "2020"}}}, "'year' is stored as a number"),
    ({"year": {"$in": []}}, "'year' is compared with an empty $in list, which matches no item"),
    # both problems at once
    ({"yeer": 1, "year": "2020"}, "no item has the field 'yeer'"),
    # nothing to explain: the fields exist with the compared types, no item has these values
    ({"topic": "nothing"}, None),
    ({"topic": "space", "year": 2021}, None),
    ({"year": {"$in": ["2020", 2018]}}, None),  # one of the types is stored
    ({"year": {"$in": ["2020", None]}, "topic": "zzz"}, None),  # null also matches a missing field
    ({"yeer": {"$exists": False}, "topic": "zzz"}, None),  # the missing field is what it asks for
    ({"yeer": {"$ne": 1}, "topic": "zzz"}, None),
    ({"$not": {"yeer": 1}, "topic": "zzz"}, None),
    ({"year": {"$not": {"$lt": "3000"}}, "topic": "zzz"}, None),  # negated: another type matches
    ({"source": "/nowhere", "key": "none"}, None),  # built-in fields need no check
    ({"nulled": None, "topic": "zzz"}, None),
]


@pytest.mark.parametrize(("where", "expected"), CASES, ids=[str(w)[:50] for w, _ in CASES])
def test_explain_no_match(store: SqlStore, where: dict, expected: str | None) -> None:
    assert store.count_where(where) == 0  # the cases are filters that matched nothing
    message = explain_no_match(store, where)
    if expected is None:
        assert message is None
    else:
        assert message is not None and expected in message, message


def test_two_problems_give_two_sentences(store: SqlStore) -> None:
    message = explain_no_match(store, {"yeer": 1, "year": "2020"})
    assert message is not None
    assert message.startswith("no item has the field 'yeer'")
    assert message.endswith("'year' is stored as a number, the filter compares it with a string ('2020'); "
                            "write 2020 without quotes")


def test_invalid_filters_give_their_error_instead_of_raising(store: SqlStore) -> None:
    assert explain_no_match(store, {"$and": []}) == "$and is an empty list; it takes a non-empty list of filters"
    assert "unknown operator '$gtt'" in (explain_no_match(store, {"year": {"$gtt": 1}}) or "")


def test_an_empty_collection_says_so(empty_store: SqlStore) -> None:
    assert explain_no_match(empty_store, {"year": 2020}) == "the collection has no items"
    assert explain_no_match(empty_store, None) == "the collection has no items"


def test_the_field_listing_is_a_bounded_sample(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnose, "SAMPLE_ROWS", 1)  # the first item only
    message = explain_no_match(store, {"yeer": 1})
    assert message == "no item has the field 'yeer'; fields: a.b, flag, nested, tags, topic, words, year. Did you mean 'year'?"
    monkeypatch.setattr(diagnose, "SAMPLE_ROWS", 10_000)
    monkeypatch.setattr(diagnose, "MAX_LISTED", 3)
    message = explain_no_match(store, {"yeer": 1})
    assert message == "no item has the field 'yeer'; fields: a.b, flag, meta, … (7 more). Did you mean 'year'?"
    monkeypatch.setattr(diagnose, "MAX_KEYS", 4)
    message = explain_no_match(store, {"yeer": 1})
    assert message is not None and re.search(r"fields: [\w.]+, [\w.]+, [\w.]+, … \(over 1 more\)", message), message


def test_keys_that_need_quoting_are_listed_as_stored(store: SqlStore) -> None:
    """Keys come back unescaped from json_each / jsonb_object_keys (a dot, here, stays a dot)."""
    message = explain_no_match(store, {"zzz": 1})
    assert message is not None and "a.b" in message and '"' not in message


def test_a_search_whose_filter_matches_nothing_says_why(hashing_collection, tmp_path):
    from click.testing import CliRunner

    from latentsearch.cli import cli

    col = hashing_collection("why")
    col.add(["a text", "another text"], metadata=[{"year": 2020, "topic": "x"}, {"year": 2021, "topic": "y"}])
    (hits,), stats = col.search_batch_with_stats(["a text"], k=2, where={"yeer": 2020})
    assert hits == [] and stats.matches == 0
    assert "no item has the field 'yeer'" in stats.explanation and "year" in stats.explanation
    (hits,), stats = col.search_batch_with_stats(["a text"], k=2, where={"year": "2020"}, mode="lexical")
    assert hits == [] and "stored as a number" in stats.explanation
    assert col.search_batch_with_stats(["a text"], k=2, where={"year": 2020})[1].explanation is None
    col.close()
    r = CliRunner().invoke(cli, ["search", str(col.path), "a text", "--where", '{"yeer": 2020}'])
    assert r.exit_code == 0 and "no item has the field 'yeer'" in r.output, r.output
