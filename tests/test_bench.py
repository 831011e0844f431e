"""The quality harness and the benchmark scripts run end to end on tiny data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentsearch.evaluation.bench import beir_quality
from helpers import needs_dataset, write_beir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_beir_quality_scores_a_tiny_dataset(tmp_path):
    data = write_beir(tmp_path / "tiny")
    result = beir_quality(data, tmp_path / "col", encoder="hashing:256", index="Flat", ks=(1, 3))
    assert result.queries == 3 and result.documents == 4
    # Each query shares distinctive words with its one relevant document only.
    assert result.metrics["ndcg@1"] == pytest.approx(1.0)
    assert result.metrics["recall@3"] == pytest.approx(1.0)
    # Reusing the collection with another index spec encodes nothing again.
    again = beir_quality(data, tmp_path / "col", encoder="hashing:256", index="HNSW16", ks=(1, 3))
    assert again.index_seconds == 0.0
    assert again.metrics["ndcg@1"] == pytest.approx(1.0)


@needs_dataset("reference")  # the script compares with the published scores kept there
def test_scifact_script_runs_on_tiny_data(tmp_path):
    data = write_beir(tmp_path / "tiny")
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scifact.py"), "--dataset", str(data),
         "--encoder", "hashing:256", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["metrics"]["ndcg@10"] > 0.9
    assert "ndcg@10" in proc.stdout and result["machine"]["libraries"]["latentsearch"]


def run_script(name: str, *args: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args, "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote" in proc.stdout
    return json.loads(out.read_text())


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_vectors_benchmark_runs_on_tiny_data(tmp_path, dtype):
    result = run_script("vectors", "--n", "3000", "--dim", "16", "--index", "IVF8,Flat", "--chunk", "1000",
                        "--vector-dtype", dtype, tmp_path=tmp_path)
    # Timings are rounded (to 0.01 s): on a fast machine a short one may round to 0.
    assert result["n"] == 3000 and result["vectors_per_second"] >= 0 and result["peak_rss_mib"] > 0
    assert result["vector_dtype"] == dtype and 0 <= result["searchable_seconds"] <= result["latentsearch_seconds"]


@needs_dataset("scifact")
def test_ingest_benchmark_runs_on_tiny_data(tmp_path):
    result = run_script("ingest", "--limit", "40", "--encoder", "hashing:64", tmp_path=tmp_path)
    assert result["documents"] == 40 and result["ratio"] >= 0  # rounded


@pytest.mark.slow
@needs_dataset("cifar10-test")
def test_images_benchmark_runs_on_tiny_data(tmp_path):
    result = run_script("images", "--limit", "24", "--model", "test_resnet", "--batch-size", "8", tmp_path=tmp_path)
    assert result["images"] == 24 and result["latentsearch_seconds"] >= 0  # rounded to 0.01 s


@pytest.mark.slow
@needs_dataset("siftsmall")
def test_ann_benchmark_runs_on_siftsmall(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ann.py"), "--index", "Flat", "--index", "HNSW16?efSearch=16,64",
         "--out-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "ann.json").read_text())
    flat = [p for p in result["results"] if p["index"].startswith("Flat")]
    assert flat and all(p["recall"]["recall@10"] == 1.0 for p in flat)
    assert (tmp_path / "ann.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "ann.md").exists()


def test_serve_load_benchmark_runs_on_tiny_data(tmp_path):
    pytest.importorskip("uvicorn")
    result = run_script("serve_load", "--workloads", "vector,text", "--vectors", "300", "--dim", "16",
                        "--texts", "200", "--encoder", "hashing:64", "--queries", "40", "--batch", "8",
                        "--clients", "1,2", "--duration", "0.3", "--warmup", "0", tmp_path=tmp_path)
    assert [b["workload"] for b in result["in_process"]] == ["vector", "text"]
    assert all(b["cold_start_s"] > 0 and b["search_batch_qps"] > 0 for b in result["in_process"])
    assert "encode_p50_ms" in result["in_process"][1]
    rows = result["http"]
    # vector: 1 and 2 clients, a batch row, then both with the writer; text: the same without the batch row
    assert [(r["workload"], r["form"], r["clients"], r["writer"]) for r in rows] == [
        ("vector", "single", 1, False), ("vector", "single", 2, False), ("vector", "batch", 1, False),
        ("vector", "single", 1, True), ("vector", "single", 2, True),
        ("text", "single", 1, False), ("text", "single", 2, False), ("text", "single", 1, True),
        ("text", "single", 2, True),
    ]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in rows), [r.get("first_error") for r in rows]
    assert all(r["items_before"] == (300 if r["workload"] == "vector" else 200) for r in rows)  # writes undone
    assert all(r["write_requests"] > 0 for r in rows if r["writer"])
    assert {g["goal"].split(",")[0] for g in result["goals"]} >= {"vector", "text", "0 errors"}


def test_hybrid_benchmark_runs_on_tiny_data(tmp_path):
    data = write_beir(tmp_path / "tiny")
    result = run_script("hybrid", "--dataset", str(data), "--encoder", "hashing:256", tmp_path=tmp_path)
    assert {"dense", "lexical", "hybrid"} <= set(json.dumps(result).replace('"', " ").split())


def test_bench_quality_writes_markdown_and_json(tmp_path):
    from click.testing import CliRunner

    from latentsearch.cli import cli

    data = write_beir(tmp_path / "tiny")
    md, js = tmp_path / "q.md", tmp_path / "q.json"
    result = CliRunner().invoke(cli, ["bench", "quality", "--dataset", str(data), "--encoder", "hashing:256",
                                      "--index", "Flat", "--markdown", str(md), "--json", str(js)])
    assert result.exit_code == 0, result.output
    lines = md.read_text().splitlines()
    assert lines[0].startswith("### tiny test") and lines[2].startswith("| index | metric | @1 |")
    assert any(line.startswith("| Flat | ndcg | 1.0000") for line in lines)
    assert json.loads(js.read_text())["results"][0]["metrics"]["ndcg@10"] == pytest.approx(1.0)
    to_stdout = CliRunner().invoke(cli, ["bench", "quality", "--dataset", str(data), "--encoder", "hashing:256",
                                         "--markdown", "-"])
    assert to_stdout.exit_code == 0 and "| index | metric |" in to_stdout.stdout


@pytest.mark.slow
def test_latent_models_benchmark_runs_on_tiny_data(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, colour in enumerate([(220, 30, 30), (30, 200, 40), (30, 60, 220)]):
        folder = tmp_path / "images" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(np.array(colour) + rng.integers(-30, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    result = run_script("latent_models", "--dataset", str(tmp_path / "images"), "--epochs", "1", "--held-out", "4",
                        "--train-per-class", "4", "--latent", "8", "--layers", "", "--steps", "3",
                        "--models", str(tmp_path / "models"), tmp_path=tmp_path)
    names = [r["encoder"] for r in result["retrieval"]]
    assert names[:3] == ["autoencoder latent (8)", "VAE μ (8)", "raw pixels (hashing:256)"]
    assert all(0 <= r["map"] <= 1 for r in result["retrieval"])
    assert result["reconstruction"]["autoencoder"]["mse"] > 0
    for p in result["interpolations"].values():
        assert Path(p["png"]).read_bytes()[:4] == b"\x89PNG" and p["from"] != p["to"]


def test_image_memory_benchmark_runs_on_tiny_data(tmp_path):
    result = run_script("image_memory", "--images", "2", "--side", "300", tmp_path=tmp_path)
    runs = list(result["results"].values())
    assert [r["added"] for r in runs] == [2, 2] and all(r["peak_mib"] > 0 and not r["skipped"] for r in runs)


def test_recall_targets_benchmark_runs_on_tiny_data(tmp_path):
    result = run_script("recall_targets", "--n", "2000", "--dim", "16", "--queries", "30", "--spec", "HNSW16?recall=0.95",
                        "--data", "clustered", tmp_path=tmp_path)
    [row] = result["results"]
    assert row["index"] == "HNSW16" and 0 <= row["default_recall"] <= 1 and row["tuned_recall"] >= 0.8


@pytest.mark.slow  # loads MiniLM three times and exports it twice: about 30 s
def test_cpu_encoders_benchmark_runs_on_tiny_data(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv("LATENTSEARCH_CACHE", str(tmp_path / "cache"))  # inherited by the script
    data = write_beir(tmp_path / "tiny")
    result = run_script("cpu_encoders", "--dataset", str(data), "--docs", "4", "--repeat", "1", tmp_path=tmp_path)
    assert set(result["results"]) == {"torch", "onnx", "onnx-int8"} and result["docs"] == 4
    assert result["results"]["torch"]["speedup"] == 1.0
    assert all(r["ndcg@10"] > 0.9 for r in result["results"].values())
    assert result["int8_instruction_set"] and "goal_met" in result
