"""``where`` filters (stores/filters.py) on SQLite and on a real PostgreSQL: every operator, nested
keys, JSON types, built-in fields, injection attempts, and the messages of invalid filters.

One store per database, written once for the module; each case checks which rows match.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from latentsearch.errors import InvalidInputError
from latentsearch.stores.filters import check_where, compile_where
from latentsearch.stores.sql import NewItem, SqlStore

DIM = 4

# Row name -> (metadata, built-in fields). Names are the keys; r4 has no key.
ROWS: dict[str, tuple[dict, dict]] = {
    "r0": (
        {"topic": "space", "year": 2020, "score": 0.5, "flag": True, "lang": "en",
         "nested": {"a": {"b": 1}}, "tags": ["x"], "big": 2**60 + 1},
        {"source": "/data/a.txt", "modality": "text", "document": "doc-a"},
    ),
    "r1": (
        {"topic": "space", "year": 2021.0, "score": 1, "flag": False, "nested": {"a": {"b": "1"}}},
        {"source": "/data/b.txt", "modality": "text", "document": "doc-a"},
    ),
    "r2": (
        {"topic": "Sea", "year": "2022", "score": None, "lang": "de"},
        {"source": "/img/c.png", "modality": "image"},
    ),
    "r3": (
        {"topic": "art", "year": 2019, "flag": "true", "nested": {"a": 5}, "score": -0.25},
        {"source": None, "modality": "vector"},
    ),
    "r4": ({}, {"source": "/data/e.txt", "modality": "text"}),
    "r5": (
        {"topic": None, "year": 2023, "x') OR 1=1 --": "weird", "semi;colon": 1, "quote'key": 2,
         "a,b": 3, "null": 4, "sp ace": 5, "{c}": 6, "$.d": 7, "ü": 8, "city": "Zürich"},
        {"source": "/data/f.txt", "modality": "text"},
    ),
}
ALL = set(ROWS)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlStore]:
    """The rows above in a store, once per database (the ``store_url`` pattern, module-wide)."""
    if request.param == "sqlite":
        url, schema = f"sqlite:///{tmp_path_factory.mktemp('filters') / 'store.db'}", None
    else:
        url, schema = request.getfixturevalue("pg_url"), f"ls_test_{secrets.token_hex(6)}"
    st = SqlStore(url, DIM, schema=schema)
    st.create({"dim": str(DIM)})
    items = [
        NewItem(np.ones(DIM, np.float32), key=None if name == "r4" else name, metadata=meta, **fields)
        for name, (meta, fields) in ROWS.items()
    ]
    st.names = dict(zip(st.write(inserts=items), ROWS))  # type: ignore[attr-defined]
    st.ids = {name: i for i, name in st.names.items()}  # type: ignore[attr-defined]
    st.written = datetime.now(timezone.utc)  # type: ignore[attr-defined]
    try:
        yield st
    finally:
        if schema:
            st.drop()
        st.close()


def matching(store: SqlStore, where: dict) -> set[str]:
    names = {store.names[int(i)] for ids, _ in store.iter_where(where) for i in ids}  # type: ignore[attr-defined]
    assert store.count_where(where) == len(names)
    return names


CASES = [
    # equality and JSON types
    ({"topic": "space"}, {"r0", "r1"}),
    ({"topic": {"$eq": "space"}}, {"r0", "r1"}),
    ({"year": 2021}, {"r1"}),  # an int matches the float 2021.0
    ({"year": 2020.0}, {"r0"}),
    ({"year": "2022"}, {"r2"}),  # a string matches only the string
    ({"year": 2022}, set()),
    ({"flag": True}, {"r0"}),
    ({"flag": False}, {"r1"}),
    ({"flag": "true"}, {"r3"}),
    ({"flag": 1}, set()),  # 1 is not true
    ({"score": 1}, {"r1"}),
    ({"score": True}, set()),
    ({"big": 2**60 + 1}, {"r0"}),  # integers compare exactly, beyond a double's 53 bits
    ({"big": 2**60}, set()),
    ({"score": {"$lt": 0}}, {"r3"}),
    ({"topic": None}, {"r4", "r5"}),  # JSON null or missing
    ({"score": None}, {"r2", "r4", "r5"}),
    # $ne / $nin / $not match what the positive form does not, missing keys included
    ({"topic": {"$ne": "space"}}, {"r2", "r3", "r4", "r5"}),
    ({"topic": {"$ne": None}}, {"r0", "r1", "r2", "r3"}),
    ({"year": {"$ne": 2021}}, ALL - {"r1"}),
    # ordering: numbers numerically, strings by code point, other types never
    ({"year": {"$gt": 2020}}, {"r1", "r5"}),
    ({"year": {"$gte": 2020}}, {"r0", "r1", "r5"}),
    ({"year": {"$lt": 2020}}, {"r3"}),
    ({"year": {"$lte": 2020.0}}, {"r0", "r3"}),
    ({"year": {"$gte": 2020, "$lt": 2023}}, {"r0", "r1"}),
    ({"score": {"$gt": 0.4, "$lte": 0.5}}, {"r0"}),
    ({"topic": {"$gte": "a"}}, {"r0", "r1", "r3"}),  # "Sea" < "a": upper case sorts first
    ({"topic": {"$lt": "a"}}, {"r2"}),
    ({"year": {"$gt": "2021"}}, {"r2"}),
    # $in / $nin
    ({"topic": {"$in": ["art", "Sea"]}}, {"r2", "r3"}),
    ({"year": {"$in": [2019, "2022", 2021.0]}}, {"r1", "r2", "r3"}),
    ({"flag": {"$in": [True, "true"]}}, {"r0", "r3"}),
    ({"lang": {"$in": ["de", None]}}, {"r1", "r2", "r3", "r4", "r5"}),
    ({"topic": {"$in": []}}, set()),
    ({"topic": {"$nin": ["space"]}}, {"r2", "r3", "r4", "r5"}),
    ({"topic": {"$nin": []}}, ALL),
    # $exists (a JSON null exists)
    ({"lang": {"$exists": True}}, {"r0", "r2"}),
    ({"lang": {"$exists": False}}, {"r1", "r3", "r4", "r5"}),
    ({"topic": {"$exists": True}}, {"r0", "r1", "r2", "r3", "r5"}),
    # logic
    ({"year": {"$not": {"$gte": 2020}}}, {"r2", "r3", "r4"}),
    ({"$not": {"topic": "space"}}, {"r2", "r3", "r4", "r5"}),
    ({"$and": [{"topic": "space"}, {"flag": False}]}, {"r1"}),
    ({"$or": [{"topic": "art"}, {"lang": "de"}]}, {"r2", "r3"}),
    ({"topic": "space", "year": {"$lt": 2021}}, {"r0"}),
    ({"$or": [{"$and": [{"topic": "space"}, {"$not": {"flag": True}}]}, {"year": 2023}]}, {"r1", "r5"}),
    ({}, ALL),
    # nested keys
    ({"nested.a.b": 1}, {"r0"}),
    ({"nested.a.b": "1"}, {"r1"}),
    ({"nested.a": 5}, {"r3"}),
    ({"nested.a.b": {"$exists": True}}, {"r0", "r1"}),
    ({"nested.a.b.c": {"$exists": True}}, set()),
    ({"nested.a": {"$exists": True}}, {"r0", "r1", "r3"}),
    ({"tags.0": "x"}, set()),  # path parts are object keys, never array positions
    ({"tags": "x"}, set()),  # no array containment: a list is not equal to a string
    ({"metadata.topic": "art"}, {"r3"}),
    # keys that look like SQL or JSON-path syntax are just keys
    ({"x') OR 1=1 --": "weird"}, {"r5"}),
    ({"semi;colon": 1}, {"r5"}),
    ({"quote'key": 2}, {"r5"}),
    ({"a,b": 3}, {"r5"}),
    ({"null": 4}, {"r5"}),
    ({"sp ace": 5}, {"r5"}),
    ({"{c}": 6}, {"r5"}),
    ({"metadata.$.d": 7}, set()),  # the key "$" then "d"; r5's key "$.d" is one key
    ({"x'); DROP TABLE items; --": 1}, set()),
    ({"1=1 OR topic": {"$exists": True}}, set()),
    # values that look like SQL are just values
    ({"topic": "x') OR 1=1 --"}, set()),
    ({"topic": "space' OR '1'='1"}, set()),
    ({"topic": {"$in": ["art'); DELETE FROM items; --", "' OR 1=1"]}}, set()),
    ({"topic": {"$gt": "' OR ''='"}}, {"r0", "r1", "r2", "r3"}),  # a plain string comparison
    ({"source": "/data/a.txt' OR 'a'='a"}, set()),
    # built-in fields
    ({"key": "r1"}, {"r1"}),
    ({"key": None}, {"r4"}),
    ({"key": {"$in": ["r0", "r2", "nope"]}}, {"r0", "r2"}),
    ({"key": {"$gte": "r3"}}, {"r3", "r5"}),
    ({"source": {"$exists": False}}, {"r3"}),
    ({"source": {"$gt": "/data/"}, "modality": "text"}, {"r0", "r1", "r4", "r5"}),
    ({"modality": {"$ne": "text"}}, {"r2", "r3"}),
    ({"modality": {"$nin": ["text", "image"]}}, {"r3"}),
    ({"document": "doc-a"}, {"r0", "r1"}),
    ({"document": "r2"}, {"r2"}),  # the document defaults to the key
    ({"added_at": {"$gte": "2000-01-01"}}, ALL),
    ({"added_at": {"$lt": "2000-01-01T00:00:00Z"}}, set()),
]


@pytest.mark.parametrize(("where", "expected"), CASES, ids=[str(w)[:60] for w, _ in CASES])
def test_filter_matches(store: SqlStore, where: dict, expected: set[str]) -> None:
    assert matching(store, where) == expected


def test_ids_and_timestamps(store: SqlStore) -> None:
    ids = store.ids  # type: ignore[attr-defined]
    assert matching(store, {"id": ids["r2"]}) == {"r2"}
    assert matching(store, {"id": {"$in": [ids["r0"], ids["r5"], 10**9]}}) == {"r0", "r5"}
    assert matching(store, {"id": {"$gt": ids["r3"]}}) == {"r4", "r5"}
    assert matching(store, {"id": {"$not": {"$lte": ids["r4"]}}}) == {"r5"}
    written: datetime = store.written  # type: ignore[attr-defined]
    later, earlier = written + timedelta(minutes=5), written - timedelta(minutes=5)
    assert matching(store, {"added_at": {"$lte": later.isoformat()}}) == ALL
    assert matching(store, {"added_at": {"$gt": later}}) == set()
    # The same instant written in another zone, and as a naive (UTC) string.
    east = earlier.astimezone(timezone(timedelta(hours=5)))
    assert matching(store, {"added_at": {"$gte": east.isoformat()}}) == ALL
    assert matching(store, {"added_at": {"$gte": later.replace(tzinfo=None).isoformat()}}) == set()


def test_unicode(store: SqlStore) -> None:
    assert matching(store, {"city": "Zürich"}) == {"r5"}
    assert matching(store, {"city": {"$gt": "Zz"}}) == {"r5"}  # "ü" sorts after ASCII
    assert matching(store, {"ü": 8}) == {"r5"}  # on an older SQLite too: the key is looked up escaped
    assert matching(store, {"ü": {"$exists": True}}) == {"r5"}
    assert matching(store, {"ü": {"$gt": 7}, "city": {"$in": ["Zürich"]}}) == {"r5"}


def test_injection_leaves_the_table_alone(store: SqlStore) -> None:
    for where in ({"x'); DROP TABLE items; --": 1}, {"topic": "'; DROP TABLE items; --"}):
        assert matching(store, where) == set()
    assert store.count() == len(ROWS)


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ({"year": {"$gtt": 5}}, ["unknown operator '$gtt'", "year", "$eq", "$nin", "Did you mean '$gt'"]),
        ({"$andd": [{"a": 1}]}, ["unknown logical operator '$andd'", "$and, $or, $not", "'$and'"]),
        ({"$or": [{"a": 1}, {"b": {"$regex": "x"}}]}, ["'$regex'", "$or[1].b"]),
        ({"$.d": 7}, ["unknown logical operator '$.d'", "or a field name", "metadata."]),
        ({"topic": {"$in": "space"}}, ["topic.$in", "list of values"]),
        ({"topic": {"$nin": 3}}, ["topic.$nin", "list of values"]),
        ({"$and": {"a": 1}}, ["$and", "non-empty list"]),
        ({"$or": []}, ["$or is an empty list", "non-empty list"]),
        ({"$and": []}, ["$and is an empty list", "non-empty list"]),
        ({"$or": [{"a": 1}, {"$and": ()}]}, ["$or[1].$and is an empty list"]),
        ({"$not": {}}, ["$not is empty", "matches none"]),
        ({"$not": 5}, ["$not", "must be a dict"]),
        ({"$and": [{"a": 1}, 7]}, ["$and[1]", "must be a dict"]),
        ({"topic": {"nested": 1}}, ["topic", "'nested' is not an operator", "topic.nested"]),
        ({"topic": {"$eq": 1, "x": 2}}, ["'x' is not an operator"]),
        ({"topic": {}}, ["topic", "empty condition"]),
        ({"topic": ["a", "b"]}, ["topic", "a list", "$in"]),
        ({"topic": {"$eq": {"a": 1}}}, ["topic.$eq", "a dict"]),
        ({"year": {"$gt": True}}, ["year.$gt", "the boolean true", "number or a string"]),
        ({"year": {"$lt": None}}, ["year.$lt", "null"]),
        ({"year": float("nan")}, ["year", "finite"]),
        ({"year": {"$in": [1, float("inf")]}}, ["year.$in[1]", "finite"]),
        ({"big": 2**70}, ["64-bit"]),
        ({"lang": {"$exists": "yes"}}, ["lang.$exists", "true or false"]),
        ({"year": {"$not": 5}}, ["year.$not", "condition"]),
        ({"id": "5"}, ["id", "integer"]),
        ({"id": True}, ["id", "integer"]),
        ({"modality": 3}, ["modality", "string"]),
        ({"modality": None}, ["modality", "never null"]),
        ({"added_at": {"$gt": "yesterday"}}, ["added_at.$gt", "'yesterday'", "ISO 8601"]),
        ({"added_at": 5}, ["added_at", "ISO 8601"]),
        ({"a..b": 1}, ["'a..b'", "empty part"]),
        ({"": 1}, ["empty part"]),
        ({".a": 1}, ["empty part"]),
        ({'say "hi"': 1}, ["double quote"]),
        ({"back\\slash": 1}, ["backslash"]),
        ({"new\nline": 1}, ["control character"]),
        ({1: 2}, ["keys must be strings"]),
        ({"k" * 2000: 1}, ["longer than"]),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else None,
)
def test_invalid_filters_name_the_bad_part(store: SqlStore, where: dict, words: list[str]) -> None:
    for attempt in (lambda: check_where(where), lambda: store.count_where(where)):
        with pytest.raises(InvalidInputError) as info:
            attempt()
        for word in words:
            assert word in str(info.value), str(info.value)


def test_a_filter_that_is_not_a_dict() -> None:
    for where in ([{"a": 1}], "topic=space", 5):
        with pytest.raises(InvalidInputError, match="where must be a dict"):
            check_where(where)  # type: ignore[arg-type]


def test_deep_nesting_is_refused() -> None:
    where: dict = {"a": 1}
    for _ in range(40):
        where = {"$not": where}
    with pytest.raises(InvalidInputError, match="deeper than"):
        check_where(where)


def test_values_are_bound_parameters() -> None:
    """No value and no key text appears in the SQL itself."""
    from sqlalchemy import select
    from sqlalchemy.dialects import postgresql, sqlite

    from latentsearch.stores.models import Item

    where = {"k'ey": "va'lue", "n.m": {"$in": [12345, "x'y"]}, "source": "s'rc", "$not": {"zz9": 67890}}
    for dialect in (sqlite.dialect(), postgresql.psycopg.dialect()):
        sql = str(select(Item.id).where(compile_where(where, dialect.name)).compile(dialect=dialect))
        for text in ("k'ey", "va'lue", "12345", "x'y", "s'rc", "zz9", "67890", "n.m", '"m"'):
            assert text not in sql, (dialect.name, text, sql)


def test_other_databases_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="SQLite and PostgreSQL"):
        compile_where({"a": 1}, "mysql")
