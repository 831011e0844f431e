"""Lexical (full-text) and hybrid search, on SQLite (FTS5) and PostgreSQL (tsvector), with the
hashing encoder: the index follows every write, query strings are never query syntax, fusion
keeps what each side finds, ``where`` applies to both sides, and the CLI's ``--mode``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from latentsearch.cli import cli
from latentsearch.collection import Collection
from latentsearch.errors import InvalidInputError
from latentsearch.evaluation.metrics import evaluate
from latentsearch.query.hybrid import fts5_query, rrf, tsquery_or, words
from latentsearch.stores.fulltext import FTS_TABLE, TEXT_VIEW, TSV_COLUMN

DOCS = {
    "zep": "Airships such as zeppelins carried passengers across the ocean in the early twentieth "
    "century before planes took over the long routes",
    "hist": "a history of the history of history",
    "uni1": "the university campus library opens early",
    "uni2": "the universe is expanding and galaxies drift apart",
    "cook": "cooking pasta with garlic and olive oil",
    "run1": "marathon runners trained for months",
    "run2": "running shoes for long distance",
}
META = {
    "zep": {"topic": "air"}, "hist": {"topic": "history"}, "uni1": {"topic": "school"},
    "uni2": {"topic": "space"}, "cook": {"topic": "food"}, "run1": {"topic": "sport"}, "run2": {"topic": "sport"},
}


def _col(hashing_collection, store_url: str, name: str = "col") -> Collection:
    col = hashing_collection(name, store=None if store_url.startswith("sqlite") else store_url)
    col.add(list(DOCS.values()), keys=list(DOCS), metadata=[META[k] for k in DOCS])
    return col


def keys(hits) -> list[str | None]:
    return [h.key for h in hits]


# -- query strings ---------------------------------------------------------------------------------


def test_query_strings_are_quoted_words():
    assert words('"a" OR b* NEAR( -x ^y') == ["a", "or", "b", "near", "x", "y"]
    assert fts5_query('"a" OR b*') == '"a" OR "or" OR "b"'
    assert fts5_query("  -- ( * ") is None
    assert tsquery_or(["it's", "a\\b", ""]) == "'it''s' | 'a\\\\b'"
    assert tsquery_or([]) is None


def test_rrf_known_scores():
    fused = rrf([[1, 2, 3], [3, 4]], (1.0, 2.0))
    assert [i for i, _ in fused] == [3, 4, 1, 2]
    assert dict(fused)[3] == pytest.approx(1 / 63 + 2 / 61)
    assert dict(fused)[1] == pytest.approx(1 / 61)


# -- lexical search ------------------------------------------------------------------------------------


def test_lexical_finds_exact_terms_the_hashing_encoder_ranks_lower(store_url, hashing_collection):
    col = _col(hashing_collection, store_url)
    query = "zeppelin history"
    dense = keys(col.search(query, k=len(DOCS)))
    lexical = keys(col.search(query, k=3, mode="lexical"))
    # "zeppelins" stems to the query's "zeppelin"; for bag-of-words hashing it is another word.
    assert "zep" in lexical[:2]
    assert dense.index("zep") > lexical.index("zep")
    assert all(h.score > 0 for h in col.search(query, k=3, mode="lexical"))
    assert keys(col.search("garlic", k=5, mode="lexical")) == ["cook"]
    assert col.search("xylophone", k=5, mode="lexical") == []


def test_lexical_index_follows_update_delete_upsert(store_url, hashing_collection):
    col = _col(hashing_collection, store_url)
    assert keys(col.search("garlic", mode="lexical")) == ["cook"]
    col.upsert(["baking bread with rye flour"], keys=["cook"])
    assert col.search("garlic", mode="lexical") == []
    assert keys(col.search("bread", mode="lexical")) == ["cook"]
    col.upsert(["garlic soup"], keys=["soup"])  # an insert through upsert
    assert keys(col.search("garlic", mode="lexical")) == ["soup"]
    col.delete(keys=["soup"])
    assert col.search("garlic", mode="lexical") == []
    new = col.add(["grilled garlic bread"], keys=["grill"])
    assert keys(col.search("garlic", mode="lexical")) == ["grill"]
    assert set(keys(col.search("bread", k=5, mode="lexical"))) == {"cook", "grill"}
    col.delete(ids=new)
    assert keys(col.search("bread", k=5, mode="lexical")) == ["cook"]
    col.close()
    with Collection.open(col.path) as again:  # and it is the store's, not this process's
        assert keys(again.search("rye", mode="lexical")) == ["cook"]


@pytest.mark.parametrize(
    "query",
    ['"a" OR b*', "NEAR(", 'NEAR("x" "y", 2)', '"', "'", "''", '"unbalanced', "-garlic", "garlic -pasta",
     "text:garlic", "^garlic", "garlic AND", "OR", "(garlic", "garlic*", "{text}: garlic", "a\\b", "!(", "&|"],
)
def test_injection_like_queries_are_plain_words(store_url, hashing_collection, query):
    col = _col(hashing_collection, store_url)
    hits = col.search(query, k=10, mode="lexical")  # never a syntax error
    if "garlic" in query:
        assert keys(hits)[0] == "cook"  # "-garlic" still means the word garlic
    hybrid = col.search(query, k=3, mode="hybrid")
    assert len(hybrid) == 3


def test_prefix_and_operators_are_not_interpreted(store_url, hashing_collection):
    col = _col(hashing_collection, store_url)
    assert col.search("garl*", mode="lexical") == []  # no prefix search: garl is just a word
    assert col.search("NEAR(garlic pasta)", k=1, mode="lexical")[0].key == "cook"


# -- hybrid ---------------------------------------------------------------------------------------------

RELEVANT = {
    "universe": {"uni2": 1},
    "running marathon": {"run1": 1, "run2": 1},
    "garlic pasta": {"cook": 1},
    "zeppelin history": {"zep": 1},
}


def test_hybrid_is_at_least_as_good_as_each_side(store_url, hashing_collection):
    col = _col(hashing_collection, store_url)
    queries = list(RELEVANT)
    scores = {}
    for mode in ("dense", "lexical", "hybrid"):
        rows = col.search_batch(queries, k=3, mode=mode)
        run = {q: {h.key: h.score for h in row} for q, row in zip(queries, rows)}
        scores[mode] = evaluate(RELEVANT, run, ks=(3,))["ndcg@3"]
    assert scores["hybrid"] >= scores["dense"] and scores["hybrid"] >= scores["lexical"], scores
    assert scores["hybrid"] > min(scores["dense"], scores["lexical"]), scores


def test_hybrid_scores_are_fused_ranks(store_url, hashing_collection):
    col = _col(hashing_collection, store_url)
    hits = col.search("garlic pasta", k=3, mode="hybrid")
    assert hits[0].key == "cook"
    assert hits[0].score == pytest.approx(2 / 61)  # first on both sides
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    dense_only = col.search("garlic pasta", k=3, mode="hybrid", hybrid_weights=(1.0, 0.0))
    assert keys(dense_only)[0] == "cook"  # (the dense order of the tied rest depends on k)
    assert [h.score for h in dense_only] == pytest.approx([1 / 61, 1 / 62, 1 / 63])
    lexical_first = col.search("universe", k=2, mode="hybrid", hybrid_weights=(0.1, 1.0))
    assert keys(lexical_first) == keys(col.search("universe", k=2, mode="lexical"))


def test_where_applies_to_lexical_and_hybrid(store_url, hashing_collection):
    col = _col(hashing_collection, store_url)
    assert set(keys(col.search("running marathon", k=5, mode="lexical"))) == {"run1", "run2"}
    (hits,), stats = col.search_batch_with_stats(
        ["running marathon"], k=5, mode="lexical", where={"topic": "sport", "key": {"$ne": "run2"}}
    )
    assert keys(hits) == ["run1"]
    assert stats is not None and stats.matches == 1
    hybrid = col.search("garlic universe", k=5, mode="hybrid", where={"topic": {"$in": ["space", "air"]}})
    assert set(keys(hybrid)) == {"uni2", "zep"} and keys(hybrid)[0] == "uni2"
    assert col.search("garlic", mode="lexical", where={"topic": "space"}) == []


def test_group_by_document_with_lexical_and_hybrid(hashing_collection):
    col = hashing_collection()
    col.add(
        ["garlic one", "garlic two", "garlic three", "pasta garlic"],
        keys=["d1#0", "d1#1", "d2#0", "d3#0"],
    )
    lex = col.search("garlic", k=3, mode="lexical", group_by="document")
    assert len({h.document for h in lex}) == len(lex) == 3
    hyb = col.search("garlic", k=3, mode="hybrid", group_by="document")
    assert len({h.document for h in hyb}) == len(hyb) == 3


def test_bad_arguments(hashing_collection):
    col = _col(hashing_collection, "sqlite")
    with pytest.raises(InvalidInputError, match="mode"):
        col.search("x", mode="sparse")
    with pytest.raises(InvalidInputError, match="text queries"):
        col.search([0.0] * 64, mode="lexical")
    with pytest.raises(InvalidInputError, match="text queries"):
        col.search(1, mode="hybrid")
    for weights in ((1.0,), (0.0, 0.0), (-1.0, 1.0), ("a", 1), (float("nan"), 1.0)):
        with pytest.raises(InvalidInputError, match="hybrid_weights"):
            col.search("x", mode="hybrid", hybrid_weights=weights)


def test_store_without_fulltext_index_opens_and_says_to_recreate(store_url, hashing_collection):
    col = _col(hashing_collection, store_url)
    path = col.path
    col.close()
    with col.store.engine.begin() as conn:
        if store_url.startswith("sqlite"):
            conn.exec_driver_sql(f"DROP TABLE {FTS_TABLE}")
            for suffix in ("ai", "ad", "au"):
                conn.exec_driver_sql(f"DROP TRIGGER {FTS_TABLE}_{suffix}")
        else:
            conn.execute(text(f'ALTER TABLE "{col.config.store_schema}".items DROP COLUMN {TSV_COLUMN}'))
    with Collection.open(path) as old:
        assert keys(old.search("garlic pasta", k=1)) == ["cook"]  # dense search still works
        old.add(["more garlic"], keys=["more"])  # and writing
        for mode in ("lexical", "hybrid"):
            with pytest.raises(InvalidInputError, match="create it again"):
                old.search("garlic", mode=mode)


# The SQLite schema of stores made before this version: full indexes, FTS5 over the whole items table.
OLDER_SQLITE_SCHEMA = f"""
DROP TRIGGER {FTS_TABLE}_ai; DROP TRIGGER {FTS_TABLE}_ad; DROP TRIGGER {FTS_TABLE}_au; DROP TABLE {FTS_TABLE};
DROP VIEW {TEXT_VIEW}; DROP INDEX ix_items_key; DROP INDEX ix_items_content_hash; DROP INDEX ix_items_document;
CREATE UNIQUE INDEX older_key ON items (key); CREATE INDEX ix_items_content_hash ON items (content_hash);
CREATE INDEX ix_items_document ON items (document);
CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(text, content='items', content_rowid='id', tokenize='porter unicode61');
INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild');
CREATE TRIGGER {FTS_TABLE}_ai AFTER INSERT ON items BEGIN
  INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END;
