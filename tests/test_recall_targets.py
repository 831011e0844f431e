"""Recall targets (``?recall=R``, and ``auto``'s 0.95): tuning against exact search on the
collection's own vectors, the tuned state in the manifest, re-tuning after growth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import latentsearch
from latentsearch.errors import InvalidInputError
from latentsearch.evaluation.metrics import recall_against_exact
from latentsearch.indexes import selection, sync, tuning
from latentsearch.indexes.selection import DEFAULT_EF_SEARCH, IndexSpec
from latentsearch.vectors import knn, normalize

DIM = 32
REAL_BATCH_QPS = tuning.batch_qps


def uniform(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    return normalize(np.random.default_rng(seed).standard_normal((n, dim)))


def clustered(n: int, seed: int, dim: int = DIM, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)) * 4
    return normalize(centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)) * 0.5)


def fresh_recall(col, base: np.ndarray, queries: np.ndarray, options: dict | None = None) -> float:
    """recall@10 of the collection's index against exact search, for queries not in it."""
    index = col.index()
    _, found = index.search(queries, 10, options=options)
    _, exact = knn(queries, base, 10, "ip")
    return recall_against_exact(found - 1, exact, 10)  # the store's ids start at 1


def manifest(path: Path) -> dict:
    return json.loads((path / "latentsearch.json").read_text())


@pytest.mark.parametrize("spec", ["HNSW16?recall=0.95", "IVF64,Flat?recall=0.95"])
def test_tuning_reaches_the_target_on_uniform_random_data(tmp_path: Path, spec: str):
    base, queries = uniform(6000, 0), uniform(200, 1)
    with latentsearch.create(tmp_path / "c", encoder=None, dim=DIM, index=spec) as col:
        col.add(base)
        tuned = manifest(col.path)["index_tuning"]
        assert tuned["met"] and tuned["recall"] >= 0.95 and tuned["queries"] == tuning.HELD_OUT
        assert tuned["ntotal"] == 6000 and tuned["target"] == 0.95 and tuned["tuned_at"]
        assert col.index().search_options == {tuned["param"]: tuned["value"]}
        assert fresh_recall(col, base, queries) >= 0.95
        if spec.startswith("IVF"):  # the default (nprobe 8 of 64) loses recall on this data
            assert fresh_recall(col, base, queries, {"nprobe": 8}) < 0.95
        info = col.info()
        assert info["recall_target"] == 0.95 and f"{tuned['param']} {tuned['value']}" in info["index_tuning"]


def test_on_clustered_data_the_tuned_depth_is_at_most_the_default(tmp_path: Path):
    both = clustered(6200, 2)
    base, queries = both[:6000], both[6000:]
    for spec, default in (("HNSW16?recall=0.95", DEFAULT_EF_SEARCH), ("IVF64,Flat?recall=0.95", 8)):
        with latentsearch.create(tmp_path / spec[:5], encoder=None, dim=DIM, index=spec) as col:
            col.add(base)
            tuned = manifest(col.path)["index_tuning"]
            assert tuned["value"] <= default
            assert fresh_recall(col, base, queries) >= 0.95


def test_the_tuning_survives_reopening_without_measuring_again(tmp_path: Path, monkeypatch):
    path = tmp_path / "c"
    with latentsearch.create(path, encoder=None, dim=DIM, index="HNSW16?recall=0.95") as col:
        col.add(uniform(3000, 4))
        tuned = manifest(path)["index_tuning"]

    def no_tuning(*args, **kwargs):
        raise AssertionError("tuned again")

    monkeypatch.setattr(sync, "tune", no_tuning)
    for snapshot in (True, False):  # from the snapshot, and rebuilt from the store by a reader
        if not snapshot:
            (path / "index.faiss").unlink()
        with latentsearch.open(path) as col:
            col.search(uniform(1, 5)[0], k=5)
            assert col.index().search_options == {"efSearch": tuned["value"]}
            assert col.info()["index_tuning"].startswith(f"efSearch {tuned['value']}:")
        with latentsearch.open(path) as col:
            col.add(uniform(500, 6))  # 1.17x: no re-tuning
    assert manifest(path)["index_tuning"] == tuned


def test_growth_2x_tunes_again_and_1_5x_does_not(tmp_path: Path, monkeypatch):
    calls = []
    real = sync.tune
    monkeypatch.setattr(sync, "tune", lambda index, *a, **kw: calls.append(index.ntotal) or real(index, *a, **kw))
    path = tmp_path / "c"
    with latentsearch.create(path, encoder=None, dim=DIM, index="IVF16,Flat?recall=0.9") as col:
        col.add(uniform(1000, 7))
        assert calls == [1000]
        col.add(uniform(500, 8))  # 1.5x
        assert calls == [1000] and manifest(path)["index_tuning"]["ntotal"] == 1000
    with latentsearch.open(path) as col:
        col.add(uniform(500, 9))  # 2x the tuned size
        assert calls == [1000, 2000]
        assert manifest(path)["index_tuning"]["ntotal"] == 2000


