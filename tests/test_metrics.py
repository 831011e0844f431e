"""Retrieval metrics against hand-computed values and pytrec_eval; the BEIR reader."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from latentsearch.errors import InvalidInputError
from latentsearch.evaluation.datasets import BeirDataset, document_text, load_beir
from latentsearch.evaluation.metrics import (
    evaluate,
    evaluate_per_query,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    ranked_ids,
    recall_at_k,
    recall_against_exact,
)
from helpers import DATASETS, needs_dataset  # noqa: E402


# q1: R = 3 relevant (d1=2, d2=1, d4=1); d3 is judged non-relevant; d5 is unjudged.
# Ranking d1, d3, d2, d5, d4  ->  relevance by rank 1..5: 2, 0, 1, 0, 1.
Q1_QRELS = {"q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 1}}
Q1_RUN = {"q1": {"d1": 0.9, "d3": 0.8, "d2": 0.7, "d5": 0.6, "d4": 0.5}}

# q2: one relevant doc "a" at rank 3 (x, y, a).
Q2_QRELS = {"q2": {"a": 1}}
Q2_RUN = {"q2": {"x": 3.0, "y": 2.0, "a": 1.0}}

LOG2_3 = math.log2(3)  # 1.5849625007211562
LOG2_6 = math.log2(6)  # 2.584962500721156


# --- nDCG ------------------------------------------------------------------------------------


def test_ndcg_hand_computed():
    # @1: DCG = 2/log2(2) = 2; IDCG = 2 (best doc has rel 2)  -> 1.0
    assert ndcg_at_k(Q1_QRELS, Q1_RUN, 1) == pytest.approx(1.0)
    # @3: DCG = 2/log2(2) + 0/log2(3) + 1/log2(4) = 2 + 0.5 = 2.5
    #     IDCG over ideal rels [2, 1, 1] = 2/1 + 1/log2(3) + 1/log2(4) = 2.5 + 0.63093 = 3.13093
    idcg3 = 2 + 1 / LOG2_3 + 0.5
    assert ndcg_at_k(Q1_QRELS, Q1_RUN, 3) == pytest.approx(2.5 / idcg3)  # 0.798484
    # @5: DCG adds d4 (rel 1) at rank 5: 1/log2(6) = 0.38685 -> 2.88685; IDCG stays 3.13093
    # (only three relevant docs exist, so the ideal list ends at rank 3)
    assert ndcg_at_k(Q1_QRELS, Q1_RUN, 5) == pytest.approx((2.5 + 1 / LOG2_6) / idcg3)  # 0.92204
    # q2: DCG@3 = 1/log2(4) = 0.5; IDCG = 1 -> 0.5
    assert ndcg_at_k(Q2_QRELS, Q2_RUN, 3) == pytest.approx(0.5)
    assert ndcg_at_k(Q2_QRELS, Q2_RUN, 2) == 0.0


def test_ndcg_uses_linear_gain_not_exponential():
    # rels by rank: 1, 3. DCG = 1/1 + 3/log2(3) = 2.89279; IDCG = 3/1 + 1/log2(3) = 3.63093.
    # With 2^rel-1 gains it would be (1 + 7/log2(3)) / (7 + 1/log2(3)) = 0.7058 instead.
    qrels = {"q": {"a": 1, "b": 3}}
    run = {"q": {"a": 2.0, "b": 1.0}}
    assert ndcg_at_k(qrels, run, 2) == pytest.approx((1 + 3 / LOG2_3) / (3 + 1 / LOG2_3))  # 0.79670


def test_negative_relevance_is_not_relevant_and_has_no_gain():
    # "a" (rel -1) at rank 1 adds nothing; "b" at rank 2: DCG = 1/log2(3); IDCG = 1 -> 0.63093
    qrels = {"q": {"a": -1, "b": 1}}
    run = {"q": {"a": 2.0, "b": 1.0}}
    assert ndcg_at_k(qrels, run, 2) == pytest.approx(1 / LOG2_3)
    assert mrr_at_k(qrels, run, 2) == pytest.approx(0.5)
    assert recall_at_k(qrels, run, 1) == 0.0


# --- MRR, MAP, recall, precision ---------------------------------------------------------------


def test_mrr_hand_computed():
    assert mrr_at_k(Q1_QRELS, Q1_RUN, 1) == 1.0  # d1 relevant at rank 1
    # q2: first relevant at rank 3 -> 1/3 when k >= 3, else 0
    assert mrr_at_k(Q2_QRELS, Q2_RUN, 3) == pytest.approx(1 / 3)
    assert mrr_at_k(Q2_QRELS, Q2_RUN, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(Q2_QRELS, Q2_RUN, 2) == 0.0


def test_map_hand_computed_divides_by_all_relevant():
    # relevant at ranks 1, 3, 5 with precision 1/1, 2/3, 3/5; R = 3
    # @5: (1 + 2/3 + 3/5) / 3 = 2.26667 / 3 = 0.75556
    assert map_at_k(Q1_QRELS, Q1_RUN, 5) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # @3: (1 + 2/3) / 3 = 0.55556
    assert map_at_k(Q1_QRELS, Q1_RUN, 3) == pytest.approx((1 + 2 / 3) / 3)
    # @1: 1 / 3 -- trec_eval map_cut divides by R = 3, not by min(k, R) = 1 (which would give 1.0)
    assert map_at_k(Q1_QRELS, Q1_RUN, 1) == pytest.approx(1 / 3)
    # q2: relevant at rank 3, precision 1/3; R = 1 -> 1/3
    assert map_at_k(Q2_QRELS, Q2_RUN, 3) == pytest.approx(1 / 3)


def test_recall_hand_computed():
    assert recall_at_k(Q1_QRELS, Q1_RUN, 1) == pytest.approx(1 / 3)  # d1 of {d1, d2, d4}
    assert recall_at_k(Q1_QRELS, Q1_RUN, 3) == pytest.approx(2 / 3)  # d1, d2
    assert recall_at_k(Q1_QRELS, Q1_RUN, 5) == 1.0
    assert recall_at_k(Q1_QRELS, Q1_RUN, 100) == 1.0


def test_precision_hand_computed_always_divides_by_k():
    assert precision_at_k(Q1_QRELS, Q1_RUN, 1) == 1.0
    assert precision_at_k(Q1_QRELS, Q1_RUN, 3) == pytest.approx(2 / 3)  # d1, d2 of 3
    assert precision_at_k(Q1_QRELS, Q1_RUN, 5) == pytest.approx(3 / 5)
    # only 5 docs retrieved, still divided by 10: 3/10
    assert precision_at_k(Q1_QRELS, Q1_RUN, 10) == pytest.approx(3 / 10)


def test_evaluate_averages_over_queries_and_names_keys():
    qrels = {**Q1_QRELS, **Q2_QRELS}
    run = {**Q1_RUN, **Q2_RUN}
    scores = evaluate(qrels, run, ks=(1, 3))
    assert list(scores) == [
        "ndcg@1", "ndcg@3", "mrr@1", "mrr@3", "map@1", "map@3",
        "recall@1", "recall@3", "precision@1", "precision@3",
    ]  # fmt: skip
    # mrr@3: (1 + 1/3) / 2 = 0.66667; map@3: ((1 + 2/3)/3 + 1/3) / 2 = 0.44444
    assert scores["mrr@3"] == pytest.approx((1 + 1 / 3) / 2)
    assert scores["map@3"] == pytest.approx(((1 + 2 / 3) / 3 + 1 / 3) / 2)
    # recall@3: (2/3 + 1) / 2; precision@1: (1 + 0) / 2
    assert scores["recall@3"] == pytest.approx((2 / 3 + 1) / 2)
    assert scores["precision@1"] == pytest.approx(0.5)
    per_query = evaluate_per_query(qrels, run, ks=(3,))
    assert per_query["q2"]["ndcg@3"] == pytest.approx(0.5)
    assert set(per_query) == {"q1", "q2"}


def test_evaluate_defaults_cover_standard_cutoffs():
    scores = evaluate(Q1_QRELS, Q1_RUN)
    assert {"ndcg@10", "mrr@10", "map@10", "recall@100", "precision@5"} <= set(scores)


# --- ties and query selection -----------------------------------------------------------------


def test_ties_are_broken_by_doc_id_descending():
    # trec_eval: score descending, then strcmp(b, a) -- reverse lexicographic, not numeric
    scores = {"a": 1.0, "b": 1.0, "c": 2.0, "d10": 1.0, "d9": 1.0}
    assert ranked_ids(scores) == ["c", "d9", "d10", "b", "a"]
    # the relevant "d10" loses the tie to "d9" ("d9" > "d10" as strings): rank 2 -> 0.5
    assert mrr_at_k({"q": {"d10": 1}}, {"q": {"d9": 1.0, "d10": 1.0}}, 10) == 0.5
    # the relevant "b" wins the tie against "a": rank 1
    assert mrr_at_k({"q": {"b": 1}}, {"q": {"a": 0.5, "b": 0.5}}, 1) == 1.0
    assert mrr_at_k({"q": {"a": 1}}, {"q": {"a": 0.5, "b": 0.5}}, 1) == 0.0


def test_query_missing_from_run_counts_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": {"a": 1.0}}  # q2 absent: all its metrics are 0
    assert ndcg_at_k(qrels, run, 10) == pytest.approx(0.5)  # (1 + 0) / 2
    assert recall_at_k(qrels, run, 10) == pytest.approx(0.5)
    assert evaluate_per_query(qrels, run, ks=(10,))["q2"]["mrr@10"] == 0.0


def test_query_only_in_run_is_ignored():
    qrels = {"q1": {"a": 1}}
    run = {"q1": {"a": 1.0}, "extra": {"z": 9.0}}
    assert ndcg_at_k(qrels, run, 10) == 1.0
    assert set(evaluate_per_query(qrels, run)) == {"q1"}


def test_query_without_relevant_docs_is_skipped():
    qrels = {"q1": {"a": 1}, "q0": {"a": 0, "b": -1}}
    run = {"q1": {"a": 1.0}, "q0": {"a": 1.0}}
    assert ndcg_at_k(qrels, run, 10) == 1.0  # mean over q1 alone, not (1 + 0) / 2
    assert set(evaluate_per_query(qrels, run)) == {"q1"}


def test_bad_inputs_raise():
    with pytest.raises(InvalidInputError, match="positive integer"):
        ndcg_at_k(Q1_QRELS, Q1_RUN, 0)
    with pytest.raises(InvalidInputError, match="no query with a relevant"):
        evaluate({"q": {"a": 0}}, {"q": {"a": 1.0}})
    with pytest.raises(InvalidInputError, match="unknown metric"):
        evaluate(Q1_QRELS, Q1_RUN, metrics=("hits",))


# --- ANN recall -------------------------------------------------------------------------------


def test_recall_against_exact_hand_computed():
    exact = np.array([[1, 2, 3, 8], [4, 5, -1, -1]])
    approx = np.array([[3, 9, 1, 2], [5, -1, -1, -1]])
    # k=3: row 0 finds {1, 3} of {1, 2, 3} (2 is at column 4, outside the top 3);
    #      row 1 finds {5} of {4, 5} (-1 padding leaves the denominator) -> (2 + 1) / (3 + 2)
    assert recall_against_exact(approx, exact, 3) == pytest.approx(3 / 5)
    # k=2: row 0: {1, 2} vs {3, 9} -> 0; row 1: {4, 5} vs {5, -1} -> 1  -> 1 / 4
    assert recall_against_exact(approx, exact, 2) == pytest.approx(1 / 4)
    # -1 never matches -1
    assert recall_against_exact(np.array([[-1, 7]]), np.array([[7, -1]]), 2) == 1.0


def test_recall_against_exact_matches_set_loop_on_random_ids():
    rng = np.random.default_rng(0)
    nq, k = 3000, 10  # several chunks
    exact = np.array([rng.permutation(50)[: k + 2] for _ in range(nq)])  # distinct ids per row
    approx = rng.integers(-1, 50, size=(nq, k))  # repeats and -1 padding allowed
    expected = sum(len(set(e[:k]) & set(a) - {-1}) for e, a in zip(exact, approx)) / (nq * k)
    assert recall_against_exact(approx, exact, k) == pytest.approx(expected)


def test_recall_against_exact_shape_errors():
    with pytest.raises(InvalidInputError, match="columns"):
        recall_against_exact(np.zeros((2, 3)), np.zeros((2, 5)), 4)
    with pytest.raises(InvalidInputError, match="rows"):
        recall_against_exact(np.zeros((2, 5)), np.zeros((3, 5)), 4)
    with pytest.raises(InvalidInputError, match="2-D"):
        recall_against_exact(np.zeros(5), np.zeros((1, 5)), 4)
    with pytest.raises(InvalidInputError, match="padding"):
        recall_against_exact(np.zeros((1, 2)), -np.ones((1, 2)), 2)


# --- cross-check against pytrec_eval (trec_eval itself) ---------------------------------------


def _synthetic(seed: int = 7):
    rnd = random.Random(seed)
    docs = [f"d{i}" for i in range(60)]  # "d10" < "d9": ties exercise string order
    qrels, run = {}, {}
    for q in range(80):
        qid = f"q{q}"
        judged = rnd.sample(docs, 15)
        qrels[qid] = {d: rnd.choice([0, 0, 1, 1, 2, 3]) for d in judged}
        if q % 10 == 0:
            qrels[qid][judged[0]] = -1  # "unjudged in pool" in trec_eval terms
        if q % 13 == 0:
            continue  # in qrels, missing from run
        # coarse scores -> many ties
        run[qid] = {d: rnd.randint(0, 8) / 4 for d in rnd.sample(docs, rnd.randint(3, 45))}
    run["only_in_run"] = {"d1": 1.0}
    return qrels, run


def test_matches_pytrec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    qrels, run = _synthetic()
    ks = (1, 3, 5, 10, 100)
    cut = ",".join(map(str, ks))
    measures = {f"ndcg_cut.{cut}", f"map_cut.{cut}", f"recall.{cut}", f"P.{cut}", "recip_rank"}
    theirs = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    ours = evaluate_per_query(qrels, run, ks=ks)

    # pytrec_eval only reports queries present in the run; it also reports R = 0 queries, we skip
    assert set(ours) - set(theirs) == {q for q in qrels if q not in run and q in ours}
    compared = 0
    for qid, mine in ours.items():
        if qid not in theirs:
            assert all(v == 0.0 for v in mine.values())  # missing from run
            continue
        t = theirs[qid]
        for k in ks:
            assert mine[f"ndcg@{k}"] == pytest.approx(t[f"ndcg_cut_{k}"], abs=1e-12)
            assert mine[f"map@{k}"] == pytest.approx(t[f"map_cut_{k}"], abs=1e-12)
            assert mine[f"recall@{k}"] == pytest.approx(t[f"recall_{k}"], abs=1e-12)
            assert mine[f"precision@{k}"] == pytest.approx(t[f"P_{k}"], abs=1e-12)
        # recip_rank has no cutoff: equal to mrr@k for k beyond the run's length
        assert mine["mrr@100"] == pytest.approx(t["recip_rank"], abs=1e-12)
        compared += 1
    assert compared > 50

    # mrr@k == recip_rank of the run truncated to its (trec_eval-ordered) top k
    for k in (1, 3, 10):
        truncated = {q: {d: s[d] for d in ranked_ids(s)[:k]} for q, s in run.items()}
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(truncated)
        for qid, mine in ours.items():
            if qid in rr:
                assert mine[f"mrr@{k}"] == pytest.approx(rr[qid]["recip_rank"], abs=1e-12)


# --- BEIR reader ------------------------------------------------------------------------------


def _write_beir(root: Path, qrels_lines: list[str] | None = None) -> Path:
    (root / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": "d1", "title": "Title one", "text": "Body one."},
        {"_id": "d2", "text": "No title here."},
        {"_id": "d3", "title": "", "text": " padded "},
    ]
    queries = [
        {"_id": "q1", "text": "first?"},
        {"_id": "q2", "text": "second?"},
        {"_id": "q3", "text": "not judged in test"},
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries) + "\n")
    lines = qrels_lines or ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q1\td3\t0", "q2\td2\t2"]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_load_beir_tiny(tmp_path):
    ds = load_beir(_write_beir(tmp_path / "tiny"))
    assert isinstance(ds, BeirDataset)
    assert ds.qrels == {"q1": {"d1": 1, "d3": 0}, "q2": {"d2": 2}}
    assert ds.queries == {"q1": "first?", "q2": "second?"}  # q3 is not judged in the split
    assert ds.corpus["d2"] == {"title": "", "text": "No title here."}
    assert [document_text(ds.corpus[d]) for d in ("d1", "d2", "d3")] == [
        "Title one Body one.",
        "No title here.",
        "padded",
    ]
    with pytest.raises(AttributeError):
        ds.queries = {}  # frozen


def test_document_text_joins_like_mteb():
    assert document_text({"title": "T", "text": "body"}) == "T body"
    assert document_text({"title": "", "text": "body "}) == "body"
    assert document_text({"text": " body"}) == "body"
    assert document_text({"title": None, "text": "body"}) == "body"


def test_load_beir_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="no BEIR dataset folder"):
        load_beir(tmp_path / "absent")

    root = _write_beir(tmp_path / "a")
    with pytest.raises(InvalidInputError, match=r"dev\.tsv.*splits found: test"):
        load_beir(root, split="dev")
    (root / "corpus.jsonl").unlink()
    with pytest.raises(InvalidInputError, match=r"missing file .*corpus\.jsonl"):
        load_beir(root)

    root = _write_beir(tmp_path / "b")
    with (root / "corpus.jsonl").open("a") as f:
        f.write('{"_id": "d4", "text": oops}\n')
    with pytest.raises(InvalidInputError, match=r"corpus\.jsonl:4: not valid JSON"):
        load_beir(root)

    root = _write_beir(tmp_path / "c")
    with (root / "corpus.jsonl").open("a") as f:
        f.write('{"_id": "d1", "text": "again"}\n')
    with pytest.raises(InvalidInputError, match=r"corpus\.jsonl:4: duplicate _id 'd1'"):
        load_beir(root)

    root = _write_beir(tmp_path / "d", ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q1\td2\thigh"])
    with pytest.raises(InvalidInputError, match=r"test\.tsv:3: score 'high' is not an integer"):
        load_beir(root)

    root = _write_beir(tmp_path / "e", ["query-id\tcorpus-id\tscore", "q1 d1 1"])
    with pytest.raises(InvalidInputError, match=r"test\.tsv:2: expected 3 tab-separated"):
        load_beir(root)

    root = _write_beir(tmp_path / "f", ["query-id\tcorpus-id\tscore", "q9\td1\t1"])
    with pytest.raises(InvalidInputError, match=r"missing from .*queries\.jsonl.*'q9'"):
        load_beir(root)


@pytest.mark.slow
@needs_dataset("scifact")
def test_load_beir_scifact():
    ds = load_beir(DATASETS / "scifact")
    assert len(ds.queries) == 300
    assert sum(len(docs) for docs in ds.qrels.values()) == 339
    assert set(ds.queries) == set(ds.qrels)
    assert len(ds.corpus) == 5183
    judged = {d for docs in ds.qrels.values() for d in docs}
    assert judged <= set(ds.corpus)
    doc = ds.corpus["4983"]
    assert document_text(doc) == f"{doc['title']} {doc['text']}".strip()
    assert document_text(doc).startswith("Microstructural development of human newborn")
