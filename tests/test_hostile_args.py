"""Hostile arguments to the library: counts of results beyond anything an index holds, ids beyond
64-bit integers, index specs FAISS accepts and then crashes on, filters nested past every
recursion limit, and interpolations of a billion steps. Each is a result or an
:class:`InvalidInputError` that says what to do, never an aborted process, a MemoryError, an
OverflowError or a RecursionError. What could abort the process runs in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentsearch.collection import Collection
from latentsearch.errors import InvalidInputError, UnknownSpecError
from latentsearch.indexes.selection import (
    MAX_SEARCH_OPTION,
    IndexSpec,
    check_factory,
    choose_auto,
)
from latentsearch.query.latent import MAX_STEPS, interpolation_points
from latentsearch.query.searcher import MAX_K, MAX_WHERE_LOGIC, check_k, check_where_shape

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["cats purr on the mat", "dogs bark at night", "boats float on water", "ships sail the sea", "planes fly high"]
HUGE_KS = (2**31, 10**9, MAX_K)


def run_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter that imports this checkout: an abort there fails the test,
    not the test run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=timeout)


def make(hashing_collection: Any, store_url: str, name: str = "col") -> Collection:
    col = hashing_collection(name, store=None if store_url.startswith("sqlite") else store_url)
    col.add(TEXTS, metadata=[{"n": i} for i in range(len(TEXTS))], keys=[f"k{i}" for i in range(len(TEXTS))])
    return col


# -- 11. huge k ------------------------------------------------------------------------------------

HUGE_K_SCRIPT = r"""
import json, sys
from latentsearch.collection import Collection

col = Collection.open(sys.argv[1])
first = int(sys.argv[2])
out = {}
for k in (2**31, 10**9, 2**63 - 1):
    out[str(k)] = {
        "search": len(col.search("cats", k=k)),
        "batch": [len(r) for r in col.search_batch(["cats", "ships"], k=k)],
        "documents": len(col.search("cats", k=k, group_by="document")),
        "where": len(col.search("cats", k=k, where={"n": {"$gte": 2}})),
        "lexical": len(col.search("cats", k=k, mode="lexical")),
        "hybrid": len(col.search("cats", k=k, mode="hybrid")),
        "lexical_documents": len(col.search("cats", k=k, mode="lexical", group_by="document")),
        "hybrid_documents": len(col.search("cats", k=k, mode="hybrid", group_by="document", where={"n": {"$lt": 4}})),
        "by_id": len(col.search(first, k=k)),
        "clusters": sum(c.size for c in col.clusters("cats", k=k)),
        "mmr": len(col.search_mmr("cats", k=k, fetch_k=k)),
        "mmr_by_id": len(col.search_mmr(first, k=k, fetch_k=k)),
        "combination": len(col.search_combination(f'"cats" + #{first}', k=k)),
        "interpolate": [len(h) for _, h in col.interpolate("cats", "ships", steps=3, k=k)],
        "nearest_clusters": len(col.nearest_clusters("cats", k=k)),
    }
