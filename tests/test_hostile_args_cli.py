"""Hostile arguments on the command line: every one is a result, or a non-zero exit with one
``Error:`` line and no traceback. Commands that aborted the process run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from latentsearch.cli import EXIT_SKIPPED, cli
from latentsearch.cli_common import MAX_JSON_NESTING, json_nesting
from helpers import assert_one_line_error, write_small_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENC = "hashing:64"
HUGE = "99999999999999999999"  # beyond 64 bits


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def run_process(*args: object) -> subprocess.CompletedProcess:
    """The command in a fresh interpreter on this checkout: an abort fails the test, not the run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "latentsearch.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.fixture
def col(tmp_path) -> Path:
    data = write_small_corpus(tmp_path / "data")
    path = tmp_path / "col"
    result = run("index", path, data, "--encoder", ENC, "-q")
    assert result.exit_code == 0, result.output
    return path


# -- 11. huge k ------------------------------------------------------------------------------------


def test_search_with_k_2_to_the_31_lists_every_item(col):
    """It aborted the process (FAISS std::bad_alloc)."""
    for args in (["search", col, "cats", "-k", 2**31], ["search", col, "cats", "-k", 2**63 - 1, "--documents"],
                 ["clusters", col, "cats", "-k", 2**31], ["explore", col, '"cats"', "-k", 2**31],
                 ["explore", col, '"cats"', "-k", 2**31, "--mmr", "0.5", "--fetch-k", 2**63 - 1]):
        done = run_process(*args, "--json")
        assert done.returncode == 0, done.stderr[-2000:]
        out = json.loads(done.stdout)
        assert (sum(c["size"] for c in out) if args[0] == "clusters" else len(out)) == 3, args


def test_search_table_is_as_wide_as_its_hits_not_as_k(col):
    result = run("search", col, "cats", "-k", 2**63 - 1)
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0]
    assert header.startswith("#  score"), header  # the # column fits "3", not 19 digits


@pytest.mark.parametrize(
    "args, words",
    [
        (["search", "{col}", "cats", "-k", HUGE], ["k is 99999999999999999999, beyond 64-bit integers"]),
        (["search", "{col}", "cats", "-k", HUGE, "--mode", "lexical"], ["beyond 64-bit"]),
        (["clusters", "{col}", "cats", "-k", HUGE], ["k is", "beyond 64-bit"]),
        (["explore", "{col}", '"cats"', "-k", HUGE], ["k is", "beyond 64-bit"]),
        (["explore", "{col}", '"cats"', "--mmr", "0.5", "--fetch-k", HUGE], ["fetch_k is", "beyond 64-bit"]),
        (["explore", "{col}", "--between", '"cats"', '"ships"', "-k", HUGE], ["k is", "beyond 64-bit"]),
        (["explore", "{col}", "--between", '"cats"', '"ships"', "--steps", "1000000000"],
         ["steps must be an integer from 2 to 1000", "1000000000"]),
        (["explore", "{col}", "--between", '"cats"', '"ships"', "--steps", HUGE], ["steps must be"]),
        (["explore", "{col}", f"#{HUGE}"], [f"no item with id {HUGE} in this collection"]),
        (["explore", "{col}", f'"cats" - #{2**63}'], [f"no item with id {2**63}"]),
        (["explore", "{col}", "--between", "#1", f"#{HUGE}"], [f"no item with id {HUGE}"]),
        (["explore", "{col}", "#" + "9" * 5000], ["(5000 digits) in this collection"]),
    ],
)
def test_invalid_counts_and_ids_are_one_line_errors(col, args, words):
    """-k 99999999999999999999 was a ValueError traceback, --steps 1000000000 ran unbounded."""
    assert_one_line_error(run(*[str(a).replace("{col}", str(col)) for a in args]), *words)


# -- 12. ids beyond 64 bits -----------------------------------------------------------------------


