"""Latent-space queries: vector arithmetic, interpolation, MMR, their CLI and the speed benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import latentsearch
from latentsearch.cli import cli
from latentsearch.errors import InvalidInputError
from latentsearch.query.latent import (
    combine,
    interpolation_points,
    mmr_order,
    parse_expression,
    slerp,
)

ROOT = Path(__file__).resolve().parents[1]
DIM = 8


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def vectors():
    return np.random.default_rng(7).standard_normal((200, DIM)).astype(np.float32)


@pytest.fixture
def col(tmp_path, vectors):
    c = latentsearch.create(tmp_path / "c", encoder=None, dim=DIM, index="Flat")
    ids = c.add(vectors)
    assert ids == list(range(ids[0], ids[0] + len(vectors)))
    c.base = ids[0]  # item i of ``vectors`` has the id base + i
    yield c
    c.close()


def nearest_cosine(stored, target, k, skip=()):
    sims = unit(stored) @ unit(target)
    order = [int(i) for i in np.argsort(-sims, kind="stable")]
    return [i for i in order if i not in skip][:k]


# -- arithmetic -----------------------------------------------------------------------------


def test_combination_returns_the_items_nearest_the_combined_vector(col, vectors):
    base = col.base
    a, c = np.ones(DIM, np.float32), np.arange(DIM, dtype=np.float32) - 3
    item = 5 + base
    hits = col.search_combination([(a, 1.0), (item, 1.0), (c, -0.5)], k=5)
    expected_vec = unit(a) + unit(vectors[item - base]) - 0.5 * unit(c)
    expected = [i + base for i in nearest_cosine(vectors, expected_vec, 5, skip={item - base})]
    assert [h.id for h in hits] == expected
    assert item not in [h.id for h in hits]
    assert hits[0].score == pytest.approx(float(unit(vectors[expected[0] - base]) @ unit(expected_vec)), abs=1e-5)


def test_item_terms_are_left_out_of_the_results(col):
    first = col.base
    a, b = first + 3, first + 4
    hits = col.search_combination([(a, 1.0), (b, 1.0)], k=10)
    assert len(hits) == 10 and not {a, b} & {h.id for h in hits}
    # One item alone is query by example, which also leaves the item out.
    assert [h.id for h in col.search_combination([(a, 1.0)], k=5)] == [h.id for h in col.search(a, k=5)]


def test_combination_for_l2_sums_the_raw_vectors(tmp_path, vectors):
    with latentsearch.create(tmp_path / "l2", encoder=None, dim=DIM, index="Flat", metric="l2") as c:
        ids = c.add(vectors)
        a, b = 2 * np.ones(DIM, np.float32), np.linspace(-1, 1, DIM).astype(np.float32)
        hits = c.search_combination([(a, 0.5), (b, 2.0)], k=3)
        target = 0.5 * a + 2.0 * b
        expected = np.argsort(((vectors - target) ** 2).sum(axis=1))[:3]
        assert [h.id for h in hits] == [ids[i] for i in expected]


def test_combine_normalises_each_term_for_cosine_only():
    x = np.array([[3.0, 0.0], [0.0, 1.0]])
    assert combine(x, [1.0, 1.0], "cosine") == pytest.approx(unit([1.0, 1.0]))
    assert combine(x, [1.0, 1.0], "l2") == pytest.approx([3.0, 1.0])
    with pytest.raises(InvalidInputError, match="cancel out"):
        combine(x[:1], [0.0], "cosine")
    with pytest.raises(InvalidInputError):
        combine(x, [1.0], "cosine")


def test_terms_that_cancel_out_and_bad_terms_are_errors(col):
    first = col.base
    with pytest.raises(InvalidInputError, match="cancel out"):
        col.search_combination([(first, 1.0), (first, -1.0)], k=3)
    with pytest.raises(InvalidInputError, match="pair"):
        col.search_combination(["just a query"], k=3)
    with pytest.raises(InvalidInputError, match="no item with id"):
        col.search_combination([(10**9, 1.0)], k=3)
    with pytest.raises(InvalidInputError, match="k must be"):
        col.search_combination([(first, 1.0)], k=0)


def test_expressions_with_texts_and_ids(tmp_path):
    texts = ["cats purr softly", "dogs bark loudly", "cats and dogs play", "ships sail the sea", "the sea is deep"]
    with latentsearch.create(tmp_path / "t", encoder="hashing:64", index="Flat") as c:
        ids = c.add(texts)
        hits = c.search_combination(f'"cats" + #{ids[3]} - 0.5*"dogs"', k=2)
        same = c.search_combination([("cats", 1.0), (ids[3], 1.0), ("dogs", -0.5)], k=2)
        assert [h.id for h in hits] == [h.id for h in same]
        assert ids[3] not in [h.id for h in hits]


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ('"beach" + #42 - "people"', [("beach", 1.0), (42, 1.0), ("people", -1.0)]),
        ("'sea'", [("sea", 1.0)]),
        ("#7", [(7, 1.0)]),
        ('-"a"+2*#3', [("a", -1.0), (3, 2.0)]),
        ('0.5 * "x y" - .25*#1 + 1e-1*"z"', [("x y", 0.5), (1, -0.25), ("z", 0.1)]),
        (r'"say \"hi\"" + "a - b"', [('say "hi"', 1.0), ("a - b", 1.0)]),
    ],
)
def test_parse_expression(text, terms):
    assert parse_expression(text) == terms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("beach", "texts must be quoted"),
        ('"a" "b"', "expected \\+ or -"),
        ('"a" +', "missing at the end"),
        ('0.5 "a"', "needs '\\*'"),
        ("#x", "character 1"),
        ('"a" * 2', "expected \\+ or -"),
        ('"a" ++ "b"', "quoted text or #ID"),
        ('"open', "never closed"),
        ("   ", "empty expression"),
    ],
)
def test_parse_expression_rejects_bad_syntax(text, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_expression(text)


# -- interpolation ----------------------------------------------------------------------------


def test_interpolation_endpoints_are_the_items_nearest_a_and_b(col, vectors):
    base = col.base
    a, b = np.ones(DIM, np.float32), np.linspace(-2, 1, DIM).astype(np.float32)
    walk = col.interpolate(a, b, steps=5, k=2)
    assert [t for t, _ in walk] == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    assert [h.id for h in walk[0][1]] == [i + base for i in nearest_cosine(vectors, a, 2)]
    assert [h.id for h in walk[-1][1]] == [i + base for i in nearest_cosine(vectors, b, 2)]
    mid = slerp(a, b, 0.5)
    assert [h.id for h in walk[2][1]] == [i + base for i in nearest_cosine(vectors, mid, 2)]


def test_interpolation_between_items_starts_and_ends_at_them(col):
    base = col.base
    walk = col.interpolate(base + 1, base + 2, steps=3)
    assert walk[0][1][0].id == base + 1 and walk[-1][1][0].id == base + 2
    assert all(len(hits) == 1 for _, hits in walk)
    with pytest.raises(InvalidInputError, match="steps"):
        col.interpolate(base + 1, base + 2, steps=1)


def test_slerp_stays_on_the_sphere_at_equal_angles():
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])
    mid = slerp(a, b, 0.5)
    assert np.linalg.norm(mid) == pytest.approx(1.0)
    assert mid @ unit(a) == pytest.approx(mid @ unit(b))
    _, lines = interpolation_points(a, b, 3, "l2")
    assert lines[1] == pytest.approx([0.5, 1.0, 0.0])
    _, arcs = interpolation_points(a, a, 3, "cosine")  # identical ends: no division by zero
    assert np.isfinite(arcs).all()


# -- maximal marginal relevance ----------------------------------------------------------------


def test_mmr_with_lambda_one_is_the_plain_search_order(col):
    q = np.linspace(1, -1, DIM).astype(np.float32)
    plain = [h.id for h in col.search(q, k=10)]
    assert [h.id for h in col.search_mmr(q, k=10, fetch_k=50, lambda_=1.0)] == plain


def clustered(dim=DIM, per=10):
    rng = np.random.default_rng(3)
    centres = np.eye(dim, dtype=np.float32)[:3]
    points = np.concatenate([c + 0.05 * rng.standard_normal((per, dim)).astype(np.float32) for c in centres])
    return points, np.repeat(np.arange(3), per)


def test_mmr_with_lambda_zero_spreads_the_results(tmp_path):
    points, cluster = clustered()
    with latentsearch.create(tmp_path / "m", encoder=None, dim=DIM, index="Flat") as c:
        ids = c.add(points)
        of = dict(zip(ids, cluster))
        q = np.array([1.0, 0.4, 0.2] + [0.0] * (DIM - 3), np.float32)
        plain = c.search(q, k=3)
        diverse = c.search_mmr(q, k=3, fetch_k=30, lambda_=0.0)
        assert {of[h.id] for h in plain} == {0}
        assert {of[h.id] for h in diverse} == {0, 1, 2}
        assert diverse[0].id == plain[0].id  # the first pick is always the most relevant

        def mean_pairwise(hits):
            _, vecs = c.store.vectors([h.id for h in hits])
            s = unit(vecs) @ unit(vecs).T
            return (s.sum() - len(s)) / (len(s) * (len(s) - 1))

        half = c.search_mmr(q, k=6, fetch_k=30, lambda_=0.5)
        assert mean_pairwise(half) < mean_pairwise(c.search(q, k=6))
        assert len({h.id for h in half}) == 6 and {h.id for h in half} <= {h.id for h in c.search(q, k=30)}


def test_mmr_by_item_leaves_the_item_out_and_checks_its_arguments(col):
    base = col.base
    hits = col.search_mmr(base, k=5, fetch_k=20, lambda_=0.7)
    assert len(hits) == 5 and base not in [h.id for h in hits]
    for bad in (-0.1, 1.5, True):
        with pytest.raises(InvalidInputError, match="lambda"):
            col.search_mmr(base, k=5, lambda_=bad)
    with pytest.raises(InvalidInputError, match="fetch_k"):
        col.search_mmr(base, k=5, fetch_k=0)


def test_mmr_order_by_hand():
    q = np.array([1.0, 0.0])
    cands = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]])
    assert mmr_order(q, cands, 3, 1.0) == [0, 1, 2]
    assert mmr_order(q, cands, 2, 0.0) == [0, 2]
    assert mmr_order(q, cands[:0], 3, 0.5) == []


# -- CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def text_collection(tmp_path):
    path = tmp_path / "notes"
    texts = ["cats purr softly", "dogs bark loudly", "cats and dogs play", "ships sail the sea", "the sea is deep"]
    with latentsearch.create(path, encoder="hashing:64", index="Flat") as c:
        ids = c.add(texts)
    return path, ids


def test_cli_explore_arithmetic_between_and_mmr(text_collection):
    path, ids = text_collection
    runner = CliRunner()
    r = runner.invoke(cli, ["explore", str(path), f'"cats" + #{ids[3]} - "dogs"', "-k", "2", "--json"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)
    assert len(hits) == 2 and ids[3] not in [h["id"] for h in hits]

    r = runner.invoke(cli, ["explore", str(path), "--between", '"cats"', f"#{ids[4]}", "--steps", "3", "--json"])
    assert r.exit_code == 0, r.output
    walk = json.loads(r.output)
    assert [w["t"] for w in walk] == [0.0, 0.5, 1.0] and walk[-1]["hits"][0]["id"] == ids[4]

    r = runner.invoke(cli, ["explore", str(path), '"cats"', "--mmr", "0.3", "-k", "3"])
    assert r.exit_code == 0, r.output
    assert len(r.output.strip().splitlines()) == 3


def test_cli_explore_errors(text_collection):
    path, _ = text_collection
    runner = CliRunner()
    r = runner.invoke(cli, ["explore", str(path), "cats + dogs"])
    assert r.exit_code == 1 and "bad expression" in r.output and "Traceback" not in r.output
    assert runner.invoke(cli, ["explore", str(path)]).exit_code == 2
    assert runner.invoke(cli, ["explore", str(path), '"a" + "b"', "--mmr", "0.5"]).exit_code == 2
    assert runner.invoke(cli, ["explore", str(path), '"a"', "--mmr", "2"]).exit_code == 2
    assert "Example:" in runner.invoke(cli, ["explore", "--help"]).output


# -- the benchmark ------------------------------------------------------------------------------


def test_search_speed_benchmark_runs_on_tiny_data(tmp_path):
    out = tmp_path / "search_speed.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_speed.py"), "--n", "2000", "--dim", "32",
         "--queries", "50", "--repeat", "1", "--skip-text", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["n"] == 2000 and result["raw_qps"] > 0 and result["latentsearch_qps"] > 0
    assert result["same_ids"] == pytest.approx(1.0) and result["text"] is None
