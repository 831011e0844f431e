"""SqlStore on SQLite and on a real PostgreSQL: rows, vectors, the change log and id assignment."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy.exc import SQLAlchemyError

from latentsearch.errors import InvalidInputError, LatentSearchError
from latentsearch.stores.bulk import BATCH, Same
from latentsearch.stores.fulltext import FTS_TABLE
from latentsearch.stores.sql import NewItem, SqlStore

DIM = 8
INFO = {"encoder": "hashing:8", "dim": str(DIM), "metric": "cosine"}


def vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def new_item(seed: int, key: str | None = None, **fields: Any) -> NewItem:
    return NewItem(vector=vector(seed), modality="text", key=key, text=f"text {seed}", **fields)


@pytest.fixture
def make_store(store_url: str, store_schema: str | None) -> Iterator[Callable[..., SqlStore]]:
    """``make_store(vector_dtype="float32")``: a created store on this test's database and schema."""
    stores: list[SqlStore] = []

    def make(vector_dtype: str = "float32", create: bool = True) -> SqlStore:
        store = SqlStore(store_url, DIM, vector_dtype, schema=store_schema)
        if create:
            store.create(INFO)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., SqlStore]) -> SqlStore:
    return make_store()


# -- schema ------------------------------------------------------------------------------------


def test_create_exists_info_drop(make_store: Callable[..., SqlStore]) -> None:
    store = make_store(create=False)
    assert store.exists() is False
    store.create(INFO)
    assert store.exists() is True
    assert store.info() == INFO
    assert store.count() == 0 and store.max_seq() == 0
    store.create({"dim": str(DIM), "extra": "1"})  # again: tables kept, info merged
    assert store.info() == {**INFO, "extra": "1"}
    store.drop()
    assert store.exists() is False


def test_invalid_schema_name_is_rejected(store_url: str) -> None:
    with pytest.raises(InvalidInputError, match="schema"):
        SqlStore(store_url, DIM, schema='x"; DROP TABLE items; --')


# -- writes ------------------------------------------------------------------------------------


def test_inserts_return_ids_in_input_order(store: SqlStore) -> None:
    # More rows than one insertmanyvalues page (1000), so ordering across pages is checked too.
    keys = [f"k{i}" for i in range(2500)]
    ids = store.write([new_item(i, key) for i, key in enumerate(keys)])
    assert len(ids) == len(set(ids)) == len(keys)
    assert all(isinstance(i, int) for i in ids)
    assert {k: v[0] for k, v in store.keys_to_ids(keys).items()} == dict(zip(keys, ids))
    sample = ids[::97]
    found = store.get(sample)
    assert [found[i].key for i in sample] == [keys[ids.index(i)] for i in sample]
    assert store.count() == len(keys)


def test_update_keeps_id_and_replaces_row(store: SqlStore) -> None:
    a, b = store.write([new_item(1, "a"), new_item(2, "b")])
    replacement = NewItem(
        vector=vector(99), modality="text", key="a", text="new text", metadata={"v": 2}, content_hash="h2"
    )
    assert store.write(updates={a: replacement}) == []
    assert store.count() == 2
    item = store.get([a])[a]
    assert (item.id, item.key, item.text, item.metadata) == (a, "a", "new text", {"v": 2})
    assert store.keys_to_ids(["a"]) == {"a": (a, "h2")}
    found, vectors = store.vectors([a, b])
    assert found.tolist() == [a, b]
    np.testing.assert_array_equal(vectors, np.stack([vector(99), vector(2)]))


def test_delete(store: SqlStore) -> None:
    ids = store.write([new_item(i, f"k{i}") for i in range(4)])
    assert store.write(deletes=[ids[1], ids[2]]) == []
    assert store.count() == 2
    assert sorted(store.get(ids)) == [ids[0], ids[3]]
    assert store.vectors(ids)[0].tolist() == [ids[0], ids[3]]
    assert set(store.keys_to_ids(["k0", "k1", "k2", "k3"])) == {"k0", "k3"}


