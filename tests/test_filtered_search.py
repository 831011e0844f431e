"""Filtered search (query/filtered.py through Collection.search/search_batch and the CLI).

Recall@10 against exact filtered search (numpy over the matching vectors) for Flat, HNSW32 and
IVF64,Flat at 50%, 10%, 1% and 0.1% selectivity of 20,000 seeded synthetic vectors, both with
the default strategy and with the index forced for every selectivity; k results whenever k items
match, fewer only when fewer match.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from latentsearch.cli import cli
from latentsearch.collection import Collection
from latentsearch.errors import InvalidInputError
from latentsearch.ingest.records import Record
from latentsearch.query import filtered
from latentsearch.vectors import exact_search, knn
from helpers import write_jsonl  # noqa: E402

N, DIM, NQ, K = 20_000, 32, 50, 10
SPECS = ["Flat", "HNSW32", "IVF64,Flat"]
# bucket is a random permutation of 0..999 repeated: selectivity independent of the vectors.
SELECTIVITY = {
    "50%": ({"bucket": {"$lt": 500}}, lambda b: b < 500),
    "10%": ({"bucket": {"$lt": 100}}, lambda b: b < 100),
    "1%": ({"bucket": {"$gte": 990}}, lambda b: b >= 990),
    "0.1%": ({"bucket": 7}, lambda b: b == 7),
}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    """100 overlapping Gaussian clusters (an IVF64 index finds ~99.7% of the unfiltered top 10)."""
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((100, DIM)) * 1.25
    x = centers[rng.integers(0, 100, N)] + rng.standard_normal((N, DIM))
    q = centers[rng.integers(0, 100, NQ)] + rng.standard_normal((NQ, DIM))
    return {"x": x.astype(np.float32), "q": q.astype(np.float32), "bucket": rng.permutation(N) % 1000}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, data: dict[str, np.ndarray]) -> Iterator[Collection]:
    col = Collection.create(tmp_path_factory.mktemp("filtered") / "col", encoder=None, dim=DIM, index="Flat")
    ids = col.add(data["x"], metadata=[{"bucket": int(b)} for b in data["bucket"]])
    col.ids = np.array(ids)  # type: ignore[attr-defined]
    yield col
    col.close()


@pytest.fixture(scope="module", params=SPECS)
def col(request: pytest.FixtureRequest, base: Collection) -> Collection:
    base.reindex(request.param)
    return base


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    faiss = pytest.importorskip("faiss")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # deterministic HNSW; no OpenMP contention on small batches
    yield
    faiss.omp_set_num_threads(before)


def exact_truth(data: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray, k: int = K) -> np.ndarray:
    _, pos = knn(unit(data["q"]), unit(data["x"][mask]), k, "cosine")
    return np.where(pos >= 0, ids[mask][np.maximum(pos, 0)], -1)


def recall(hits: list[list], truth: np.ndarray) -> float:
    return float(np.mean([len({h.id for h in row} & set(t[t >= 0].tolist())) / K for row, t in zip(hits, truth)]))


@pytest.mark.parametrize("forced", [False, True], ids=["default", "index-forced"])
@pytest.mark.parametrize("share", list(SELECTIVITY))
def test_filtered_recall_and_k_results(col, data, share, forced, monkeypatch):
    if forced:
        monkeypatch.setattr(filtered, "EXACT_LIMIT", 0)
    where, pick = SELECTIVITY[share]
    mask = pick(data["bucket"])
    hits, stats = col.search_batch_with_stats(list(data["q"]), K, where=where)
    assert stats.matches == int(mask.sum())
    assert all(len(row) == K for row in hits)
    allowed = set(col.ids[mask].tolist())
    assert all(h.id in allowed and where_ok(h.metadata, pick) for row in hits for h in row)
    assert all(row[i].score >= row[i + 1].score for row in hits for i in range(K - 1))
    assert recall(hits, exact_truth(data, col.ids, mask)) >= 0.99
    hnsw_too_sparse = col.config.index == "HNSW32" and share in ("1%", "0.1%")
    indexed = (forced and not hnsw_too_sparse) or stats.matches > 4096
    assert stats.strategy == ("index" if indexed else "exact")


def where_ok(metadata: dict, pick) -> bool:
    return bool(pick(np.array(metadata["bucket"])))


def test_short_rows_go_deeper_then_exact(base, data, monkeypatch, request):
    """Start HNSW as shallow as an unfiltered search and ask for all 20 matches of the 0.1%
    filter: rows come back short, are searched deeper, and what is still short is finished
    exactly; every row ends with every match."""
    spec = base.config.index
    base.reindex("HNSW32")
    request.addfinalizer(lambda: base.reindex(spec))  # the module's other tests share `base`
    monkeypatch.setattr(filtered, "EXACT_LIMIT", 0)
    shallow = filtered.deeper
    monkeypatch.setattr(filtered, "deeper", lambda index, s, boost, k, base=None: shallow(index, 1.0, boost, k, base))
    where, pick = SELECTIVITY["0.1%"]
    matches = set(base.ids[pick(data["bucket"])].tolist())
    assert len(matches) == 20
    hits, stats = base.search_batch_with_stats(list(data["q"][:10]), 20, where=where)
    assert stats.strategy == "index" and stats.rounds == filtered.DEEPER_ROUNDS and stats.exact_rows > 0
    assert all({h.id for h in row} == matches for row in hits)
    assert all(row[i].score >= row[i + 1].score for row in hits for i in range(19))


@pytest.mark.parametrize("forced", [False, True], ids=["default", "index-forced"])
def test_fewer_matches_than_k(col, data, forced, monkeypatch):
    if forced:
        monkeypatch.setattr(filtered, "EXACT_LIMIT", 0)
    three = [int(i) for i in col.ids[[5, 500, 5000]]]
    hits, stats = col.search_batch_with_stats(list(data["q"][:3]), K, where={"id": {"$in": three}})
    assert [sorted(h.id for h in row) for row in hits] == [sorted(three)] * 3
    assert stats.matches == 3
    (none,), stats = col.search_batch_with_stats([data["q"][0]], K, where={"bucket": {"$gt": 5000}})
    assert none == []
    assert stats.matches == 0 and stats.strategy == "none"
    assert col.search_batch_with_stats([data["q"][0]], K)[1] is None


def test_query_by_id_with_a_filter_leaves_the_item_out(col, data):
    item = int(col.ids[np.flatnonzero(data["bucket"] == 7)[0]])
    hits = col.search(item, K, where={"bucket": 7})
    assert len(hits) == K and item not in {h.id for h in hits}
    assert all(h.metadata["bucket"] == 7 for h in hits)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_exact_and_index_strategies_agree(tmp_path, data, metric, monkeypatch):
    """The same hits and scores from the stored vectors as from a Flat index, for every metric."""
    col = Collection.create(tmp_path / metric, encoder=None, dim=DIM, index="Flat", metric=metric)
    col.add(data["x"][:3000], metadata=[{"bucket": int(b)} for b in data["bucket"][:3000]])
    where = {"bucket": {"$lt": 300}}
    exact, stats = col.search_batch_with_stats(list(data["q"][:5]), K, where=where)
    assert stats.strategy == "exact"
    monkeypatch.setattr(filtered, "EXACT_LIMIT", 0)
    indexed, stats = col.search_batch_with_stats(list(data["q"][:5]), K, where=where)
    assert stats.strategy == "index"
    assert [[h.id for h in row] for row in exact] == [[h.id for h in row] for row in indexed]
    scores = np.array([[h.score for h in row] for row in exact]), np.array([[h.score for h in row] for row in indexed])
    np.testing.assert_allclose(*scores, rtol=1e-4, atol=1e-4)
    col.close()


def test_exact_search_merges_batches_like_one():
    rng = np.random.default_rng(1)
    xb, xq = rng.standard_normal((1000, 8)).astype(np.float32), rng.standard_normal((4, 8)).astype(np.float32)
    ids = np.arange(1000, 2000)
    for metric in ("ip", "l2"):
        whole = exact_search(xq, [(ids, xb)], 7, metric)
        parts = exact_search(xq, [(ids[i : i + 90], xb[i : i + 90]) for i in range(0, 1000, 90)], 7, metric)
        np.testing.assert_array_equal(whole[1], parts[1])
        _, i = exact_search(xq, [(ids[:3], xb[:3])], 5, metric)
        assert (i[:, 3:] == -1).all() and (i[:, :3] >= 0).all()


# -- the collection API on both databases ----------------------------------------------------


def test_collection_search_with_where(store_url, hashing_collection):
    col = hashing_collection(store=None if store_url.startswith("sqlite") else store_url)
    texts = ["rockets reach orbit", "a comet near the sun", "tides and the moon", "oil paint on canvas", "a sonnet"]
    topics = ["space", "space", "sea", "art", None]
    col.add(texts, metadata=[{"topic": t, "n": i} if t else {"n": i} for i, t in enumerate(topics)], keys=list("abcde"))
    (hits,), stats = col.search_batch_with_stats(["the moon and the sun"], k=5, where={"topic": "space"})
    assert {h.key for h in hits} == {"a", "b"}
    assert stats.matches == 2
    batch = col.search_batch(["orbit", "canvas"], k=3, where={"$or": [{"topic": "art"}, {"n": {"$gte": 4}}]})
    assert [{h.key for h in row} for row in batch] == [{"d", "e"}, {"d", "e"}]
    assert col.search("orbit", k=3, where={"topic": "nothing"}) == []
    with pytest.raises(InvalidInputError, match=r"unknown operator '\$gtt'"):
        col.search("orbit", where={"n": {"$gtt": 1}})


def test_group_by_document_with_where(hashing_collection):
    col = hashing_collection()
    records = [
        Record(text=f"passage {p} of {doc} about {topic}", key=f"{doc}#{p}", document=doc, metadata={"topic": topic})
        for doc, topic in [("d1", "space"), ("d2", "space"), ("d3", "art"), ("d4", "space")]
        for p in range(6)
    ]
    col.add_records(records, on_conflict="error")
    hits = col.search("passage about space", k=3, group_by="document", where={"topic": "space"})
    assert sorted(h.document for h in hits) == ["d1", "d2", "d4"]
    hits = col.search("passage", k=5, group_by="document", where={"topic": "art"})
    assert [h.document for h in hits] == ["d3"]


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_col(tmp_path: Path) -> Path:
    data = tmp_path / "notes.jsonl"
    rows = [
        {"text": "rockets reach orbit", "topic": "space"},
        {"text": "a comet near the sun", "topic": "space"},
        {"text": "tides and the moon", "topic": "sea"},
    ]
    write_jsonl(data, rows)
    result = CliRunner().invoke(cli, ["index", str(tmp_path / "col"), str(data), "--encoder", "hashing:64", "-q"])
    assert result.exit_code == 0, result.output
    return tmp_path / "col"


def run_search(col: Path, *args: str):
    return CliRunner().invoke(cli, ["search", str(col), *args])


def test_cli_where(cli_col):
    result = run_search(cli_col, "the sun", "--where", '{"topic": "space"}', "--json")
    assert result.exit_code == 0, result.output
    assert {h["metadata"]["topic"] for h in json.loads(result.stdout)} == {"space"}
    result = run_search(cli_col, "the sun", "--where", '{"topic": "space"}', "-k", "5")
    assert result.exit_code == 0 and "2 items match the filter" in result.stderr
    result = run_search(cli_col, "the sun", "--where", '{"topic": "none"}')
    assert result.exit_code == 0 and "no item matches the filter" in result.stdout


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ('{"topic": space}', ["--where is not valid JSON", "character"]),
        ("[1, 2]", ["--where must be a JSON object"]),
        ('{"topic": {"$regex": "s"}}', ["unknown operator '$regex'", "$eq"]),
    ],
)
def test_cli_bad_where_is_one_line(cli_col, where, words):
    result = run_search(cli_col, "the sun", "--where", where)
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error:"), result.stderr
    assert all(w in errors[0] for w in words), errors[0]