CREATE TRIGGER {FTS_TABLE}_ad AFTER DELETE ON items BEGIN
  INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); END;
CREATE TRIGGER {FTS_TABLE}_au AFTER UPDATE OF text ON items BEGIN
  INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text);
  INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END;
"""


def test_a_store_of_the_older_sqlite_schema_keeps_working(hashing_collection):
    """Partial indexes and the full-text view are for new stores; one made before them reads and
    writes as it did, and its full-text index stays consistent with its items."""
    col = _col(hashing_collection, "sqlite")
    path = col.path
    col.add(np.ones((2, col.config.dim), dtype=np.float32))  # rows without text
    col.close()
    raw = col.store.engine.raw_connection()
    try:
        raw.driver_connection.executescript(OLDER_SQLITE_SCHEMA)
    finally:
        raw.close()
    with Collection.open(path) as old:
        assert keys(old.search("garlic pasta", k=1, mode="lexical")) == ["cook"]
        old.add(["garlic soup"], keys=["soup"])
        old.upsert(["plain rice"], keys=["cook"])
        old.delete(keys=["run1"])
        assert keys(old.search("garlic", k=5, mode="lexical")) == ["soup"]
        with pytest.raises(InvalidInputError, match="exists already"):
            old.add(["again"], keys=["soup"])
        with old.store.engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rank) VALUES ('integrity-check', 1)")
        assert old.verify()["missing_from_index"] == []


# -- CLI --------------------------------------------------------------------------------------------------


def test_cli_search_mode(hashing_collection):
    col = _col(hashing_collection, "sqlite")
    col.close()
    runner = CliRunner()
    for mode in ("dense", "lexical", "hybrid"):
        result = runner.invoke(cli, ["search", str(col.path), "garlic pasta", "--mode", mode, "-k", "2", "--json"])
        assert result.exit_code == 0, (result.output, result.exception)
        hits = json.loads(result.stdout)
        assert hits[0]["key"] == "cook"
    result = runner.invoke(cli, ["search", str(col.path), "zeppelin", "--mode", "lexical"])
    assert result.exit_code == 0 and "Airships" in result.stdout
    result = runner.invoke(cli, ["search", str(col.path), "xylophone", "--mode", "lexical"])
    assert result.exit_code == 0 and "no results" in result.output
    result = runner.invoke(
        cli, ["search", str(col.path), "running", "--mode", "hybrid", "--where", '{"topic": "sport"}', "--json"]
    )
    assert result.exit_code == 0 and {h["key"] for h in json.loads(result.stdout)} == {"run1", "run2"}
    result = runner.invoke(cli, ["search", str(col.path), "x", "--mode", "sparse"])
    assert result.exit_code == 2 and "sparse" in result.output
