"""Corpus clusters: k-means over the whole collection, stored, queryable, filterable, mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from latentsearch.cli import cli
from latentsearch.collection import Collection

DIM = 16


def blobs(per: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((3, DIM)) * 10
    truth = np.repeat(np.arange(3), per)
    return centres[truth] + rng.standard_normal((len(truth), DIM)) * 0.3, truth, centres


@pytest.fixture
def blob_col(tmp_path: Path, store_url: str):
    store = None if store_url.startswith("sqlite") else store_url
    col = Collection.create(tmp_path / "blobs", encoder=None, dim=DIM, index="Flat", store=store)
    x, truth, centres = blobs()
    ids = col.add(x, metadata=[{"group": f"g{t}"} for t in truth])
    yield col, np.array(ids), truth, centres
    col.close()
    if col.config.store_schema:
        from tests.conftest import _drop_schemas

        _drop_schemas(col.config.store_url, [col.config.store_schema])


def _partition(col: Collection, ids: np.ndarray) -> dict[int, int]:
    return col.store.assignments(ids.tolist())


def test_cluster_finds_the_groups_and_stores_them(blob_col):
    col, ids, truth, centres = blob_col
    summary = col.cluster(3, seed=0)
    assert sorted(c.size for c in summary) == [20, 20, 20]
    assert [c.id for c in summary] == [0, 1, 2]
    of = _partition(col, ids)
    for g in range(3):
        assert len({of[int(i)] for i in ids[truth == g]}) == 1
    for c in summary:
        assert c.label.startswith("group=g") and len(c.representatives) == 3
        groups = {r.metadata["group"] for r in c.representatives}
        assert groups == {c.label.split("=")[1]}
    # where={"cluster": ...}
    g0 = of[int(ids[0])]
    hits = col.search(centres[1], k=5, where={"cluster": g0})
    assert hits and all(of[h.id] == g0 for h in hits)
    assert col.store.count_where({"cluster": {"$in": [0, 1]}}) == 40
    assert col.store.count_where({"cluster": {"$ne": 0}}) == 40
    assert col.store.count_where({"cluster": None}) == 0
    # nearest_clusters and members
    near = col.nearest_clusters(centres[2], k=2)
    assert len(near) == 2 and near[0].id == of[int(ids[truth == 2][0])]
    assert near[0].score >= near[1].score
    members = col.cluster_members(near[0].id, limit=None)
    assert sorted(m.id for m in members) == sorted(ids[truth == 2].tolist())
    assert len(col.cluster_members(near[0].id, limit=5)) == 5


def test_cluster_is_deterministic_and_replaces(tmp_path: Path):
    x, truth, _ = blobs()
    runs = []
    for name in ("a", "b"):
        with Collection.create(tmp_path / name, encoder=None, dim=DIM, index="Flat") as col:
            ids = col.add(x)
            s = col.cluster(3, seed=7)
            runs.append(([(c.id, c.size, c.label) for c in s], col.store.assignments(ids)))
    assert runs[0] == runs[1]
    with Collection.open(tmp_path / "a") as col:
        again = col.cluster(2, seed=1)
        assert len(again) == 2 and len(col.corpus_clusters()) == 2
        assert set(col.store.assignments(list(range(1, 61))).values()) == {0, 1}
        assert col.store.count_where({"cluster": 2}) == 0


def test_assignments_survive_reopen_and_new_items_get_a_cluster(tmp_path: Path):
    x, truth, centres = blobs()
    with Collection.create(tmp_path / "c", encoder=None, dim=DIM, index="Flat") as col:
        ids = np.array(col.add(x))
        col.cluster(3, seed=0)
        before = col.store.assignments(ids.tolist())
    with Collection.open(tmp_path / "c") as col:
        assert col.store.assignments(ids.tolist()) == before
        assert [c.size for c in col.corpus_clusters()] == [20, 20, 20]
        new = col.add(centres[1][None] + 0.01)
        target = before[int(ids[truth == 1][0])]
        assert new[0] in [m.id for m in col.cluster_members(target, limit=None)]
        assert col.store.count_where({"cluster": target}) == 21
        col.delete(ids=[new[0]])
        assert col.assign_new() == 0
        assert col.store.assignments([new[0]]) == {}
        assert [c.size for c in col.corpus_clusters()] == [20, 20, 20]
        # a filter on a collection's later add, through search
        late = col.add(centres[0][None] + 0.01)
        hits = col.search(centres[0], k=30, where={"cluster": before[int(ids[0])]})
        assert late[0] in [h.id for h in hits]


def test_no_clustering_is_harmless(tmp_path: Path):
    with Collection.create(tmp_path / "c", encoder=None, dim=DIM, index="Flat") as col:
        ids = col.add(blobs()[0])
        assert col.corpus_clusters() == [] and col.assign_new() == 0
        assert col.search(ids[0], k=3, where={"cluster": 0}) == []
        with pytest.raises(Exception, match="no clustering"):
            col.nearest_clusters(ids[0])
        with pytest.raises(Exception, match="at most"):
            col.cluster(100)


TEXTS = (
    [f"the rocket launch orbit satellite mission number {i}" for i in range(8)]
    + [f"bake bread flour oven yeast dough recipe {i}" for i in range(8)]
)


def test_text_labels_and_cli(hashing_collection, tmp_path: Path):
    col = hashing_collection("texts")
    col.add(TEXTS)
    summary = col.cluster(2, seed=0)
    labels = " ".join(c.label for c in summary)
    assert any(w in labels for w in ("rocket", "orbit", "satellite", "launch", "mission"))
    assert any(w in labels for w in ("bread", "flour", "oven", "yeast", "dough", "bake", "recipe"))
    near = col.nearest_clusters("rocket orbit", k=1)[0]
    assert any(w in near.label for w in ("rocket", "orbit", "satellite", "launch", "mission"))
    path = col.path
    col.close()

    runner = CliRunner()
    r = runner.invoke(cli, ["cluster", str(path), "-n", "2"])
    assert r.exit_code == 0, r.output
    assert "label" in r.output and "size" in r.output
    r = runner.invoke(cli, ["cluster", str(path), "-n", "2", "--json"])
    assert r.exit_code == 0, r.output
    import json

    data = json.loads(r.output)
    assert sorted(d["size"] for d in data) == [8, 8] and all(d["representatives"] for d in data)

    out = tmp_path / "map.png"
    r = runner.invoke(cli, ["map", str(path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:4] == b"\x89PNG"
    out2 = tmp_path / "q.png"
    r = runner.invoke(cli, ["map", str(path), "-o", str(out2), "--query", "rocket", "--sample", "10", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["points"] == 10 and info["stored_clustering"] and out2.read_bytes()[:4] == b"\x89PNG"


def test_map_without_clustering(tmp_path: Path):
    from latentsearch.query.map import render_map

    with Collection.create(tmp_path / "c", encoder=None, dim=DIM, index="Flat") as col:
        x = blobs()[0]
        col.add(x)
        result = render_map(col.searcher, tmp_path / "m.png", query=x[0])
        assert not result.stored_clustering and result.projection == "pca"
        assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
