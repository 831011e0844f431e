"""ANN benchmarking and the ``bench`` commands, on tiny seeded synthetic data."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import latentsearch
from latentsearch import cli_bench
from latentsearch.cli import cli
from latentsearch.errors import InvalidInputError, UnknownSpecError
from latentsearch.evaluation import ann, report, vecfiles
from helpers import write_beir  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPECS = ("Flat", "HNSW8?efSearch=1,4,16,64", "IVF32,Flat?nprobe=1,2,4,8,32")
POINT_KEYS = {
    "index", "spec", "search", "recall", "qps", "latency_ms", "build_seconds", "index_bytes",
    "peak_memory_bytes", "ntotal", "target", "tuning",
}


def clustered(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Points around 32 centres: IVF has lists to choose between, HNSW a graph to walk."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(32, dim)) * 3
    return (centres[rng.integers(0, 32, n)] + rng.normal(size=(n, dim))).astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return clustered(2000, seed=1), clustered(60, seed=2)


@pytest.fixture(scope="module")
def points(data) -> list[ann.AnnPoint]:
    xb, xq = data
    return ann.sweep(xb, xq, None, SPECS, "l2", (1, 10), min_batch_seconds=0.0, latency_queries=10)


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result: Result, *words: str, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    message = lines[-1]
    assert message.startswith(("Error:", "Usage:")) or "Error:" in message, result.output
    for word in words:
        assert word in message, message
    return message


# -- vector files -------------------------------------------------------------------------------


def test_fvecs_and_ivecs_round_trip(tmp_path):
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    ids = np.arange(21, dtype=np.int32).reshape(7, 3)
    vecfiles.write_fvecs(tmp_path / "x.fvecs", x)
    vecfiles.write_ivecs(tmp_path / "i.ivecs", ids)
    assert (tmp_path / "x.fvecs").stat().st_size == 7 * (1 + 5) * 4
    back = vecfiles.read_vectors(tmp_path / "x.fvecs")
    assert back.dtype == np.float32 and np.array_equal(back, x)
    back_ids = vecfiles.read_vectors(tmp_path / "i.ivecs")
    assert back_ids.dtype == np.int32 and np.array_equal(back_ids, ids)
    back[0, 0] = 1.0  # a writable copy, not a view of the file's bytes
    np.save(tmp_path / "x.npy", x)
    assert np.array_equal(vecfiles.read_vectors(tmp_path / "x.npy"), x)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("empty.fvecs", b"", ["empty"]),
        ("odd.fvecs", b"\x01\x00\x00\x00\x00", ["multiple of 4"]),
        ("zero.fvecs", np.array([0, 1], dtype="<i4").tobytes(), ["dimension reads as 0"]),
        ("short.fvecs", np.array([3, 1, 2, 3, 3, 1], dtype="<i4").tobytes(), ["whole number of records"]),
        ("mixed.ivecs", np.array([2, 1, 2, 3, 1, 2], dtype="<i4").tobytes(), ["record 1", "dimension 3"]),
        ("x.csv", b"1,2,3\n", [".fvecs", ".npy"]),
        ("bad.npy", b"not numpy", ["not a readable .npy"]),
    ],
)
def test_bad_vector_files_say_what_is_wrong(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidInputError) as err:
        vecfiles.read_vectors(path)
    for word in words:
        assert word in str(err.value)


def test_npy_must_be_two_dimensional(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros(4, dtype=np.float32))
    with pytest.raises(InvalidInputError, match=r"2-D numeric array, got shape \(4,\)"):
        vecfiles.read_vectors(tmp_path / "v.npy")


# -- specs --------------------------------------------------------------------------------------


def test_sweep_specs_parse_comma_lists():
    spec = ann.SweepSpec.parse("IVF100,Flat?nprobe=1,4,16")
    assert spec.factory == "IVF100,Flat"
    assert spec.points() == [{"nprobe": 1}, {"nprobe": 4}, {"nprobe": 16}]
    assert spec.labels() == ["IVF100,Flat?nprobe=1", "IVF100,Flat?nprobe=4", "IVF100,Flat?nprobe=16"]
    assert ann.SweepSpec.parse("Flat").points() == [{}]
    assert ann.expand_specs(["Flat", "HNSW32?efSearch=16,64"]) == ["Flat", "HNSW32?efSearch=16", "HNSW32?efSearch=64"]


def test_sweep_values_are_bounded_as_a_collection_index_spec_is():
    from latentsearch.indexes.selection import MAX_SEARCH_OPTION

    top = f"HNSW32?efSearch={MAX_SEARCH_OPTION}"
    assert ann.SweepSpec.parse(top).points() == [{"efSearch": MAX_SEARCH_OPTION}]
    with pytest.raises(InvalidInputError, match=f"at most {MAX_SEARCH_OPTION}"):
        ann.SweepSpec.parse(f"HNSW32?efSearch=8,{MAX_SEARCH_OPTION + 1}")


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        ("HNSW32?efsearch=16", UnknownSpecError, ["efsearch", "efSearch"]),
        ("HNSW32?efSearch=16,x", InvalidInputError, ["'x'", "not an integer"]),
        ("HNSW32?efSearch=0", InvalidInputError, ["positive"]),
        ("HNSW32?efSearch=16,1048577", InvalidInputError, ["efSearch=1048577", "at most 1048576"]),
        ("IVF100,Flat?nprobe=99999999999999999999", InvalidInputError, ["nprobe=99999999999999999999", "at most 1048576"]),
        ("HNSW32?efSearch=", InvalidInputError, ["no values"]),
        ("?nprobe=1", InvalidInputError, ["no factory"]),
        ("HNSW32?recall=0.95&efSearch=16,32", InvalidInputError, ["one value per option"]),
        ("HNSW32?recall=2", InvalidInputError, ["between 0 and 1"]),
    ],
)
def test_bad_sweep_specs(text, error, words):
    with pytest.raises(error) as err:
        ann.SweepSpec.parse(text)
    for word in words:
        assert word in str(err.value)


def test_an_option_the_index_ignores_is_an_error(data):
    xb, xq = data
    with pytest.raises(InvalidInputError, match="efSearch does not apply to Flat"):
        ann.sweep(xb, xq, None, ["Flat?efSearch=8"], "l2", (1,), min_batch_seconds=0)
    with pytest.raises(InvalidInputError, match="needs 39000 vectors to train but the base has 2000"):
        ann.sweep(xb, xq, None, ["IVF1000,Flat"], "l2", (1,), min_batch_seconds=0)


# -- the sweep ----------------------------------------------------------------------------------


def test_flat_recall_is_exact(points):
    flat = [p for p in points if p.index == "Flat"]
    assert len(flat) == 1 and flat[0].recall == {"recall@1": 1.0, "recall@10": 1.0}
    assert flat[0].ntotal == 2000


@pytest.mark.parametrize(
    ("factory", "option", "values"),
    [("HNSW8", "efSearch", [1, 4, 16, 64]), ("IVF32,Flat", "nprobe", [1, 2, 4, 8, 32])],
)
def test_recall_grows_with_search_effort(points, factory, option, values):
    mine = [p for p in points if p.index == factory]
    assert [p.search[option] for p in mine] == values
    recall = [p.recall["recall@10"] for p in mine]
    assert all(b >= a - 0.02 for a, b in itertools.pairwise(recall)), recall  # monotone, ties aside
    assert recall[-1] >= 0.95 and recall[-1] > recall[0], recall
    # One build per factory: every point shares its build time and size.
    assert len({(p.build_seconds, p.index_bytes) for p in mine}) == 1


def test_every_point_reports_speed_size_and_memory(points):
    for p in points:
        assert set(p.to_dict()) == POINT_KEYS
        assert p.qps > 0 and p.build_seconds >= 0 and p.index_bytes > 0 and p.peak_memory_bytes >= 0
        assert set(p.latency_ms) == {"p50", "p95", "p99"}
        assert 0 <= p.latency_ms["p50"] <= p.latency_ms["p95"] <= p.latency_ms["p99"]
    sizes = {p.index: p.index_bytes for p in points}
    assert sizes["Flat"] >= 2000 * 16 * 4


def test_a_given_ground_truth_is_used_and_checked(data):
    xb, xq = data
    gt = ann.exact_neighbours(xb, xq, 10, "l2")
    given = ann.sweep(xb, xq, gt, ["Flat"], "l2", (1, 10), min_batch_seconds=0, latency_queries=2)
    assert given[0].recall == {"recall@1": 1.0, "recall@10": 1.0}
    wrong = np.roll(gt, 1, axis=0)  # another query's neighbours
    assert ann.sweep(xb, xq, wrong, ["Flat"], "l2", (10,), min_batch_seconds=0, latency_queries=2)[0].recall["recall@10"] < 0.5
    with pytest.raises(InvalidInputError, match="10 neighbours per query but k=100"):
        ann.sweep(xb, xq, gt, ["Flat"], "l2", (1, 100), min_batch_seconds=0)
    with pytest.raises(InvalidInputError, match="59 rows but there are 60 queries"):
        ann.sweep(xb, xq, gt[:59], ["Flat"], "l2", (1,), min_batch_seconds=0)
    with pytest.raises(InvalidInputError, match="k=5000 is more than the 2000 base vectors"):
        ann.sweep(xb, xq, None, ["Flat"], "l2", (5000,), min_batch_seconds=0)
    with pytest.raises(InvalidInputError, match="dimension 8 but the collection's vectors have dimension 16"):
        ann.sweep(xb, xq[:, :8], None, ["Flat"], "l2", (1,), min_batch_seconds=0)


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_flat_is_exact_for_every_metric(data, metric):
    xb, xq = data
    found = ann.sweep(xb, xq, None, ["Flat", "HNSW8?efSearch=64"], metric, (1, 10), min_batch_seconds=0, latency_queries=2)
    assert found[0].recall == {"recall@1": 1.0, "recall@10": 1.0}
    assert found[1].recall["recall@10"] > 0.5  # HNSW is weak on raw inner product; that is real


def test_split_queries_leaves_the_queries_out_of_the_base():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    base, queries = ann.split_queries(x, 5, seed=3)
    assert base.shape == (15, 2) and queries.shape == (5, 2)
    assert not set(map(tuple, base)) & set(map(tuple, queries))
    again_base, again_queries = ann.split_queries(x, 5, seed=3)
    assert np.array_equal(again_queries, queries) and np.array_equal(again_base, base)
    with pytest.raises(InvalidInputError, match="cannot sample 20 queries from 20 vectors"):
        ann.split_queries(x, 20)


# -- reports ------------------------------------------------------------------------------------


def test_pareto_front_of_hand_made_points():
    pts = [(1.0, 0.9), (2.0, 0.8), (1.5, 0.7), (3.0, 0.5), (0.5, 0.95), (2.0, 0.8), (0.5, 0.9), (3.0, 0.4)]
    # (1.5, .7) loses to (2, .8); (.5, .9) to (1, .9); (3, .4) to (3, .5); the equal (2, .8)s both stay.
    assert report.pareto_front(pts) == [4, 0, 1, 5, 3]
    assert report.pareto_front([]) == []
    assert report.pareto_front([(1.0, 1.0)]) == [0]


def test_json_has_stable_keys(points):
    dataset = report.ann_dataset("synthetic", 2000, 60, 16, "l2", "exact (FAISS Flat)", report.fingerprint_arrays(np.ones(3)))
    doc = json.loads(json.dumps(report.ann_json(points, dataset, (10, 1))))
    assert list(doc) == ["benchmark", "dataset", "k_values", "machine", "results", "pareto", "tuned"]
    assert list(doc["dataset"]) == ["name", "base", "queries", "dim", "metric", "groundtruth", "fingerprint"]
    assert doc["k_values"] == [1, 10]
    assert {"python", "platform", "cpus", "libraries", "date"} <= set(doc["machine"])
    assert "numpy" in doc["machine"]["libraries"]
    assert all(set(row) == POINT_KEYS and list(row["recall"]) == ["recall@1", "recall@10"] for row in doc["results"])
    assert doc["pareto"] and set(doc["pareto"]) <= {p.spec for p in points}
    assert [p.spec for p in points] == [row["spec"] for row in doc["results"]]


def test_fingerprints_follow_the_bytes(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    (tmp_path / "b").write_bytes(b"abd")
    assert report.fingerprint_files([tmp_path / "a"]) != report.fingerprint_files([tmp_path / "b"])
    assert report.fingerprint_files([tmp_path / "a"]) == report.fingerprint_files([tmp_path / "a"])
    x = np.arange(6, dtype=np.float32)
    assert report.fingerprint_arrays(x) != report.fingerprint_arrays(x.reshape(2, 3))
    assert report.fingerprint_arrays(x) != report.fingerprint_arrays(x.astype(np.float64))


def test_markdown_table_and_png_plot(tmp_path, points):
    md = report.ann_markdown(points, "tiny").splitlines()
    assert md[0] == "### tiny"
    assert md[2].startswith("| index | recall@1 | recall@10 | QPS | p50 ms |")
    assert set(md[3]) <= set("|:-")
    assert len(md) == 4 + len(points)
    assert md[4].startswith("| Flat | 1.0000 | 1.0000 |")
    path = report.plot_ann(points, tmp_path / "ann.png", "tiny")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def vector_files(tmp_path, data) -> dict[str, Path]:
    xb, xq = data
    files = {"base": tmp_path / "base.fvecs", "queries": tmp_path / "q.fvecs", "gt": tmp_path / "gt.ivecs"}
    vecfiles.write_fvecs(files["base"], xb)
    vecfiles.write_fvecs(files["queries"], xq)
    vecfiles.write_ivecs(files["gt"], ann.exact_neighbours(xb, xq, 10, "l2").astype(np.int32))
    return files


def test_bench_ann_on_files_writes_every_report(tmp_path, vector_files):
    out = {"json": tmp_path / "r.json", "markdown": tmp_path / "r.md", "plot": tmp_path / "r.png"}
    result = run(
        "bench", "ann", "--base", vector_files["base"], "--queries", vector_files["queries"],
        "--groundtruth", vector_files["gt"], "--index", "Flat", "--index", "HNSW8?efSearch=4,16",
        "-k", 1, "-k", 10, "--json", out["json"], "--markdown", out["markdown"], "--plot", out["plot"],
    )
    assert result.exit_code == 0, result.output
    assert "HNSW8?efSearch=16" in result.stdout and "recall@10" in result.stdout
    doc = json.loads(out["json"].read_text())
    assert [r["spec"] for r in doc["results"]] == ["Flat", "HNSW8?efSearch=4", "HNSW8?efSearch=16"]
    assert doc["results"][0]["recall"] == {"recall@1": 1.0, "recall@10": 1.0}
    assert doc["dataset"]["groundtruth"] == "gt.ivecs" and doc["dataset"]["base"] == 2000
    assert doc["dataset"]["fingerprint"] == report.fingerprint_files(vector_files.values())
    assert out["markdown"].read_text().splitlines()[2].startswith("| index |")
    assert out["plot"].read_bytes()[:8] == PNG_MAGIC


def test_bench_ann_json_to_stdout_computes_the_ground_truth(vector_files):
    result = run("bench", "ann", "--base", vector_files["base"], "--queries", vector_files["queries"],
                 "-k", 5, "--json", "-", "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dataset"]["groundtruth"] == "exact (FAISS Flat)"
    assert doc["results"][0]["recall"] == {"recall@5": 1.0}


def test_bench_ann_input_errors(tmp_path, vector_files):
    one_line_error(run("bench", "ann"), "--base", "--collection", code=2)
    one_line_error(
        run("bench", "ann", "--base", vector_files["base"], "--queries", vector_files["queries"], "--collection", tmp_path),
        "not both", code=2,
    )
    bad = tmp_path / "bad.fvecs"
    bad.write_bytes(b"\x00" * 6)
    one_line_error(run("bench", "ann", "--base", bad, "--queries", vector_files["queries"]), "bad.fvecs", "multiple of 4")
    one_line_error(
        run("bench", "ann", "--base", vector_files["base"], "--queries", vector_files["queries"],
            "--groundtruth", vector_files["gt"], "-q"),
        "k=100", "10 neighbours",
    )
    one_line_error(
        run("bench", "ann", "--base", vector_files["base"], "--queries", vector_files["queries"], "--index", "Nope12"),
        "Nope12",
    )


def test_bench_ann_on_a_collection(tmp_path):
    vectors = clustered(300, seed=5)
    with latentsearch.create(tmp_path / "col", encoder=None, dim=16) as col:
        col.add(vectors)
    result = run("bench", "ann", "--collection", tmp_path / "col", "--sample", 20, "--seed", 1,
                 "--index", "Flat", "--index", "HNSW8?efSearch=8,64", "-k", 1, "-k", 10, "--json", "-", "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dataset"]["base"] == 280 and doc["dataset"]["queries"] == 20
    assert doc["dataset"]["metric"] == "cosine"  # the collection's
    assert doc["results"][0]["recall"] == {"recall@1": 1.0, "recall@10": 1.0}
    # The queries are left out of the base: otherwise each would find itself at rank 1.
    assert json.loads(run("bench", "ann", "--collection", tmp_path / "col", "--sample", 20, "--seed", 1,
                          "-k", 1, "--json", "-", "-q").stdout)["dataset"]["fingerprint"] == doc["dataset"]["fingerprint"]


def test_bench_ann_on_an_empty_collection(tmp_path):
    latentsearch.create(tmp_path / "empty", encoder=None, dim=4).close()
    one_line_error(run("bench", "ann", "--collection", tmp_path / "empty"), "holds no vectors")


def test_bench_quality_scores_every_index_on_one_encoding(tmp_path):
    data = write_beir(tmp_path / "tiny")
    out = tmp_path / "q.json"
    args = ("bench", "quality", "--dataset", data, "--encoder", "hashing:64", "--index", "Flat",
            "--index", "HNSW8?efSearch=4,16", "--collection", tmp_path / "col")
    result = run(*args)
    assert result.exit_code == 0, result.output
    for word in ("ndcg", "mrr", "map", "recall", "precision", "@1", "@100", "HNSW8?efSearch=16", "hashing:64"):
        assert word in result.stdout, word
    result = run(*args, "--json", out)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert list(doc) == ["benchmark", "dataset", "encoder", "machine", "results"]
    assert [r["index"] for r in doc["results"]] == ["Flat", "HNSW8?efSearch=4", "HNSW8?efSearch=16"]
    assert all(r["index_seconds"] == 0 for r in doc["results"])  # the collection was reused
    assert doc["results"][0]["metrics"]["ndcg@1"] == pytest.approx(1.0)
    assert {f"{m}@{k}" for m in ("ndcg", "mrr", "map", "recall", "precision") for k in (1, 3, 5, 10, 100)} == set(
        doc["results"][0]["metrics"]
    )
    one_line_error(run(*args[:-2], "--collection", tmp_path / "col", "--encoder", "hashing:32"), "hashing:64")


def test_bench_quality_when_the_dataset_cannot_be_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cli_bench, "BEIR_URL", "http://127.0.0.1:9/{name}.zip")  # refused at once: offline
    result = run("bench", "quality", "--dataset", "scifact-name-that-is-not-a-folder", "--encoder", "hashing:64")
    message = one_line_error(result, "'scifact-name-that-is-not-a-folder' is not a folder", "--dataset DIR")
    assert "http://127.0.0.1:9/scifact-name-that-is-not-a-folder.zip" in message
    assert "Traceback" not in result.output
    one_line_error(run("bench", "quality", "--dataset", tmp_path / "no" / "such"), "no BEIR dataset folder")


@pytest.mark.parametrize("command", [(), ("ann",), ("quality",)])
def test_bench_commands_have_examples(command):
    result = run("bench", *command, "--help")
    assert result.exit_code == 0
    assert "latentsearch bench" in result.stdout.split("Example:", 1)[1]


def test_bench_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom latentsearch.cli import cli\n"
        "for args in (['bench', '--help'], ['bench', 'ann', '--help'], ['bench', 'quality', '--help']):\n"
        "    try:\n        cli(args, standalone_mode=False)\n    except SystemExit:\n        pass\n"
        "print('HEAVY=' + ','.join(m for m in ('torch', 'faiss', 'matplotlib', 'sqlalchemy') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="


# -- tuned specs (auto, recall=) against the hand-set sweep -----------------------------------------


def test_a_recall_target_is_built_and_tuned_as_a_collection_does_and_placed_against_the_sweep():
    rng = np.random.default_rng(5)
    xb = rng.normal(size=(3000, 16)).astype(np.float32)  # uniform: the defaults lose recall here
    xq = rng.normal(size=(100, 16)).astype(np.float32)
    points = ann.sweep(xb, xq, None, ["HNSW8?efSearch=8,16,32,64,128,256", "HNSW8?recall=0.95", "auto"],
                       "cosine", (1, 10), min_batch_seconds=0, latency_queries=5)
    tuned = {p.spec: p for p in points if p.target is not None}
    assert set(tuned) == {"HNSW8?recall=0.95", "auto"}
    hnsw = tuned["HNSW8?recall=0.95"]
    assert hnsw.search["efSearch"] > 0 and "efSearch" in hnsw.tuning and hnsw.ntotal == 3000
    assert hnsw.recall["recall@10"] >= 0.93  # tuned on held-out stored vectors, measured on new queries
    assert tuned["auto"].tuning.startswith("Flat") and tuned["auto"].recall["recall@10"] == 1.0  # auto: Flat this small
    placed = {t["spec"]: t for t in ann.against_hand_tuned(points)}
    hand = [p for p in points if p.target is None and p.recall["recall@10"] >= 0.95]
    fastest = max(hand, key=lambda p: p.qps)
    assert placed["HNSW8?recall=0.95"]["best_hand_tuned"] == fastest.spec
    assert placed["auto"]["qps_vs_best"] == round(tuned["auto"].qps / fastest.qps, 3)
    lines = report.tuned_lines(points)
    assert len(lines) == 2 and "the fastest hand-set point that reaches it" in lines[0]
    assert "- auto chose Flat" in report.ann_markdown(points)