def test_insert_update_delete_in_one_write(store: SqlStore) -> None:
    a, b = store.write([new_item(1, "a"), new_item(2, "b")])
    before = store.max_seq()
    (c,) = store.write([new_item(3, "c")], updates={a: new_item(4, "a")}, deletes=[b])
    assert c not in (a, b)
    assert sorted(store.get([a, b, c])) == sorted([a, c])
    ids, newest = store.changed_since(before)
    assert sorted(ids.tolist()) == sorted([a, b, c])
    assert newest == store.max_seq() == before + 3


def test_wrong_shape_vector_raises_and_writes_nothing(store: SqlStore) -> None:
    (a,) = store.write([new_item(1, "a")])
    count, seq = store.count(), store.max_seq()
    bad_vectors = [np.zeros(DIM - 1, np.float32), np.zeros((1, DIM), np.float32), np.zeros(DIM + 1)]
    for bad in bad_vectors:
        with pytest.raises(InvalidInputError, match=str(DIM)):
            store.write([new_item(2, "b"), NewItem(vector=bad, modality="vector")])
        # The good insert precedes the bad update in the same transaction: both roll back.
        with pytest.raises(InvalidInputError):
            store.write([new_item(3, "c")], updates={a: NewItem(vector=bad, modality="vector")})
    assert (store.count(), store.max_seq()) == (count, seq)
    assert set(store.keys_to_ids(["a", "b", "c"])) == {"a"}


def test_failed_write_leaves_no_change_behind(store: SqlStore) -> None:
    store.write([new_item(1, "dup")])
    count, seq = store.count(), store.max_seq()
    with pytest.raises((SQLAlchemyError, LatentSearchError)):
        store.write([new_item(2, "fresh"), new_item(3, "dup")])  # unique key violated
    assert (store.count(), store.max_seq()) == (count, seq)
    assert store.keys_to_ids(["fresh"]) == {}


# -- reads -------------------------------------------------------------------------------------


def test_keys_are_unique_and_items_without_keys_are_many(store: SqlStore) -> None:
    """The partial unique index on key: any number of keyless items, one item per key."""
    ids = store.write([NewItem(vector=vector(i), modality="vector") for i in range(3)])
    store.write([new_item(10, key="a")])
    before = (store.count(), store.max_seq())
    with pytest.raises(SQLAlchemyError):
        store.write([new_item(11, key="b"), new_item(12, key="a")])
    assert (store.count(), store.max_seq()) == before
    assert set(store.get(ids)) == set(ids) and store.keys_to_ids(["a", "b"]).keys() == {"a"}


def test_fulltext_index_holds_exactly_the_items_with_text(store: SqlStore) -> None:
    """Items without text stay out of the full-text index through inserts, updates between text
    and none, and deletes; SQLite's own integrity check agrees with the items table."""
    plain = [NewItem(vector=vector(i), modality="vector") for i in range(4)]
    worded = [NewItem(vector=vector(10 + i), modality="text", text=f"garlic word{i}") for i in range(3)]
    ids = store.write(plain + worded)
    vec_ids, text_ids = ids[:4], ids[4:]
    store.write(updates={vec_ids[0]: NewItem(vector=vector(0), modality="text", text="garlic late"),
                         text_ids[0]: NewItem(vector=vector(10), modality="vector")})
    store.write(deletes=[vec_ids[1], text_ids[1]])
    found = {i for i, _ in store.lexical_search("garlic", 10)}
    assert found == {vec_ids[0], text_ids[2]}
    if store.engine.dialect.name == "sqlite":
        with store.engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('integrity-check', 1)")
            assert conn.exec_driver_sql(f"SELECT count(*) FROM {FTS_TABLE}_docsize").scalar() == 2


def test_get_omits_missing_ids(store: SqlStore) -> None:
    ids = store.write([new_item(i, f"k{i}", source=f"/docs/{i}.txt") for i in range(3)])
    missing = max(ids) + 1000
    found = store.get([ids[2], missing, ids[0], ids[0]])
    assert sorted(found) == sorted([ids[0], ids[2]])
    item = found[ids[2]]
    assert (item.key, item.source, item.modality, item.text) == ("k2", "/docs/2.txt", "text", "text 2")
    assert item.metadata == {}
    assert store.get([]) == {}


