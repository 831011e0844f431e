"""Quantised and binary indexes with ``?rescore=R``: R x k candidates re-ranked exactly by the
stored float vectors (indexes/rescore.py), through FaissIndex and through a collection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from latentsearch.collection import Collection  # noqa: E402
from latentsearch.errors import InvalidInputError, UnknownSpecError  # noqa: E402
from latentsearch.indexes.binary_index import BinaryIndex  # noqa: E402
from latentsearch.indexes.faiss_index import FaissIndex  # noqa: E402
from latentsearch.indexes.rescore import rescore  # noqa: E402
from latentsearch.indexes.selection import MAX_RESCORE, IndexSpec  # noqa: E402
from latentsearch.vectors import knn, normalize  # noqa: E402

DIM, N, NQ, K = 32, 900, 30, 10
METRICS = ("cosine", "ip", "l2")


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def data(metric: str, n: int = N, dim: int = DIM, seed: int = 0):
    """``(ids, xb, xq, source)``: clustered vectors with large shuffled ids and a store-like source."""
    rng = np.random.default_rng(seed)
    centers = 2 * rng.standard_normal((20, dim))
    xb = (centers[rng.integers(0, 20, n)] + rng.standard_normal((n, dim))).astype(np.float32)
    xq = (centers[rng.integers(0, 20, NQ)] + rng.standard_normal((NQ, dim))).astype(np.float32)
    if metric == "cosine":
        xb, xq = normalize(xb), normalize(xq)
    ids = (rng.permutation(n).astype(np.int64) * 7919 + (1 << 40)).astype(np.int64)
    row = {int(i): p for p, i in enumerate(ids)}

    def source(wanted: np.ndarray):
        found = np.array([i for i in np.asarray(wanted).tolist() if i in row], dtype=np.int64)
        return found, xb[[row[i] for i in found.tolist()]]

    return ids, xb, xq, source


def exact(ids, xb, xq, k, metric):
    D, pos = knn(xq, xb, k, metric)
    return D, ids[pos]


def build(spec: str, metric: str, ids, xb, source=None) -> FaissIndex:
    parsed = IndexSpec.parse(spec)
    index = FaissIndex(parsed.factory, xb.shape[1], metric, parsed.search)
    index.vectors = source
    index.add(ids, xb)
    assert index.trained
    return index


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))


# -- exactness --------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize(
    "spec", ["SQ8", "PQ8x4", "IVF8,SQ8?nprobe=8", "HNSW16,SQ8", "binary", "binary,HNSW16"]
)
def test_rescore_covering_the_collection_is_exact(spec: str, metric: str) -> None:
    """R x k >= the collection: every vector is a candidate, so the answer is the exact top k."""
    ids, xb, xq, source = data(metric)
    index = build(spec, metric, ids, xb, source)
    D, I = index.search(xq, K, options={**index.search_options, "rescore": MAX_RESCORE})
    D0, I0 = exact(ids, xb, xq, K, metric)
    np.testing.assert_array_equal(I, I0)
    np.testing.assert_allclose(D, D0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("spec", ["PQ8x4", "binary"])
def test_rescore_improves_recall(spec: str, metric: str) -> None:
    ids, xb, xq, source = data(metric, n=3000)
    index = build(spec, metric, ids, xb, source)
    _, truth = exact(ids, xb, xq, K, metric)
    plain = recall(index.search(xq, K)[1], truth)
    rescored = recall(index.search(xq, K, options={"rescore": 10})[1], truth)
    assert rescored > plain + 0.1, (plain, rescored)
    assert rescored >= 0.7  # binary on ip (unnormalised vectors) is the weakest: 0.79 measured


def test_rescore_function_drops_missing_candidates_and_pads() -> None:
    ids, xb, xq, source = data("ip", n=50)
    I = np.array([[ids[0], ids[1], -1, 12345]], dtype=np.int64)  # 12345: deleted since the search
    D, out = rescore(xq[:1], I, 3, source, "ip")
    assert set(out[0, :2].tolist()) == {ids[0], ids[1]} and out[0, 2] == -1
    assert D[0, 0] >= D[0, 1] and D[0, 2] == -np.inf
    np.testing.assert_allclose(sorted(D[0, :2], reverse=True), sorted(xb[:2] @ xq[0], reverse=True), rtol=1e-5)


def test_without_a_vector_source_the_index_scores_are_returned() -> None:
    ids, xb, xq, _ = data("l2", n=1000)
    index = build("PQ8x4?rescore=4", "l2", ids, xb, None)
    D, I = index.search(xq, K)
    assert I.shape == (NQ, K) and (I >= 0).all()


# -- through a collection: filtered searches rescore too -------------------------------------------


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory):
    rng = np.random.default_rng(3)
    n = 6000
    x = rng.standard_normal((n, 16)).astype(np.float32)
    col = Collection.create(tmp_path_factory.mktemp("rescore") / "col", encoder=None, dim=16,
                            index="IVF8,PQ4x4?rescore=8&nprobe=8")
    ids = np.array(col.add(x, metadata=[{"bucket": int(i % 10)} for i in range(n)]))
    yield col, ids, normalize(x), rng.standard_normal((5, 16)).astype(np.float32)
    col.close()


def test_collection_search_returns_exact_scores(collection) -> None:
    col, ids, xb, xq = collection
    assert col.index().rescore == 8
    for q in xq:
        hits = col.search(q, k=K)
        assert len(hits) == K
        stored = dict(zip(ids.tolist(), xb))
        exact_scores = [float(stored[h.id] @ normalize(q[None])[0]) for h in hits]
        np.testing.assert_allclose([h.score for h in hits], exact_scores, rtol=1e-5, atol=1e-5)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_filtered_search_with_rescore(collection) -> None:
    col, ids, xb, xq = collection
    where = {"bucket": {"$lt": 8}}  # 4,800 matches: above the exact-search limit, so the index
    hits, stats = col.search_batch_with_stats(list(xq), k=K, where=where)
    assert stats.strategy == "index"
    stored = dict(zip(ids.tolist(), xb))
    bucket = dict(zip(ids.tolist(), np.arange(len(ids)) % 10))
    for q, row in zip(xq, hits):
        assert len(row) == K and all(bucket[h.id] < 8 for h in row)
        exact_scores = [float(stored[h.id] @ normalize(q[None])[0]) for h in row]
        np.testing.assert_allclose([h.score for h in row], exact_scores, rtol=1e-5, atol=1e-5)


def test_info_reports_the_index_bytes_in_ram(collection) -> None:
    col, *_ = collection
    info = col.info()
    assert info["rescore"] == 8
    assert 0 < info["index_ram_bytes"] < 6000 * 16 * 4 / 2  # 2-byte PQ codes + ids, not float32


# -- specs and errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "x", "", "1.5", str(MAX_RESCORE + 1), "9" * 40])
def test_bad_rescore_values(value: str) -> None:
    with pytest.raises(InvalidInputError, match="rescore"):
        IndexSpec.parse(f"IVF16,SQ8?rescore={value}")


def test_rescore_spec_round_trip_and_recall() -> None:
    spec = IndexSpec.parse("HNSW32,SQ8?rescore=4&recall=0.9")
    assert spec.search == {"rescore": 4} and spec.recall == 0.9 and spec.rescore == 4
    assert IndexSpec.parse(str(spec)) == spec
    assert IndexSpec.parse("auto?rescore=3").target is not None  # rescore is not a search depth
    with pytest.raises(InvalidInputError, match="efSearch"):
        IndexSpec.parse("HNSW32?rescore=4&efSearch=64&recall=0.9")


@pytest.mark.parametrize("dim", [12, 33, 100])
def test_binary_needs_a_dimension_multiple_of_8(dim: int) -> None:
    with pytest.raises(UnknownSpecError, match="multiple of 8"):
        FaissIndex("binary", dim, "cosine")


@pytest.mark.parametrize("spec", ["binary,HNSW0", "binary,IVF8", "binary,HNSW16,Flat", "binary,HNSWx"])
def test_bad_binary_specs(spec: str) -> None:
    with pytest.raises(UnknownSpecError, match="binary"):
        FaissIndex(spec, 32, "cosine")


def test_binary_spec_is_case_insensitive_and_builds_a_binary_index() -> None:
    spec = IndexSpec.parse("Binary,HNSW16?rescore=8")
    assert spec.factory == "binary,HNSW16"
    index = FaissIndex(spec.factory, 64, "l2", spec.search)
    assert isinstance(index, BinaryIndex) and index.hnsw_m == 16 and index.rescore == 8


@pytest.mark.parametrize("spec", ["binary", "binary,HNSW16"])
def test_binary_save_load_round_trip(spec: str, tmp_path: Path) -> None:
    ids, xb, xq, source = data("cosine")
    index = build(spec + "?rescore=4", "cosine", ids, xb, source)
    index.remove(ids[:10])
    before = index.search(xq, K)
    index.save(tmp_path / "index.faiss", tmp_path / "index.json", spec, 5)
    loaded = FaissIndex.load(tmp_path / "index.faiss", tmp_path / "index.json", DIM, "cosine", {"rescore": 4})
    assert loaded is not None
    again, snap = loaded
    assert isinstance(again, BinaryIndex) and again.ntotal == N - 10 and snap.ntotal == N - 10
    again.vectors = source
    after = again.search(xq, K)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.isin(after[1], ids[:10]).any()
    if spec == "binary":  # 4-byte codes and 8-byte ids against 128-byte vectors (a graph adds its links)
        assert index.memory_bytes() < N * DIM * 4 / 4