def test_no_tuning_for_flat_small_collections_or_fixed_options(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sync, "tune", lambda *a, **kw: pytest.fail("tuned"))
    for name, spec, n in (("flat", "Flat?recall=0.95", 2000), ("small", "HNSW16?recall=0.95", 500),
                          ("fixed", "HNSW16?efSearch=40", 2000), ("auto", "auto", 2000)):
        with latentsearch.create(tmp_path / name, encoder=None, dim=DIM, index=spec) as col:
            col.add(uniform(n, 10))
            assert manifest(col.path)["index_tuning"] is None and col.info()["index_tuning"] is None
    with latentsearch.open(tmp_path / "fixed") as col:
        assert col.index().search_options == {"efSearch": 40}


def favour(monkeypatch, kind: str) -> None:
    """Make ``auto``'s speed measurement favour index types whose factory holds ``kind``: which
    type is faster otherwise depends on the machine."""
    monkeypatch.setattr(tuning, "batch_qps", lambda index, q, o, repeat=5: REAL_BATCH_QPS(index, q, o, 1) * (10 if kind in index.factory else 1))


def test_auto_tunes_the_index_it_chooses_once_past_flat(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(selection, "AUTO_FLAT_LIMIT", 2000)
    favour(monkeypatch, "HNSW")
    with latentsearch.create(tmp_path / "c", encoder=None, dim=DIM) as col:
        col.add(uniform(1500, 11))
        assert col.index().factory == "Flat" and manifest(col.path)["index_tuning"] is None
        col.add(uniform(1500, 12))
        tuned = manifest(col.path)["index_tuning"]
        assert col.index().factory == "HNSW32" and tuned["factory"] == "HNSW32" and tuned["spec"] == "auto"
        assert tuned["met"] and tuned["target"] == selection.DEFAULT_AUTO_RECALL
        assert col.index().search_options == {"efSearch": tuned["value"]}


def test_auto_falls_back_to_exact_search_when_the_target_is_out_of_reach(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(selection, "AUTO_FLAT_LIMIT", 2000)
    monkeypatch.setattr(tuning, "MAX_TUNED_EF", 16)  # a graph searched this shallowly misses 0.999
    with latentsearch.create(tmp_path / "c", encoder=None, dim=DIM, index="auto?recall=0.999") as col:
        col.add(uniform(3000, 13))
        tuned = manifest(col.path)["index_tuning"]
        assert tuned["factory"] == "Flat" and tuned["replaces"] == "HNSW32" and tuned["recall"] == 1.0
        assert col.index().factory == "Flat"
        col.add(uniform(100, 14))  # not outgrown: the fallback stands
        assert col.index().factory == "Flat"
    with latentsearch.open(tmp_path / "c") as col:
        assert col.index().factory == "Flat"


def test_reindex_tunes_the_new_spec_and_a_fixed_spec_drops_the_tuning(tmp_path: Path):
    with latentsearch.create(tmp_path / "c", encoder=None, dim=DIM, index="Flat") as col:
        col.add(uniform(2000, 15))
        col.reindex("IVF16,Flat?recall=0.9")
        assert manifest(col.path)["index_tuning"]["param"] == "nprobe"
        col.reindex("IVF16,Flat?nprobe=3")
        assert manifest(col.path)["index_tuning"] is None
        assert col.index().search_options == {"nprobe": 3}


def test_a_query_time_option_overrides_the_tuned_one(tmp_path: Path):
    base, queries = uniform(3000, 16), uniform(50, 17)
    with latentsearch.create(tmp_path / "c", encoder=None, dim=DIM, index="IVF32,Flat?recall=0.95") as col:
        col.add(base)
        assert col.index().search_options["nprobe"] > 1
        assert fresh_recall(col, base, queries, {"nprobe": 1}) < fresh_recall(col, base, queries)
        assert fresh_recall(col, base, queries, {"nprobe": 32}) == 1.0


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.2", "x", "nan", ""])
def test_bad_recall_values_are_clear_errors(value: str):
    with pytest.raises(InvalidInputError, match="recall"):
        IndexSpec.parse(f"HNSW32?recall={value}")


def test_recall_with_an_explicit_search_option_is_an_error(tmp_path: Path):
    with pytest.raises(InvalidInputError, match="one or the other"):
        latentsearch.create(tmp_path / "c", encoder=None, dim=DIM, index="HNSW32?recall=0.9&efSearch=64")
    assert not (tmp_path / "c").exists()


def test_spec_round_trip_and_targets():
    assert str(IndexSpec.parse("HNSW32?recall=0.95")) == "HNSW32?recall=0.95"
    assert IndexSpec.parse("auto").target == 0.95 and IndexSpec.parse("auto?recall=0.9").target == 0.9
    assert IndexSpec.parse("auto?efSearch=64").target is None and IndexSpec.parse("HNSW32").target is None


def test_an_older_manifest_without_tuning_opens(tmp_path: Path):
    path = tmp_path / "c"
    with latentsearch.create(path, encoder=None, dim=DIM, index="HNSW16") as col:
        col.add(uniform(100, 18))
    data = manifest(path)
    del data["index_tuning"]
    (path / "latentsearch.json").write_text(json.dumps(data))
    with latentsearch.open(path) as col:
        assert col.config.index_tuning is None and len(col.search(uniform(1, 19)[0], k=3)) == 3


def test_reads_never_write_in_a_tuned_collection(tmp_path: Path, monkeypatch):
    path = tmp_path / "c"
    with latentsearch.create(path, encoder=None, dim=DIM, index="HNSW16?recall=0.95") as col:
        col.add(uniform(2000, 20))
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()}
    monkeypatch.setattr(sync, "tune", lambda *a, **kw: pytest.fail("a read tuned"))
    with latentsearch.open(path) as col:
        col.search(uniform(1, 21)[0], k=5)
        col.info()
        col.verify()
    after = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir()}
    strip = lambda d: {k: v for k, v in d.items() if not k.startswith("metadata.db-")}  # noqa: E731
    assert strip(before) == strip(after)