col.close()
print(json.dumps(out))
"""


def test_huge_k_returns_every_item_and_never_aborts(store_url, hashing_collection):
    """k of 2**31 made FAISS abort the process (std::bad_alloc), 10**9 raised MemoryError: a
    search is clamped to the items there are, in every method that takes a count."""
    col = make(hashing_collection, store_url)
    first = int(col.store.ids()[0])
    col.cluster(2)
    col.close()
    done = run_python(HUGE_K_SCRIPT, str(col.path), str(first))
    assert done.returncode == 0, done.stderr[-2000:]
    n = len(TEXTS)
    expected = {
        "search": n, "batch": [n, n], "documents": n, "where": n - 2, "lexical": 1, "hybrid": n,
        "lexical_documents": 1, "hybrid_documents": n - 1,
        "by_id": n - 1, "clusters": n, "mmr": n, "mmr_by_id": n - 1, "combination": n - 1,
        "interpolate": [n, n, n], "nearest_clusters": 2,
    }
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(results) == {str(k) for k in HUGE_KS}
    for k, got in results.items():
        assert got == expected, k


@pytest.mark.parametrize("k", [2**63, 10**30, 10**5000], ids=["2**63", "10**30", "10**5000"])
def test_k_beyond_int64_is_a_clear_error_everywhere(hashing_collection, k):
    col = make(hashing_collection, "sqlite")
    col.cluster(2)
    calls = {
        "search": lambda: col.search("cats", k=k),
        "search_batch": lambda: col.search_batch(["cats"], k=k),
        "clusters": lambda: col.clusters("cats", k=k),
        "search_mmr": lambda: col.search_mmr("cats", k=k),
        "fetch_k": lambda: col.search_mmr("cats", k=3, fetch_k=k),
        "interpolate": lambda: col.interpolate("cats", "ships", k=k),
        "nearest_clusters": lambda: col.nearest_clusters("cats", k=k),
        "search_combination": lambda: col.search_combination('"cats"', k=k),
    }
    for name, call in calls.items():
        with pytest.raises(InvalidInputError) as err:
            call()
        message = str(err.value)
        assert "beyond 64-bit integers" in message and str(MAX_K) in message, name
        assert len(message) < 300, name  # a 5,000-digit k is described, not printed


def test_check_k_is_the_one_place_that_validates_k():
    assert check_k(MAX_K) == MAX_K
    assert check_k(np.int64(5)) == 5
    for bad in (0, -1, -(10**5000), 2.0, "3", True, None):
        with pytest.raises(InvalidInputError, match="must be a positive integer"):
            check_k(bad)
    with pytest.raises(InvalidInputError, match="fetch_k is 9223372036854775808, beyond 64-bit"):
        check_k(2**63, "fetch_k")


# -- 12. ids beyond 64 bits -----------------------------------------------------------------------

BAD_IDS = [2**63, 2**64 + 5, -(2**63) - 1, 10**30]


def test_ids_beyond_int64_are_not_ids_of_the_collection(store_url, hashing_collection):
    """They raised a raw OverflowError from the database driver: now get leaves them out,
    search by id says there is no such item, delete reports them as not found."""
    col = make(hashing_collection, store_url)
    ids = [int(i) for i in col.store.ids()]
    assert [item.id for item in col.get(BAD_IDS + [ids[0]])] == [ids[0]]
    assert col.get(BAD_IDS) == []
    found, vectors = col.store.vectors(BAD_IDS + [ids[1]])
    assert found.tolist() == [ids[1]] and vectors.shape == (1, 64)
    assert set(col.store.get(BAD_IDS + [ids[2]])) == {ids[2]}
    for bad in BAD_IDS:
        with pytest.raises(InvalidInputError, match=f"no item with id {bad} in this collection"):
            col.search(bad)
        with pytest.raises(InvalidInputError, match=f"no item with id {bad}"):
            col.search_mmr(bad)
    with pytest.raises(InvalidInputError, match="no item with id 99999999999999999999 in"):
        col.search_combination('"cats" - #99999999999999999999')
    with pytest.raises(InvalidInputError, match="no item with id 99999999999999999999 in"):
        col.interpolate(ids[0], 99999999999999999999)
    deleted = col.delete(ids=BAD_IDS + [ids[3]])
    assert int(deleted) == 1 and deleted.missing_ids == BAD_IDS
    assert len(col) == len(TEXTS) - 1


def test_an_id_too_long_to_convert_is_described_not_printed(hashing_collection):
    col = make(hashing_collection, "sqlite")
    with pytest.raises(InvalidInputError, match="no item with id <a 16610-bit integer> in this collection"):
        col.search(10**5000)
    with pytest.raises(InvalidInputError, match=r"\(5000 digits\) in this collection"):
        col.search_combination("#" + "9" * 5000)


# -- 13. index specs FAISS would crash on ------------------------------------------------------------

BAD_SPECS = [
    "HNSW0", "HNSW1", "HNSW100000", "IVF0,Flat", "IVF4_HNSW0,Flat", "PQ7", "PQ8x20", "PQ8x0", "PQ4x0",
    "OPQ0,IVF4,PQ4", "OPQ7,IVF4,PQ4", "OPQ4_0,IVF4,PQ4", "PCA0,Flat", "PCA32,Flat", "RR0,Flat", "NSG0",
    "NSG32", "RQ1x0", "LSQ8x20", "HNSW4_PQ4x0", "IVF4,Flat,Refine(PQ4x0)", "IVF4,Flat,RFlat", "IDMap2,Flat",
    "IVF99999999999999999999,Flat", "HNSW" + "9" * 5000, "PQ4x5fs", "SQ9", "IVF4(PQ4", "Bogus12",
]

BAD_SPEC_SCRIPT = r"""
import json, sys
import numpy as np
from latentsearch.indexes.faiss_index import FaissIndex
from latentsearch.errors import LatentSearchError