def test_reads_of_more_ids_than_one_batch(store: SqlStore) -> None:
    ids = store.write([new_item(i) for i in range(3)])
    wanted = list(range(-BATCH, BATCH + 5))  # more than one IN (...) clause, mostly missing
    assert sorted(store.get(wanted)) == sorted(i for i in ids if i in wanted)
    found, vectors = store.vectors(wanted)
    assert found.tolist() == sorted(i for i in ids if i in wanted)
    assert vectors.shape == (len(found), DIM)


def test_keys_to_ids(store: SqlStore) -> None:
    a, _, c = store.write(
        [new_item(1, "a", content_hash="ha"), new_item(2, None), new_item(3, "c")]
    )
    assert store.keys_to_ids(["c", "missing", "a", "a"]) == {"a": (a, "ha"), "c": (c, None)}
    assert store.keys_to_ids([]) == {}


def test_vectors_in_the_order_asked(store: SqlStore) -> None:
    ids = store.write([new_item(i) for i in range(4)])
    wanted = [ids[3], ids[0], max(ids) + 10, ids[2]]
    found, vectors = store.vectors(wanted)
    assert found.dtype == np.int64 and vectors.dtype == np.float32
    assert vectors.flags.c_contiguous
    assert found.tolist() == [ids[3], ids[0], ids[2]]
    np.testing.assert_array_equal(vectors, np.stack([vector(3), vector(0), vector(2)]))
    empty_ids, empty = store.vectors([max(ids) + 10])
    assert empty_ids.shape == (0,) and empty.shape == (0, DIM)


def test_float16_store_round_trip(make_store: Callable[..., SqlStore]) -> None:
    store = make_store("float16")
    originals = np.stack([vector(i) for i in range(20)])
    ids = store.write([NewItem(vector=v, modality="vector") for v in originals])
    found, vectors = store.vectors(ids)
    assert found.tolist() == ids
    assert vectors.dtype == np.float32 and vectors.shape == (20, DIM)
    np.testing.assert_allclose(vectors, originals, rtol=1e-3, atol=1e-3)
    assert not np.array_equal(vectors, originals)  # really stored at half precision
    ((batch_ids, batch),) = list(store.iter_vectors())
    assert batch_ids.tolist() == ids
    np.testing.assert_array_equal(batch, vectors)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_float16_store_rejects_vectors_it_cannot_represent(make_store: Callable[..., SqlStore]) -> None:
    store = make_store("float16")
    too_big = np.zeros(DIM, np.float32)
    too_big[0] = 1e6
    with pytest.raises(InvalidInputError):
        store.write([NewItem(vector=too_big, modality="vector")])
    assert store.count() == 0


def test_iter_vectors_batches_in_id_order(store: SqlStore) -> None:
    assert list(store.iter_vectors(batch_size=7)) == []
    ids = store.write([new_item(i) for i in range(25)])
    store.write(deletes=[ids[3], ids[10]])
    alive = [i for i in ids if i not in (ids[3], ids[10])]
    batches = list(store.iter_vectors(batch_size=7))
    assert [len(b[0]) for b in batches] == [7, 7, 7, 2]
    all_ids = np.concatenate([b[0] for b in batches])
    assert all_ids.dtype == np.int64
    assert all_ids.tolist() == sorted(alive)
    expected = {i: vector(n) for n, i in enumerate(ids)}
    np.testing.assert_array_equal(
        np.concatenate([b[1] for b in batches]), np.stack([expected[i] for i in sorted(alive)])
    )


def test_changed_since_lists_each_id_once_with_newest_seq(store: SqlStore) -> None:
    assert store.changed_since(0)[0].tolist() == []
    assert store.changed_since(0)[1] == 0
    a, b, c = store.write([new_item(1, "a"), new_item(2, "b"), new_item(3, "c")])
    after_add = store.max_seq()
    store.write(updates={a: new_item(4, "a")})
    store.write(updates={a: new_item(5, "a")})
    store.write(deletes=[b])
    ids, newest = store.changed_since(0)
    assert sorted(ids.tolist()) == sorted([a, b, c]) and len(ids) == 3
    assert ids.dtype == np.int64
    assert newest == store.max_seq()
    ids, newest = store.changed_since(after_add)
    assert sorted(ids.tolist()) == sorted([a, b])
    assert newest == store.max_seq()
    ids, newest = store.changed_since(store.max_seq())
    assert ids.tolist() == [] and newest == store.max_seq()


