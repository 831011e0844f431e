"""Hostile record and text files: one bad row of a JSONL or CSV file is skipped with its line and
the other rows are indexed; no file is read without a bound (a sparse 8 GB file, a file swapped
for a link to /dev/zero or a FIFO between listing and reading, a line without an end)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import threading
from pathlib import Path

import pytest
from helpers import write

from latentsearch.ingest import lines as lines_module
from latentsearch.ingest.readers import read_text_file
from latentsearch.ingest.records import Record
from latentsearch.ingest.sources import RecordFields, records_from_paths
from latentsearch.types import Skipped


@pytest.fixture
def col(hashing_collection, store_url):
    return hashing_collection(store=None if store_url.startswith("sqlite") else store_url)


def split(items) -> tuple[list[Record], list[Skipped]]:
    items = list(items)
    return [r for r in items if isinstance(r, Record)], [s for s in items if isinstance(s, Skipped)]


def jsonl_rows(n: int) -> list[bytes]:
    return [json.dumps({"id": f"r{i}", "text": f"record number {i}"}).encode() for i in range(1, n + 1)]


# -- 7: one bad row ---------------------------------------------------------------------------------


def test_an_invalid_utf8_byte_on_line_50_skips_line_50_only(col, tmp_path):
    rows = jsonl_rows(100)
    rows[49] = b'{"id": "r50", "text": "caf\xe9"}'
    f = write(tmp_path / "r.jsonl", b"\n".join(rows))
    report = col.index_paths([f])
    assert report.added == 99
    assert report.skipped == [Skipped(f"{f.resolve()}:50", "not UTF-8 (byte 0xe9 at column 27)")]


def test_a_csv_row_that_is_not_utf8_skips_that_row_only(col, tmp_path):
    rows = [b"id,text"] + [f"r{i},record {i}".encode() for i in range(1, 101)]
    rows[50] = b"r50,caf\xe9"  # line 51: the header is line 1
    f = write(tmp_path / "r.csv", b"\r\n".join(rows))
    report = col.index_paths([f])
    assert report.added == 99
    assert report.skipped == [Skipped(f"{f.resolve()}:51", "not UTF-8 (byte 0xe9)")]


def test_a_csv_field_over_the_csv_modules_default_limit_is_read(col, tmp_path):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "text"])
    for i in range(1, 101):
        writer.writerow([f"r{i}", ("long " * 40_000) if i == 50 else f"record {i}"])  # 200 kB > 128 KiB
    f = write(tmp_path / "r.csv", buffer.getvalue())
    report = col.index_paths([f])
    assert report.skipped == [] and report.inputs == 100


def test_a_line_over_the_limit_is_skipped_and_the_next_lines_read(tmp_path, monkeypatch):
    monkeypatch.setattr(lines_module, "MAX_RECORD_BYTES", 200)
    rows = jsonl_rows(5)
    rows[2] = json.dumps({"id": "r3", "text": "x" * 500}).encode()
    f = write(tmp_path / "r.jsonl", b"\n".join(rows))
    records, skipped = split(records_from_paths([f]))
    assert [r.key for r in records] == ["r1", "r2", "r4", "r5"]
    assert skipped == [Skipped(f"{f.resolve()}:3", "line over 200 bytes (MAX_RECORD_BYTES)")]
    table = write(tmp_path / "t.csv", "id,text\n1,one\n2," + "y" * 500 + "\n3,three\n")
    records, skipped = split(records_from_paths([table]))
    assert [r.key for r in records] == ["1", "3"]
    assert skipped == [Skipped(f"{table.resolve()}:3", "line over 200 bytes (MAX_RECORD_BYTES)")]


def test_csv_rows_are_numbered_by_the_line_they_start_on(tmp_path):
    f = write(tmp_path / "r.csv", 'id,text\n1,"two\nlines"\n2,"bad \xe9"\n3,ok\n'.encode("latin-1"))
    records, skipped = split(records_from_paths([f]))
    assert [(r.key, r.source.rsplit(":", 1)[1]) for r in records] == [("1", "2"), ("3", "5")]
    assert [s.source.rsplit(":", 1)[1] for s in skipped] == ["4"]


def test_a_bom_a_blank_line_and_crlf_are_read_as_before(tmp_path):
    f = write(tmp_path / "r.jsonl", b"\xef\xbb\xbf" + b'{"id": "a", "text": "x"}\r\n\r\n{"id": "b", "text": "y"}\r\n')
    assert [r.key for r in records_from_paths([f])] == ["a", "b"]


# -- 10: unbounded reads --------------------------------------------------------------------------------


def test_a_sparse_8_gb_text_file_is_skipped_without_being_read(tmp_path):
    f = tmp_path / "huge.txt"
    with open(f, "wb") as fh:
        fh.truncate(8 << 30)  # sparse: no disk, and reading it would fill the memory
    [skipped] = records_from_paths([f])
    assert isinstance(skipped, Skipped) and "text file of 8,589,934,592 bytes" in skipped.reason


NO_DEV_ZERO = pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")


@NO_DEV_ZERO
def test_a_text_file_swapped_for_dev_zero_after_listing_is_refused(tmp_path):
    f = write(tmp_path / "a.txt", "small")
    [record] = records_from_paths([f])
    f.unlink()
    f.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="not a regular file"):
        record.load()


def test_a_text_file_that_grew_after_listing_is_read_with_a_bound(tmp_path):
    f = write(tmp_path / "a.txt", "small")
    [record] = records_from_paths([f], RecordFields(max_text_bytes=100))
    write(f, "grown " * 1000)
    with pytest.raises(ValueError, match="over the limit of 100"):
        record.load()
    with pytest.raises(ValueError, match="over the limit of 10 "):
        read_text_file(f, 10)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    done = threading.Event()
    result: list = []

    def read() -> None:
        try:
            read_text_file(fifo)
        except ValueError as exc:
            result.append(str(exc))
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(5), "reading a FIFO blocked"
    assert result == ["not a regular file"]


@NO_DEV_ZERO
@pytest.mark.parametrize("name", ["r.jsonl", "r.csv"])
def test_a_record_file_swapped_for_dev_zero_is_skipped(tmp_path, name):
    f = write(tmp_path / name, "id,text\n1,x\n" if name.endswith("csv") else '{"text": "x"}\n')
    found = list(records_from_paths([f]))
    assert len(found) == 1 and isinstance(found[0], Record)
    f.unlink()
    f.symlink_to("/dev/zero")
    from latentsearch.ingest.sources import records_from_file

    assert list(records_from_file(f, RecordFields())) == [Skipped(str(f.resolve()), "not a regular file")]


# -- what the user sees -------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes as a name")
def test_the_index_command_reports_a_name_that_is_not_utf8_and_goes_on(tmp_path):
    from click.testing import CliRunner

    from latentsearch.cli import EXIT_SKIPPED, cli

    folder = tmp_path / "docs"
    for i in range(3):
        write(folder / f"good{i}.txt", f"good text number {i}")
    with open(os.fsencode(folder) + b"/caf\xe9.txt", "wb") as fh:
        fh.write(b"a file named in Latin-1")
    errors = tmp_path / "errors.jsonl"
    result = CliRunner().invoke(cli, ["index", str(tmp_path / "col"), str(folder), "--encoder", "hashing:64",
                                      "--errors", str(errors), "--json"])
    assert result.exit_code == EXIT_SKIPPED, (result.output, result.exception)
    assert json.loads(result.stdout)["added"] == 3
    [line] = [json.loads(x) for x in errors.read_text(encoding="utf-8").splitlines()]
    assert line["source"].endswith("caf\\xe9.txt") and "not UTF-8" in line["reason"]


def test_a_row_the_database_refuses_is_reported_in_one_line(store_url, store_schema):
    """Past the checks at the door (a store written directly): the database's reason, one line,
    and never the batch's values."""
    import numpy as np

    from latentsearch.stores.bulk import StoreWriteError
    from latentsearch.stores.sql import NewItem, SqlStore

    store = SqlStore(store_url, 4, schema=store_schema)
    store.create({"dim": "4"})
    try:
        twice = [NewItem(np.ones(4, np.float32), "text", key="same", text="t" * 10_000) for _ in range(2)]
        with pytest.raises(StoreWriteError) as err:
            store.write(twice)
        message = str(err.value)
        assert "\n" not in message and len(message) < 400 and "tttt" not in message
        assert "refused a batch of 2 rows for the table items" in message and "unique" in message.lower()
        assert store.count() == 0
    finally:
        if store_schema:
            store.drop()
        store.close()
