"""benchmarks/peers.py runs end to end on tiny data with whichever peers are installed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "peers.py"
SYSTEMS = {"latentsearch": "latentsearch", "raw FAISS": "faiss", "hnswlib": "hnswlib", "Chroma": "chromadb",
           "LanceDB": "lancedb"}


def run(tmp_path: Path, *args: str, prelude: str = "pass") -> dict:
    out = tmp_path / "peers.json"
    code = (f"import runpy, sys; {prelude}; sys.argv = [{str(SCRIPT)!r}, *{list(args)!r}, '--out', {str(out)!r}]; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "recall@10" in done.stdout  # the table was printed
    return json.loads(out.read_text())


def test_peers_script_runs_on_tiny_data(tmp_path):
    result = run(tmp_path, "--n", "500", "--queries", "20")
    assert result["benchmark"] == "peers" and result["n"] == 500 and result["queries"] == 20
    assert result["filter_matches"] > 0
    rows = result["rows"]
    for system, module in SYSTEMS.items():
        mine = [r for r in rows if r["system"] == system]
        assert mine, f"{system} missing from the results"
        if importlib.util.find_spec(module) is None:
            assert result["installed"][system] is None
            assert [r["setting"] for r in mine] == ["not installed"]
            continue
        assert all(r["setting"] != "failed" for r in mine), mine
        measured = [r for r in mine if "recall_at_10" in r]
        assert measured, mine
        for r in measured:
            assert 0.0 <= r["recall_at_10"] <= 1.0 and r["qps"] >= 0  # rounded to 0.1
        filtered = [r for r in measured if "filtered_recall_at_10" in r]
        assert filtered, f"{system} has no filtered search"
        for r in filtered:
            assert 0.0 <= r["filtered_recall_at_10"] <= 1.0
            assert r["filtered_wrong_bucket"] == 0  # a filter never returns an item outside the bucket
    ours = [r for r in rows if r["system"] == "latentsearch"]
    assert ours[0]["recall_at_10"] == 1.0 and ours[0]["filtered_recall_at_10"] == 1.0  # auto is exact at 500
    assert all(r["filtered_results_min"] == result["filter_matches"] for r in ours if "filtered_results_min" in r)
    assert len([r for r in ours if r["setting"].startswith("HNSW32 efSearch=")]) == 6  # the efSearch sweep
    # matched recall: the fastest measured setting of each system that reaches each target
    matched = {m["system"]: m for m in result["matched_recall"]}
    assert set(matched) == {r["system"] for r in rows if "qps" in r}
    for system, m in matched.items():
        for target in (0.9, 0.95, 0.99):
            ok = [r for r in rows if r["system"] == system and r.get("recall_at_10", -1) >= target]
            assert m[f"qps_at_{target}"] == (max(r["qps"] for r in ok) if ok else None)
    assert matched["latentsearch"]["qps_at_0.99"] is not None  # exact Flat reaches every target


def test_matched_recall_picks_the_fastest_setting_that_reaches_each_target():
    spec = importlib.util.spec_from_file_location("peers", SCRIPT)
    peers = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPT.parent))
    spec.loader.exec_module(peers)
    rows = [
        {"system": "a", "setting": "fast", "recall_at_10": 0.91, "qps": 900.0},
        {"system": "a", "setting": "mid", "recall_at_10": 0.96, "qps": 500.0},
        {"system": "a", "setting": "slow", "recall_at_10": 0.995, "qps": 100.0},
        {"system": "a", "setting": "slow and worse", "recall_at_10": 0.97, "qps": 50.0},
        {"system": "b", "setting": "only", "recall_at_10": 0.5, "qps": 9999.0},
        {"system": "c", "setting": "not installed"},
    ]
    got = {m["system"]: m for m in peers.matched_recall(rows)}
    assert set(got) == {"a", "b"}
    assert (got["a"]["qps_at_0.9"], got["a"]["setting_at_0.9"]) == (900.0, "fast")
    assert (got["a"]["qps_at_0.95"], got["a"]["setting_at_0.95"]) == (500.0, "mid")
    assert (got["a"]["qps_at_0.99"], got["a"]["setting_at_0.99"]) == (100.0, "slow")
    assert got["b"]["qps_at_0.9"] is None and got["b"]["setting_at_0.9"] == "not reached"


def test_a_missing_peer_is_listed_as_not_installed(tmp_path):
    # sys.modules[name] = None makes `import name` raise ImportError, as when it is not installed
    result = run(tmp_path, "--n", "300", "--queries", "5", "--only", "latentsearch", "hnswlib",
                 prelude="sys.modules['hnswlib'] = None")
    assert result["installed"]["hnswlib"] is None
    assert [r["setting"] for r in result["rows"] if r["system"] == "hnswlib"] == ["not installed"]
    assert {r["system"] for r in result["rows"]} == {"latentsearch", "hnswlib"}
