"""Nearest-neighbour clusters: separable blobs come back as their groups, deterministically."""

from __future__ import annotations

import numpy as np
import pytest

from latentsearch.query.clusters import choose_clusters, distinctive_terms, group_hits, kmeans, silhouette
from latentsearch.types import Hit


def blobs(n_per: int = 20, centres: int = 3, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)) * 10
    truth = np.repeat(np.arange(centres), n_per)
    return c[truth] + rng.standard_normal((len(truth), dim)) * 0.3, truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return all(len(set(a[b == j])) == 1 for j in set(b)) and len(set(a)) == len(set(b))


def test_kmeans_recovers_blobs_and_is_deterministic():
    x, truth = blobs()
    labels, centroids = kmeans(x, 3, seed=1)
    assert same_partition(labels, truth) and centroids.shape == (3, 8)
    again, _ = kmeans(x, 3, seed=1)
    np.testing.assert_array_equal(labels, again)


def test_the_number_of_clusters_is_chosen_from_the_data():
    for k in (2, 3, 5):
        x, truth = blobs(centres=k, seed=k)
        labels, n = choose_clusters(x)
        assert n == k and same_partition(labels, truth)


def test_silhouette_prefers_the_true_partition():
    x, truth = blobs()
    assert silhouette(x, truth) > 0.9
    assert silhouette(x, np.arange(len(x)) % 3) < 0.2


def test_distinctive_terms():
    mine = ["tides and the moon", "the moon pulls the tides", "spring tides at full moon"]
    rest = ["bread and yeast", "yeast makes bread rise", "the moon in bread"]
    assert distinctive_terms(mine, rest, top=2) == ["tides", "moon"]


def test_group_hits_builds_labelled_clusters():
    x, truth = blobs(n_per=6, centres=2, seed=4)
    words = ["ocean waves tides", "bread yeast oven"]
    hits = [
        Hit(i, 1.0 - i / 100, f"k{i}", None, "text", words[t] + f" item{i}", {"topic": ["sea", "food"][t]})
        for i, t in enumerate(truth)
    ]
    clusters = group_hits(hits, x)
    assert len(clusters) == 2 and sum(c.size for c in clusters) == 12
    for c in clusters:
        topics = {m.metadata["topic"] for m in c.members}
        assert len(topics) == 1
        assert c.representative in c.members
        assert [m.score for m in c.members] == sorted((m.score for m in c.members), reverse=True)
        assert set(c.label.split(", ")) <= set(words[0].split() + words[1].split())
    assert clusters[0].score >= clusters[1].score
    assert [c.id for c in clusters] == [0, 1]
    assert group_hits(hits, x, n_clusters=3)[0].size >= 1
    assert group_hits([], np.zeros((0, 8))) == []


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_inputs(n):
    x, _ = blobs(n_per=1, centres=n)
    hits = [Hit(i, 0.5, None, None, "vector", None, {}) for i in range(n)]
    clusters = group_hits(hits, x)
    assert sum(c.size for c in clusters) == n


def test_collection_clusters_and_cli(tmp_path):
    import json

    from click.testing import CliRunner

    import latentsearch
    from latentsearch.cli import cli

    texts = [f"ocean waves tides sea {i}" for i in range(6)] + [f"bread yeast oven flour {i}" for i in range(6)]
    meta = [{"topic": "sea"}] * 6 + [{"topic": "food"}] * 6
    with latentsearch.create(tmp_path / "col", encoder="hashing:64", index="Flat") as col:
        col.add(texts, metadata=meta)
        groups = col.clusters("sea bread", k=12)
        assert sorted(g.size for g in groups) == [6, 6]
        assert all(len({m.metadata["topic"] for m in g.members}) == 1 for g in groups)
        assert len(col.clusters("sea bread", k=12, where={"topic": "sea"}, n_clusters=2)) == 2
    result = CliRunner().invoke(cli, ["clusters", str(tmp_path / "col"), "sea bread", "-k", "12", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert sorted(g["size"] for g in data) == [6, 6] and all(g["label"] for g in data)
    text = CliRunner().invoke(cli, ["clusters", str(tmp_path / "col"), "sea bread", "-k", "12"])
    assert text.exit_code == 0 and text.stdout.startswith("cluster 0:")