x = np.random.default_rng(0).standard_normal((400, 16)).astype("float32")
out = {}
for spec in json.loads(sys.argv[1]):
    try:
        index = FaissIndex(spec, 16, "cosine")
        index.add(np.arange(400), x)
        index.search(x[:2], 5)
        out[spec] = "built"
    except LatentSearchError as exc:
        out[spec] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


def test_bad_index_specs_are_refused_before_faiss_sees_them():
    """HNSW0 and IVF4_HNSW0 aborted the process on a FAISS assertion, HNSW1, PQ4x0, RR0 and
    RQ1x0 segfaulted, NSG hung, PQ8x0 divided by zero: every one is an UnknownSpecError naming
    the spec, raised before FAISS builds anything."""
    done = run_python(BAD_SPEC_SCRIPT, json.dumps(BAD_SPECS))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for spec in BAD_SPECS:
        assert results[spec].startswith("UnknownSpecError: index spec "), (spec, results[spec])
        assert spec[:20] in results[spec], (spec, results[spec])
        assert "FAISS cannot build" not in results[spec], (spec, results[spec])


@pytest.mark.parametrize(
    "spec, dim, words",
    [
        ("HNSW0", 16, ["'HNSW0' asks for 0 neighbours per node", "2 to 256", "HNSW32"]),
        ("IVF0,Flat", 16, ["'IVF0' asks for 0 lists", "IVF1024"]),
        ("PQ7", 16, ["PQ7 splits 16 dimensions into 7", "divisor of 16", "PQ8"]),
        ("PQ8x20", 16, ["20 bits per code", "1 to 16", "PQ8x8"]),
        ("OPQ7,IVF4,PQ4", 16, ["OPQ7 splits 16 dimensions", "OPQ8"]),
        ("PCA8,PQ3", 16, ["PQ3 splits 8 dimensions"]),  # PQ after PCA sees 8 dimensions
        ("NSG32", 16, ["cannot add vectors once built", "HNSW32"]),
        ("IDMap,HNSW32", 16, ["is not needed", "drop it: HNSW32"]),
        ("IVF4,Flat,RFlat", 16, ["cannot take the store's ids"]),
        ("HNSW" + "9" * 5000, 16, ["a 5000-digit number of neighbours"]),
    ],
)
def test_check_factory_says_what_is_wrong_and_what_to_write(spec, dim, words):
    with pytest.raises(UnknownSpecError) as err:
        check_factory(spec, dim)
    message = str(err.value)
    assert f"for dimension {dim}" in message and len(message) < 400
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(
    "spec",
    ["Flat", "HNSW2", "HNSW32", "HNSW256", "HNSW32,Flat", "HNSW32_PQ8", "HNSW32_SQ8", "IVF1024,Flat",
     "IVF16_HNSW32,Flat", "IVF1024,PQ16", "IVF16,PQ8x4", "IVF16,PQ16x4fs", "PQ8x16", "OPQ16,IVF1024,PQ16",
     "OPQ16_32,IVF16,PQ16", "PCA32,IVF16,Flat", "PCAR16,IVF16,Flat", "RR64,Flat", "Pad128,Flat", "L2norm,Flat",
     "SQ8", "SQfp16", "IVF16,SQ8", "RQ4x8", "LSQ4x8", "PRQ2x4x8", "PQ16,RFlat", "SQ8,Refine(PQ16)", "LSH"],
)
def test_check_factory_accepts_good_specs(spec):
    check_factory(spec, 64)


def test_auto_specs_pass_the_check():
    for n in (10, 200_000, 10**9):
        for dim in (16, 64, 384, 768, 1000):
            check_factory(choose_auto(n, dim), dim)


def test_search_options_are_bounded():
    assert IndexSpec.parse(f"HNSW32?efSearch={MAX_SEARCH_OPTION}").search == {"efSearch": MAX_SEARCH_OPTION}
    for text in ("HNSW32?efSearch=99999999999", "IVF16,Flat?nprobe=4294967296", "HNSW32,Flat?efSearch=0"):
        with pytest.raises(InvalidInputError, match="efSearch|nprobe"):
            IndexSpec.parse(text)


REINDEX_SCRIPT = r"""
import json, sys
from latentsearch.collection import Collection
from latentsearch.errors import LatentSearchError

out = {}
with Collection.open(sys.argv[1]) as col:
    for spec in ("HNSW0", "HNSW1", "IVF0,Flat", "HNSW32,Flat?efSearch=0", "HNSW32?efSearch=99999999999"):
        try:
            col.reindex(spec)
            out[spec] = "rebuilt"
        except LatentSearchError as exc:
            out[spec] = str(exc)
    out["index"] = col.config.index
    out["hits"] = len(col.search("cats", k=3))
print(json.dumps(out))
"""