# -- the rescore R, tuned for indexes of compressed codes -------------------------------------------


def test_a_binary_index_tunes_its_rescore_to_the_target(tmp_path: Path):
    both = clustered(5200, 7, dim=64)
    base, queries = both[:5000], both[5000:]
    with latentsearch.create(tmp_path / "b", encoder=None, dim=64, index="binary?recall=0.95") as col:
        col.add(base)
        tuned = manifest(col.path)["index_tuning"]
        assert tuned["param"] == "rescore" and tuned["met"] and tuned["value"] > 1
        assert col.index().search_options == {"rescore": tuned["value"]}
        assert fresh_recall(col, base, queries) >= 0.95
        assert fresh_recall(col, base, queries, {"rescore": 1}) < 0.95  # the codes alone miss it
        assert tuned["value"] in tuning.RESCORE_STEPS  # the first step of the ladder that meets it
        assert tuning.meets(tuned["recall"], 0.95, tuning.HELD_OUT)
        assert f"rescore {tuned['value']}" in col.info()["index_tuning"]


def test_coarse_codes_that_miss_at_every_depth_tune_a_rescore_then_the_depth(tmp_path: Path):
    base, queries = uniform(6000, 8), uniform(200, 9)
    with latentsearch.create(tmp_path / "pq", encoder=None, dim=DIM, index="IVF32,PQ8x4?recall=0.95") as col:
        col.add(base)
        tuned = manifest(col.path)["index_tuning"]
        assert tuned["param"] == "nprobe" and tuned["met"] and tuned["rescore"] > 1
        assert col.index().search_options == {"nprobe": tuned["value"], "rescore": tuned["rescore"]}
        assert tuning.meets(tuned["recall"], 0.95, tuning.HELD_OUT)
        # New queries: within two standard errors of 200 queries' recall (0.01) of the target.
        assert fresh_recall(col, base, queries) >= 0.94
        assert fresh_recall(col, base, queries, {"nprobe": 32, "rescore": 1}) < 0.9  # the codes alone: far off


def test_a_fixed_rescore_is_kept_and_only_the_depth_tuned(tmp_path: Path):
    base = uniform(6000, 10)
    with latentsearch.create(tmp_path / "f", encoder=None, dim=DIM, index="IVF32,PQ8x4?recall=0.5&rescore=8") as col:
        col.add(base)
        tuned = manifest(col.path)["index_tuning"]
        assert tuned["param"] == "nprobe" and tuned["rescore"] is None
        assert col.index().search_options["rescore"] == 8


def test_auto_keeps_the_fastest_type_that_meets_the_target(tmp_path: Path, monkeypatch):
    """Where HNSW fits, ``auto`` also tunes IVF over the same vectors and keeps the faster that
    meets the target; which one wins depends on the machine, so the test makes IVF the faster."""
    monkeypatch.setattr(selection, "AUTO_FLAT_LIMIT", 3000)
    favour(monkeypatch, "IVF")
    both = clustered(6200, 11)
    base, queries = both[:6000], both[6000:]
    with latentsearch.create(tmp_path / "a", encoder=None, dim=DIM, index="auto") as col:
        col.add(base)
        tuned = manifest(col.path)["index_tuning"]
        assert tuned["factory"].startswith("IVF") and tuned["factory"].endswith(",Flat")
        assert tuned["replaces"] == "HNSW32" and tuned["met"] and tuned["qps"] > 0
        assert col.index().factory == tuned["factory"] and col.index().search_options == {"nprobe": tuned["value"]}
        assert fresh_recall(col, base, queries) >= 0.94
    with latentsearch.open(tmp_path / "a") as again:  # reopened: the kept type, not measured again
        assert again.index().factory == tuned["factory"]
    favour(monkeypatch, "HNSW")
    with latentsearch.create(tmp_path / "h", encoder=None, dim=DIM, index="auto") as col:
        col.add(base)
        tuned = manifest(col.path)["index_tuning"]
        assert tuned["factory"] == "HNSW32" and tuned["replaces"] is None