def test_max_seq_grows_with_every_change(store: SqlStore) -> None:
    seqs = [store.max_seq()]
    (a,) = store.write([new_item(1, "a")])
    seqs.append(store.max_seq())
    store.write(updates={a: new_item(2, "a")})
    seqs.append(store.max_seq())
    store.write(deletes=[a])
    seqs.append(store.max_seq())
    assert seqs == sorted(set(seqs)), seqs
    assert seqs[0] == 0


# -- invariant 3: ids are assigned by the store and never reused -------------------------------


def test_ids_are_never_reused_after_deleting_the_highest(make_store: Callable[..., SqlStore]) -> None:
    store = make_store()
    ids = store.write([new_item(i) for i in range(3)])
    store.write(deletes=[max(ids)])
    (next_id,) = store.write([new_item(10)])
    assert next_id > max(ids)
    store.write(deletes=[*ids[:2], next_id])  # now empty
    assert store.count() == 0
    store.close()
    reopened = make_store(create=False)  # a new engine: nothing remembered in this process
    (after_reopen,) = reopened.write([new_item(11)])
    assert after_reopen > next_id
    seq = reopened.max_seq()
    reopened.write(deletes=[after_reopen])
    assert reopened.max_seq() > seq


# -- PostgreSQL schemas --------------------------------------------------------------------------


@pytest.mark.postgres
def test_two_schemas_in_one_database_are_isolated(pg_url: str, pg_schema: Callable[[], str]) -> None:
    first = SqlStore(pg_url, DIM, schema=pg_schema())
    second = SqlStore(pg_url, DIM, schema=pg_schema())
    try:
        first.create({**INFO, "name": "first"})
        assert not second.exists()
        second.create({**INFO, "name": "second"})
        first_ids = first.write([new_item(i, f"k{i}") for i in range(3)])
        (second_id,) = second.write([new_item(7, "k0")])  # the same key is fine in another schema
        assert first.count() == 3 and second.count() == 1
        assert second_id == first_ids[0]  # each schema has its own id sequence
        assert first.info()["name"] == "first" and second.info()["name"] == "second"
        assert second.keys_to_ids(["k1"]) == {}
        assert second.changed_since(0)[0].tolist() == [second_id]
        np.testing.assert_array_equal(second.vectors([second_id])[1][0], vector(7))
        first.drop()
        assert not first.exists()
        assert second.exists() and second.count() == 1
    finally:
        first.close()
        second.close()


# -- metadata, sizes, errors ---------------------------------------------------------------------


def test_metadata_json_round_trip(store: SqlStore) -> None:
    metadata = {
        "title": "Ünïcødé — 東京 🚀",
        "quote": 'she said "hi"\n\ttab \\ backslash',
        "nested": {"list": [1, 2.5, None, True, False, "x", {"deep": {"deeper": []}}], "empty": {}},
        "number": -12345678901,
        "ключ": "значение",
    }
    (a,) = store.write([NewItem(vector=vector(1), modality="text", text="Grüße, 世界", metadata=metadata)])
    item = store.get([a])[a]
    assert item.metadata == metadata
    assert item.text == "Grüße, 世界"
    store.write(updates={a: NewItem(vector=vector(1), modality="text", metadata={"only": ["new"]})})
    assert store.get([a])[a].metadata == {"only": ["new"]}


def test_size_bytes_is_an_int(store: SqlStore) -> None:
    store.write([new_item(i) for i in range(10)])
    size = store.size_bytes()
    assert isinstance(size, int) and size > 0