def test_delete_reports_ids_beyond_64_bits_as_not_found(col):
    """``delete --id 2**63`` was an OverflowError traceback."""
    result = run("delete", col, "--id", HUGE, "--id", -(2**63) - 1, "--id", -1, "--id", 1)
    assert result.exit_code == EXIT_SKIPPED, result.output
    assert "Traceback" not in result.output
    assert result.stdout.strip() == "deleted 1 of 4 items"
    assert result.stderr.strip() == f"not found: id {HUGE}, id {-(2**63) - 1}, id -1"
    assert len(json.loads(run("search", col, "cats", "--json").stdout)) == 2


# -- 13. index specs FAISS would crash on ------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, words",
    [
        ("HNSW0", ["'HNSW0' asks for 0 neighbours per node", "HNSW32"]),
        ("HNSW1", ["2 to 256"]),
        ("IVF0,Flat", ["'IVF0' asks for 0 lists"]),
        ("PQ7", ["PQ7 splits 64 dimensions into 7", "divisor of 64"]),
        ("PQ8x20", ["20 bits per code"]),
        ("OPQ0,IVF4,PQ4", ["'OPQ0' asks for 0 sub-quantizers"]),
        ("NSG32", ["NSG graphs cannot add vectors"]),
        ("HNSW32,Flat?efSearch=0", ["efSearch must be positive"]),
        ("HNSW32?efSearch=99999999999", ["efSearch=99999999999 is too large", "1048576"]),
    ],
)
def test_reindex_with_a_bad_spec_is_a_one_line_error_in_a_live_process(col, spec, words):
    """``reindex --index HNSW0`` aborted the process on a FAISS assertion; the collection is
    left as it was."""
    done = run_process("reindex", col, "--index", spec)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and all(w in errors[0] for w in words), done.stderr
    assert json.loads((col / "latentsearch.json").read_text())["index"] == "auto"
    assert len(json.loads(run("search", col, "cats", "--json").stdout)) == 3


def test_index_with_a_bad_spec_makes_no_collection(tmp_path, col):
    data = tmp_path / "data"
    assert_one_line_error(run("index", tmp_path / "other", data, "--encoder", ENC, "--index", "HNSW0"), "HNSW0")
    assert not (tmp_path / "other").exists()


# -- 14. --where nested past every limit ----------------------------------------------------------


def nested(levels: int, inner: str = '{"topic": "x"}') -> str:
    return '{"$not": ' * levels + inner + "}" * levels


@pytest.mark.parametrize(
    "where, words",
    [
        (nested(10_000), ["--where nests objects and arrays more than 100 levels deep"]),
        ("[" * 10_000 + "]" * 10_000, ["more than 100 levels deep"]),
        ('{"a": ' + "[" * 100_000, ["more than 100 levels deep"]),  # unterminated too
        (nested(50), ["nests $and, $or and $not more than 24 levels deep"]),
        ('{"topic": {"$in": ' + "[" * 90 + "]" * 90 + "}}", ["levels deep"]),
    ],
    ids=["$not x10000", "arrays x10000", "unterminated", "$not x50", "$in of lists x90"],
)
def test_deep_where_is_a_assert_one_line_error(col, where, words):
    """A --where nested 10,000 levels was a RecursionError traceback from json.loads."""
    for command in (["search", col, "cats"], ["clusters", col, "cats"]):
        assert_one_line_error(run(*command, "--where", where), *words)


def test_where_nesting_scan_skips_strings():
    assert json_nesting('{"a": "[[[[{{{{", "b": "\\"[[["}') == 1
    assert json_nesting('{"a": [{"b": [1]}]}') == 4
    assert json_nesting("[" * 10**6) == MAX_JSON_NESTING + 1  # stops counting at the limit
    assert json_nesting("no json at all") == 0


def test_where_at_the_nesting_limit_still_searches(col):
    where = '{"$and": [' * 12 + '{"topic": {"$exists": false}}' + "]}" * 12
    result = run("search", col, "cats", "--where", where, "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 3
