"""Hostile input through a collection, on SQLite and PostgreSQL alike: whatever one input holds,
``add`` refuses it with a clear error and ``index`` skips it with a one-line reason, keeps every
good input, and leaves a collection that every filter can still search.

Non-finite and huge numbers, deep and self-referencing metadata, lone surrogates, NUL, names
and texts over PostgreSQL's limits, passage keys that collide with user keys, and the numbers at
2**53 where the two databases used to disagree.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import write, write_jsonl

from latentsearch.errors import InvalidInputError
from latentsearch.ingest.chunking import ChunkConfig
from latentsearch.ingest.records import MAX_NAME_BYTES, MAX_TEXT_BYTES, PASSAGE_SEPARATOR, Record
from latentsearch.ingest.sources import RecordFields

SMALL = ChunkConfig(max_tokens=16, overlap_tokens=2, min_tokens=0)


@pytest.fixture
def col(hashing_collection, store_url):
    """A hashing collection on SQLite, then on PostgreSQL (its own schema)."""
    return hashing_collection(store=None if store_url.startswith("sqlite") else store_url)


def keys(col, where=None) -> set[str]:
    """The keys of the items a filtered search finds (the filter must work on the store)."""
    return {h.key for h in col.search("anything at all", k=100, where=where)}


def one_line(report) -> None:
    for s in report.skipped:
        assert "\n" not in s.reason and "[parameters" not in s.reason and len(s.reason) < 400, s


def good_lines(n: int) -> list[str]:
    return [json.dumps({"id": f"g{i}", "text": f"good record {i}", "n": i}) for i in range(n)]


# -- 3: NaN and Infinity -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float32("nan"), np.array([1.0, np.inf])])
def test_add_refuses_metadata_that_is_not_finite(col, bad):
    with pytest.raises(InvalidInputError, match=r"metadata 0\.x.* must be finite"):
        col.add(["a text"], metadata=[{"x": bad}])
    assert len(col) == 0
    col.add(["a text"], metadata=[{"x": 1}], keys=["ok"])
    assert keys(col, {"x": 1}) == {"ok"}


def test_index_skips_a_line_with_nan_and_keeps_the_forty_good_ones(col, tmp_path):
    lines = good_lines(20) + ['{"id": "bad", "text": "nan here", "score": NaN}'] + good_lines(40)[20:]
    f = write(tmp_path / "r.jsonl", "\n".join(lines))
    report = col.index_paths([f])
    assert report.added == 40
    assert [(s.source, s.reason.split(";")[0]) for s in report.skipped] == [(f"{f.resolve()}:21", "field 'score' is nan")]
    one_line(report)
    assert len(keys(col, {"n": {"$gte": 0}})) == 40  # every filtered search still works


def test_records_given_directly_are_checked_at_the_door_too(col):
    report = col.add_records([Record(text="bad", key="bad", metadata={"x": math.inf}), Record(text="good", key="good")])
    assert report.added == 1 and [s.source for s in report.skipped] == ["bad"]
    assert keys(col, {"x": {"$exists": False}}) == {"good"}


# -- 4: deep and self-referencing metadata ----------------------------------------------------------


def nest(levels: int) -> dict:
    value: object = 1
    for _ in range(levels):
        value = {"a": value}
    return value  # type: ignore[return-value]


def test_add_refuses_metadata_nested_too_deeply_or_holding_itself(col):
    col.add(["64 levels"], metadata=[nest(64)], keys=["ok"])
    with pytest.raises(InvalidInputError, match="deeper than 64 levels"):
        col.add(["65 levels"], metadata=[nest(65)])
    with pytest.raises(InvalidInputError, match="deeper than 64 levels"):
        col.add(["1000 levels"], metadata=[nest(1000)])
    loop: dict = {"b": []}
    loop["b"].append(loop)
    with pytest.raises(InvalidInputError, match=r"holds itself"):
        col.add(["a loop"], metadata=[loop])
    assert [h.key for h in col.search("levels", k=5, where={"a.a.a": {"$exists": True}})] == ["ok"]


def test_index_skips_deep_lines_and_keeps_the_good_ones_of_the_same_chunk(col, tmp_path):
    deep = '{"id": "deep", "text": "deep", "m": ' + '{"a": ' * 200 + "1" + "}" * 200 + "}"
    deeper = '{"id": "deeper", "text": "x", "m": ' + "[" * 100_000 + "]" * 100_000 + "}"  # beyond json's own limit
    f = write(tmp_path / "r.jsonl", "\n".join(good_lines(3) + [deep, deeper] + good_lines(6)[3:]))
    report = col.index_paths([f], batch_size=64)
    assert report.added == 6
    reasons = {s.source.rsplit(":", 1)[1]: s.reason for s in report.skipped}
    assert set(reasons) == {"4", "5"}
    assert "deeper than 64 levels" in reasons["4"] and "nested too deeply" in reasons["5"]
    one_line(report)


# -- 5: lone surrogates and names that are not UTF-8 -------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda col: col.add(["fine", "bad \ud800 text"]),
        lambda col: col.add(["fine"], keys=["k\udc80"]),
        lambda col: col.add(["fine"], metadata=[{"x": "\udfff"}]),
        lambda col: col.add(["fine"], metadata=[{"x\ud800": 1}]),
        lambda col: col.add(["fine"], metadata=[{"x": ["ok", {"y": "\ud800"}]}]),
    ],
)
def test_add_refuses_lone_surrogates(col, call):
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        call(col)
    assert len(col) == 0


def test_index_skips_records_with_lone_surrogates(col, tmp_path):
    bad = [
        '{"id": "t", "text": "bad \\ud800 text"}',
        '{"id": "k\\udc80", "text": "bad key"}',
        '{"id": "m", "text": "bad metadata", "x": "\\udfff"}',
        '{"id": "mk", "text": "bad metadata key", "\\ud800": 1}',
    ]
    f = write(tmp_path / "r.jsonl", "\n".join(good_lines(2) + bad + good_lines(4)[2:]))
    report = col.index_paths([f])
    assert report.added == 4 and len(report.skipped) == 4
    assert all("lone surrogate" in s.reason for s in report.skipped)
    one_line(report)


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes as a name")
def test_a_folder_with_a_file_name_that_is_not_utf8(col, tmp_path):
    folder = tmp_path / "docs"
    for i in range(5):
        write(folder / f"good{i}.txt", f"good text number {i}")
    bad = os.fsencode(folder) + b"/bad\xff name.txt"
    with open(bad, "wb") as fh:
        fh.write(b"text of a file whose name is Latin-1")
    report = col.index_paths([folder])
    assert report.added == 5
    [skipped] = report.skipped
    assert skipped.source == f"{folder.resolve()}/bad\\xff name.txt"  # printable, and writable as UTF-8
    assert "not UTF-8" in skipped.reason and "rename" in skipped.reason


# -- 6: PostgreSQL's limits, checked on every store ---------------------------------------------------


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda col: col.add(["nul \x00 in text"]), "NUL"),
        (lambda col: col.add(["fine"], metadata=[{"x": "nul \x00"}]), "NUL"),
        (lambda col: col.add(["fine"], metadata=[{"x\x00": 1}]), "NUL"),
        (lambda col: col.add(["fine"], keys=["nul\x00key"]), "control character"),
        (lambda col: col.add(["fine"], keys=["k" * (MAX_NAME_BYTES + 1)]), "2,049 bytes"),
        (lambda col: col.add(["fine"], keys=["漢" * 700]), "2,100 bytes"),  # 700 characters, 2,100 bytes
        (lambda col: col.add(["x " * (MAX_TEXT_BYTES // 2 + 1)]), "at most 524,288"),
    ],
)
def test_add_refuses_what_postgresql_cannot_hold_on_every_store(col, call, words):
    with pytest.raises(InvalidInputError, match=words) as err:
        call(col)
    assert "\n" not in str(err.value)
    assert len(col) == 0


def test_names_and_texts_at_the_limits_are_stored(col):
    col.add(["at the limit"], keys=["k" * MAX_NAME_BYTES])
    col.add(["at the limit in CJK"], keys=["漢" * (MAX_NAME_BYTES // 3)])
    # Distinct short words make PostgreSQL's tsvector largest (1.6 times the text): still fits.
    words = (f"{a}{b}{c}{d}" for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz"
             for c in "abcdefghijklmnopqrstuvwxyz" for d in "abcdefghijklmnopqrstuvwxyz")
    text = " ".join(next(words) for _ in range(MAX_TEXT_BYTES // 5))
    assert len(text.encode()) <= MAX_TEXT_BYTES
    col.add([text], keys=["big"])
    assert len(col) == 3
    assert [h.key for h in col.search("abcd", k=1, mode="lexical")] == ["big"]


def test_index_skips_each_input_over_a_limit_and_keeps_six_good_files(col, tmp_path):
    folder = tmp_path / "docs"
    for i in range(6):
        write(folder / f"good{i}.txt", f"good text number {i}")
    write_jsonl(folder / "bad.jsonl", [
        {"id": "nul", "text": "nul \x00 here"},
        {"id": "k" * (MAX_NAME_BYTES + 1), "text": "long key"},
        {"id": "meta", "text": "nul in metadata", "x": "a\x00b"},
        {"id": "sep\x1f1", "text": "a key holding the passage separator"},
    ])
    report = col.index_paths([folder])
    assert report.added == 6 and len(report.skipped) == 4
    one_line(report)


def test_a_long_text_is_split_when_chunking_and_refused_whole_when_not(col, tmp_path):
    big = " ".join(f"w{i}" for i in range(MAX_TEXT_BYTES // 4))
    f = write_jsonl(tmp_path / "big.jsonl", [{"id": "big", "text": big}, {"id": "small", "text": "small"}])
    report = col.index_paths([f], chunking=None)
    assert report.added == 1 and "at most 524,288" in report.skipped[0].reason
    report = col.index_paths([f])  # passages, each well under the limit
    assert report.added > 1 and report.skipped == []


# -- 8: passage keys and user keys ---------------------------------------------------------------------


def test_a_user_key_shaped_like_a_passage_key_is_its_own_item(col, tmp_path):
    long_text = " ".join(f"word{i}" for i in range(100))
    f = write_jsonl(tmp_path / "r.jsonl", [{"id": "doc", "text": long_text}, {"id": "doc#1", "text": "a record of its own"}])
    report = col.index_paths([f], chunking=SMALL)
    assert report.skipped == [] and report.added > 2
    assert {h.document for h in col.search("word1", k=100)} == {"doc", "doc#1"}
    [mine] = [h for h in col.search("a record of its own", k=100) if h.key == "doc#1"]
    assert mine.text == "a record of its own" and mine.document == "doc#1"
    passages = [h for h in col.search("word", k=100) if h.document == "doc"]
    assert {h.key for h in passages} == {f"doc{PASSAGE_SEPARATOR}{h.metadata['passage']}" for h in passages}
    # A second run that brings the record again alone replaces nothing of the document.
    g = write_jsonl(tmp_path / "s.jsonl", [{"id": "doc#1", "text": "the record, changed"}])
    report = col.index_paths([g], chunking=SMALL)
    assert report.updated == 1 and report.added == 0
    assert len([h for h in col.search("word", k=100) if h.document == "doc"]) == len(passages)


def test_a_user_key_may_not_hold_the_passage_separator(col):
    with pytest.raises(InvalidInputError, match="control character"):
        col.add(["x"], keys=[f"doc{PASSAGE_SEPARATOR}0"])


def test_a_collection_with_the_old_passage_keys_reads_and_updates(col, tmp_path):
    from sqlalchemy import func, update

    from latentsearch.stores.models import Item

    f = write(tmp_path / "long.txt", " ".join(f"alpha{i}" for i in range(80)))
    col.index_paths([f], chunking=SMALL)
    n = len(col)
    with col.store.engine.begin() as conn:  # as collections made before keyed their passages
        conn.execute(update(Item).values(key=func.replace(Item.key, PASSAGE_SEPARATOR, "#")))
    assert all("#" in h.key for h in col.search("alpha3", k=100))
    write(f, " ".join(f"beta{i}" for i in range(80)))  # the document changes: its passages are new
    report = col.index_paths([f], chunking=SMALL)
    assert report.removed == n and len(col) == report.added
    assert all(PASSAGE_SEPARATOR in h.key for h in col.search("beta3", k=100))
    assert col.verify()["missing_from_index"] == []


# -- 16 and the round trip: numbers the same on both databases ----------------------------------------

NUMBERS = {
    "i53": 2**53, "i53+1": 2**53 + 1, "i53-1": 2**53 - 1, "f53": 9007199254740992.0, "f53-1": 9007199254740991.0,
    "tenth": 0.1, "third": 1 / 3, "neg0": -0.0, "zero": 0, "e16": 1e16, "e300": 1e300, "max64": 2**63 - 1,
    "min64": -(2**63), "f63": 9.223372036854776e18, "big": 1.2345678901234568e18,
}


@pytest.fixture
def numbers(col):
    names = list(NUMBERS)
    col.add([f"number {n}" for n in names], metadata=[{"v": NUMBERS[n]} for n in names], keys=names)
    return col


def test_metadata_numbers_come_back_the_same_on_both_databases(numbers):
    got = {it.key: it.metadata["v"] for it in numbers.get(list(range(1, len(NUMBERS) + 1)))}
    assert got["f53"] == 2**53 and type(got["f53"]) is float and type(got["i53"]) is int
    assert got["tenth"] == 0.1 and got["third"] == 1 / 3
    assert math.copysign(1, got["neg0"]) == 1.0  # -0.0 is stored as 0.0 (a decimal has no -0)
    assert got["e16"] == 10**16 and type(got["e16"]) is int  # as PostgreSQL gives 1e16 back
    assert got["e300"] == 10**300 and got["big"] == 1234567890123456800
    assert got["max64"] == 2**63 - 1 and got["min64"] == -(2**63)


@pytest.mark.parametrize(
    "where, expected",
    [
        ({"v": 9007199254740992.0}, {"i53", "f53"}),
        ({"v": 2**53 + 1}, {"i53+1"}),
        ({"v": {"$ne": 9007199254740992.0}, "n": {"$exists": False}}, set(NUMBERS) - {"i53", "f53"}),
        ({"v": {"$gt": 9007199254740992.0, "$lt": 1e16}}, {"i53+1"}),
        ({"v": {"$gte": 9007199254740991.0, "$lte": 2**53}}, {"i53", "i53-1", "f53", "f53-1"}),
        ({"v": {"$in": [9007199254740992.0, 0.1]}}, {"i53", "f53", "tenth"}),
        ({"v": {"$nin": [2**53, 0.1, 0]}}, set(NUMBERS) - {"i53", "f53", "tenth", "zero", "neg0"}),
        ({"v": 1 / 3}, {"third"}),
        ({"v": -0.0}, {"zero", "neg0"}),
        ({"v": 1e300}, {"e300"}),
        ({"v": {"$gte": 1e300}}, {"e300"}),
        ({"v": 1.2345678901234568e18}, {"big"}),
        ({"v": 1234567890123456800}, {"big"}),
        ({"v": {"$gt": 2**63 - 1}}, {"e300", "f63"}),
        ({"v": 9.223372036854776e18}, {"f63"}),
        ({"v": -(2**63)}, {"min64"}),
    ],
)
def test_numeric_filters_agree_at_the_edges(numbers, where, expected):
    assert keys(numbers, where) == expected


def test_integers_beyond_64_bits_are_refused_unless_a_float_made_them(col):
    with pytest.raises(InvalidInputError, match="beyond 64-bit integers"):
        col.add(["x"], metadata=[{"v": 2**64}])
    with pytest.raises(InvalidInputError, match="beyond 64-bit integers"):
        keys(col, {"v": 2**64})
    col.add(["x"], metadata=[{"v": 10**300}], keys=["ok"])  # what 1e300 is stored as: it reads back
    assert keys(col, {"v": 10**300}) == {"ok"}


# -- error messages ---------------------------------------------------------------------------------


def test_a_1d_array_is_one_vector_says_the_error(hashing_collection):
    col = hashing_collection()
    with pytest.raises(InvalidInputError, match=r"1-D array .* one vector; pass a 2-D array of shape \(1, 64\)"):
        col.add(np.zeros(64, dtype=np.float32))
    with pytest.raises(InvalidInputError, match=r"2-D array of vectors.*\(2, 2, 16\)"):
        col.add(np.zeros((2, 2, 16), dtype=np.float32))


def test_a_text_file_over_the_limit_is_skipped_through_the_pipeline(col, tmp_path):
    write(tmp_path / "docs" / "small.txt", "small text")
    write(tmp_path / "docs" / "large.txt", "large text " * 100)
    report = col.index_paths([tmp_path / "docs"], RecordFields(max_text_bytes=500))
    assert report.added == 1
    [skipped] = report.skipped
    assert Path(skipped.source).name == "large.txt" and "over the limit of 500" in skipped.reason