@pytest.mark.parametrize(
    "url",
    ["notadb://somewhere/x", "this is not a url", "postgresql+nosuchdriver://user@localhost/db"],
)
def test_unusable_url_is_a_clear_error(url: str) -> None:
    with pytest.raises(LatentSearchError, match="database URL"):
        SqlStore(url, DIM)


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    closed_port = "postgresql+psycopg://user:s3cret@127.0.0.1:1/db?connect_timeout=2"
    missing_dir = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}"
    for url in (closed_port, missing_dir):
        store = SqlStore(url, DIM)
        with pytest.raises(LatentSearchError, match="cannot reach the store") as caught:
            store.exists()
        assert "s3cret" not in str(caught.value)
        with pytest.raises(LatentSearchError, match="cannot create the store"):
            store.create(INFO)
        store.close()


@pytest.mark.parametrize("paramstyle", ["qmark", "named"])
def test_bulk_insert_and_select_by_ids_with_either_parameter_style(tmp_path, paramstyle):
    """Driver-level statements for positional drivers, SQLAlchemy's own for named ones: same rows."""
    from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, create_engine

    from latentsearch.stores.bulk import BulkInsert, Same, SelectByIds

    engine = create_engine(f"sqlite:///{tmp_path / 'bulk.db'}", paramstyle=paramstyle)
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("name", String),
                  Column("meta", JSON))
    table.metadata.create_all(engine)
    insert = BulkInsert(table, ("id", "name", "meta"), engine.dialect)
    select_ = SelectByIds(table, ("id", "name", "meta"), engine.dialect)
    assert (insert.placeholder is None) == (paramstyle == "named")
    with engine.begin() as conn:
        insert.execute(conn, {"id": [1, 2, 3], "name": Same("x"), "meta": [{"a": 1}, {}, {"b": [2]}]}, 3)
        with pytest.raises(ValueError, match="2 values for 3 rows"):
            insert.execute(conn, {"id": [4, 5], "name": Same("y"), "meta": Same({})}, 3)
    with engine.connect() as conn:
        rows = sorted(tuple(r) for r in select_.rows(conn, [3, 1, 99]))
    assert rows == [(1, "x", {"a": 1}), (3, "x", {"b": [2]})]


@pytest.mark.parametrize("max_parameters", [2, 7, 32_766])
def test_bulk_insert_splits_rows_into_statements_within_the_parameter_limit(tmp_path, max_parameters):
    """Multi-row statements: every row once, in order, however the batch is cut; a column NULL in
    every row is a literal, not a bound value."""
    from sqlalchemy import JSON, Column, Integer, MetaData, String, Table, create_engine, event

    from latentsearch.stores import bulk

    engine = create_engine(f"sqlite:///{tmp_path / 'bulk.db'}")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("name", String),
                  Column("meta", JSON), Column("note", String))
    table.metadata.create_all(engine)
    insert = bulk.BulkInsert(table, ("id", "name", "meta", "note"), engine.dialect)
    insert.max_parameters = max_parameters
    statements = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, sql, params, *_: statements.append(params))
    n = 2 * bulk.ROWS_PER_STATEMENT + 3
    with engine.begin() as conn:
        insert.execute(conn, {"id": list(range(1, n + 1)), "name": Same("x"), "meta": [{"i": i} for i in range(n)],
                              "note": Same(None)}, n)
    assert all(len(params) <= max(max_parameters, 3) for params in statements)
    per_statement = min(bulk.ROWS_PER_STATEMENT, max(1, max_parameters // 3))
    assert len(statements) == -(-n // per_statement)
    with engine.connect() as conn:
        rows = conn.execute(table.select().order_by(table.c.id)).all()
    assert rows == [(i + 1, "x", {"i": i}, None) for i in range(n)]


@pytest.mark.parametrize("multirow", [True, False])
def test_bulk_insert_of_rows_with_nothing_to_bind(tmp_path, multirow):
    from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine

    from latentsearch.stores import bulk

    engine = create_engine(f"sqlite:///{tmp_path / 'bulk.db'}")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("note", String))
    table.metadata.create_all(engine)
    insert = bulk.BulkInsert(table, ("note",), engine.dialect)
    insert.multirow = multirow
    with engine.begin() as conn:
        insert.execute(conn, {"note": Same(None)}, 3)
    with engine.connect() as conn:
        assert conn.execute(table.select().order_by(table.c.id)).all() == [(1, None), (2, None), (3, None)]