def test_reindex_with_a_bad_spec_keeps_the_collection(hashing_collection):
    """``reindex --index HNSW0`` aborted the process on a FAISS assertion."""
    col = make(hashing_collection, "sqlite")
    col.close()
    done = run_python(REINDEX_SCRIPT, str(col.path))
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.pop("index") == "Flat" and out.pop("hits") == 3
    assert all(v != "rebuilt" for v in out.values()), out


# -- 14. filters nested past every limit ----------------------------------------------------------


def nest(inner: Any, levels: int, wrap: Any) -> Any:
    for _ in range(levels):
        inner = wrap(inner)
    return inner


def deep_filters() -> dict[str, Any]:
    cycle: dict[str, Any] = {"n": 1}
    cycle["$and"] = [cycle]
    shared = nest({"n": 1}, 20, lambda w: {"$and": [w, w]})  # 2**20 paths through one object
    return {
        "field $not x1000": {"n": nest({"$gt": 1}, 1000, lambda w: {"$not": w})},
        "$not x10000": nest({"n": 1}, 10_000, lambda w: {"$not": w}),
        "$and x5000": nest({"n": 1}, 5000, lambda w: {"$and": [w]}),
        "$or/$and x30": nest({"n": 1}, 30, lambda w: {"$or": [{"$and": [w, {"n": 2}]}, {"n": 3}]}),
        "$not x25": nest({"n": 1}, 25, lambda w: {"$not": w}),  # SQLite's parser overflowed at 28
        "field $not x28": {"n": nest({"$gt": 1}, 28, lambda w: {"$not": w})},
        "a cycle": cycle,
        "one sub-filter shared 2**20 times": shared,
        "lists in lists": {"n": {"$in": nest([1], 5000, lambda w: [w])}},
    }


@pytest.mark.parametrize("name", list(deep_filters()))
def test_deep_python_filters_are_invalid_input(store_url, hashing_collection, name):
    """A filter nested deeper than Python's recursion limit raised RecursionError from the
    filter compiler, and 28 nested $not a database 'parser stack overflow'."""
    col = make(hashing_collection, store_url)
    where = deep_filters()[name]
    for call in (lambda: col.search("cats", where=where), lambda: col.search("cats", where=where, mode="lexical")):
        with pytest.raises(InvalidInputError) as err:
            call()
        message = str(err.value)
        assert len(message) < 300 and ("levels deep" in message or "conditions and values" in message), message


def test_filters_up_to_the_limit_still_work(store_url, hashing_collection):
    col = make(hashing_collection, store_url)
    # MAX_WHERE_LOGIC levels mixing $and, $or, logical and field $not: compiles on both databases
    field = nest({"$in": [0, 1, 2]}, 6, lambda w: {"$not": w})
    where: Any = {"n": field}
    for i in range(MAX_WHERE_LOGIC - 6):
        where = [{"$not": where}, {"$or": [where, {"n": 9}]}, {"$and": [{"n": {"$ne": 9}}, where]}][i % 3]
    check_where_shape(where)
    hits = col.search("cats", k=10, where=where)
    assert len(hits) == col.store.count_where(where)
    with pytest.raises(InvalidInputError, match="nests \\$and, \\$or and \\$not more than 24"):
        col.search("cats", where={"$not": where})


def test_check_where_shape_walks_without_recursion():
    check_where_shape({"n": {"$in": list(range(10_000))}})
    with pytest.raises(InvalidInputError, match="objects and lists more than"):
        check_where_shape(nest(1, 100_000, lambda w: [w]))  # far beyond the recursion limit


# -- interpolation steps --------------------------------------------------------------------------


def test_interpolation_steps_are_bounded_before_anything_is_encoded(hashing_collection, monkeypatch):
    col = make(hashing_collection, "sqlite")
    monkeypatch.setattr(col.searcher, "query_vectors", lambda queries: pytest.fail("encoded first"))
    for steps in (10**9, MAX_STEPS + 1, 10**5000, 1, 2.5):
        with pytest.raises(InvalidInputError, match=f"steps must be an integer from 2 to {MAX_STEPS}"):
            col.interpolate("cats", "ships", steps=steps)
    with pytest.raises(InvalidInputError, match="steps must be"):
        interpolation_points(np.ones(4), np.ones(4), 10**9, "cosine")
    monkeypatch.undo()
    walk = col.interpolate("cats", "ships", steps=MAX_STEPS, k=1)
    assert len(walk) == MAX_STEPS and walk[-1][0] == 1.0
