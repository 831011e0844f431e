"""Per-query search options (``params``): a query may search deeper (or shallower) than the
index's own efSearch / nprobe, or rescore, without touching the index or the manifest; through
Python, the CLI, the HTTP API and its client. Bad options are refused with the spec's messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import latentsearch
from latentsearch.cli import cli
from latentsearch.errors import LatentSearchError
from latentsearch.indexes.overrides import search_overrides
from latentsearch.vectors import knn

N, DIM, K = 4000, 32, 10


def uniform(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    base, queries = uniform(N, 0), uniform(50, 1)
    _, truth = knn(queries, base, K, "cosine")
    return base, queries, truth


def recall(col, queries: np.ndarray, truth: np.ndarray, **kw) -> float:
    rows = col.search_batch(list(queries), k=K, **kw)
    ids = [[h.id - 1 for h in row] for row in rows]  # ids start at 1, in insertion order
    return float(np.mean([len(set(a) & set(t)) / K for a, t in zip(ids, truth)]))


@pytest.mark.parametrize("spec, deep", [("HNSW8?efSearch=10", {"efSearch": 400}), ("IVF64,Flat?nprobe=1", {"nprobe": 64})])
def test_a_query_searches_deeper_than_the_index(tmp_path: Path, data, spec: str, deep: dict) -> None:
    base, queries, truth = data
    with latentsearch.create(tmp_path / "c", encoder=None, dim=DIM, index=spec) as col:
        col.add(base)
        shallow = recall(col, queries, truth)
        deeper = recall(col, queries, truth, params=deep)
        assert deeper > shallow + 0.1 and deeper >= 0.97, (shallow, deeper)
        assert recall(col, queries, truth, params="&".join(f"{k}={v}" for k, v in deep.items())) == deeper
        assert col.index().search_options == latentsearch.indexes.selection.IndexSpec.parse(spec).search  # untouched
        # A filter goes deeper from the query's options, not the index's.
        where = {"id": {"$lte": N // 2}}
        hits = col.search(queries[0], k=K, where=where, params=deep)
        assert len(hits) == K and all(h.id <= N // 2 for h in hits)
        assert recall(col, queries, truth) == shallow  # nothing stayed behind


def test_rescore_per_query_gives_exact_scores(tmp_path: Path, data) -> None:
    base, queries, truth = data
    with latentsearch.create(tmp_path / "c", encoder=None, dim=DIM, index="IVF16,SQ4?nprobe=16") as col:
        col.add(base)
        plain = col.search(queries[0], k=K)
        rescored = col.search(queries[0], k=K, params={"rescore": 64})
        assert [h.id - 1 for h in rescored] == list(truth[0])
        exact = base[[h.id - 1 for h in rescored]] @ queries[0]
        assert np.allclose([h.score for h in rescored], exact, atol=1e-5)
        assert not np.allclose([h.score for h in plain], base[[h.id - 1 for h in plain]] @ queries[0], atol=1e-5)


@pytest.mark.parametrize("params, words", [
    ({"efsearch": 5}, "efsearch"), ({"efSearch": 0}, "positive"), ({"nprobe": "x"}, "not an integer"),
    ("recall=0.9", "recall= is a target"), ({"efSearch": 2**21}, "too large"), ([("efSearch", 5)], "mapping"),
])
def test_bad_params_are_refused(hashing_collection, params, words: str) -> None:
    col = hashing_collection()
    col.add(["a text"])
    with pytest.raises(LatentSearchError, match=words):
        col.search("a", params=params)
    with pytest.raises(LatentSearchError, match=words):
        search_overrides(params)


def test_params_through_the_cli_and_the_server(tmp_path: Path, data) -> None:
    base, queries, truth = data
    path = tmp_path / "v"
    with latentsearch.create(path, encoder=None, dim=DIM, index="HNSW8?efSearch=10") as col:
        col.add(base)
        wanted = [h.id for h in col.search(queries[3], k=K, params={"efSearch": 500})]
    runner = CliRunner()
    # The CLI's query is text: a vector collection answers an id query through the API only, so
    # the CLI is checked for its error path, and the server and client for the search.
    bad = runner.invoke(cli, ["search", str(path), "x", "--params", "efSearch=-1"])
    assert bad.exit_code != 0 and "efSearch must be positive" in bad.output
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from latentsearch.serve.app import ServeOptions, create_app
    from latentsearch.serve.client import Client

    app = create_app([path], ServeOptions())
    with TestClient(app) as http:
        assert app.state.collections.wait_ready(30)
        body = {"query": {"vector": queries[3].tolist()}, "k": K, "params": {"efSearch": 500}}
        answer = http.post("/api/collections/v/search", json=body)
        assert answer.status_code == 200, answer.text
        assert [h["id"] for h in answer.json()["hits"]] == wanted
        refused = http.post("/api/collections/v/search", json={**body, "params": {"efSearch": 0}})
        assert refused.status_code == 400 and "efSearch must be positive" in refused.json()["error"]
        client = Client("http://testserver", http=http)
        assert [h.id for h in client.collection("v").search(queries[3], k=K, params="efSearch=500")] == wanted


def test_cli_search_with_params(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"ships and the sea number {i}"}) + "\n" for i in range(300)))
    runner = CliRunner()
    made = runner.invoke(cli, ["index", str(tmp_path / "col"), str(corpus), "--encoder", "hashing:32", "--index", "HNSW8", "-q"])
    assert made.exit_code == 0, made.output
    plain = runner.invoke(cli, ["search", str(tmp_path / "col"), "ships", "--json"])
    deep = runner.invoke(cli, ["search", str(tmp_path / "col"), "ships", "--params", "efSearch=300", "--json"])
    assert plain.exit_code == 0 and deep.exit_code == 0, deep.output
    assert len(json.loads(deep.output)) == 10
