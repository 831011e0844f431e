"""Ingestion holds what it works on, not what it has done: the duplicate checks keep 8-byte
digests, the report keeps ids compactly, and peak (Python) memory grows with the corpus by a few
bytes per record, far less than holding the records (or just their keys) would cost."""

from __future__ import annotations

import json
import sys
import tracemalloc

import pytest

import latentsearch
from latentsearch.ingest.keyset import KeySet, digest
from latentsearch.ingest.sources import RecordFields
from helpers import write_jsonl  # noqa: E402


def test_keyset_membership_across_merges():
    keys = KeySet(buffer=8)  # many merges into the sorted array
    words = [f"doc-{i}" for i in range(100)]
    assert all(keys.add(w) for w in words)
    assert len(keys) == 100
    assert not any(keys.add(w) for w in words)  # every one is found again, buffered or merged
    assert all(w in keys for w in words) and "doc-100" not in keys and "" not in keys
    assert keys.add("") and "" in keys


def test_keyset_takes_any_file_name():
    odd = "caf\udce9.txt"  # an undecodable byte of a file name, as os.fsdecode gives it
    keys = KeySet()
    assert keys.add(odd) and not keys.add(odd) and odd in keys
    assert digest("a") != digest("b") and 0 <= digest("x") < 2**64


def test_a_key_repeated_later_in_the_run_is_skipped_and_the_first_kept(tmp_path):
    lines = [{"id": f"r{i}", "text": f"record number {i}"} for i in range(300)]
    lines.append({"id": "r5", "text": "a second record with the key r5"})  # chunks later
    data = write_jsonl(tmp_path / "records.jsonl", lines)
    col = latentsearch.create(tmp_path / "col", encoder="hashing:32")
    report = col.index_paths([data], RecordFields(), batch_size=8)
    assert report.added == 300
    assert [s.reason for s in report.skipped] == ["duplicate key 'r5': it appeared earlier in this run"]
    (item,) = col.store.get([col.store.keys_to_ids(["r5"])["r5"][0]]).values()
    assert item.text == "record number 5"
    assert len(report.ids) == 300 and list(report.ids) == sorted(set(report.ids))
    col.close()


KEY_PAD = 1_000  # characters that make each record's key long: holding the keys would show
# Chunks of 16 x 8 records: the few chunks in flight (more of them when the reader runs ahead on a
# busy machine) then hold far fewer records than the 6,000 the two corpus sizes differ by.
BATCH = 8


def _record(i: int, word: str) -> dict:
    return {"id": f"record-{i:07d}-" + "k" * KEY_PAD, "text": f"{word} number {i} " * 4, "n": i, "note": "m" * 200}


def _peak_while_indexing(tmp_path, n: int) -> int:
    """Peak traced (Python and numpy) memory of re-indexing ``n`` changed records into a
    collection that already holds them (the encoder loaded, the store open, every record updated)."""
    data = tmp_path / f"records-{n}.jsonl"
    data.write_text("".join(json.dumps(_record(i, "text")) + "\n" for i in range(n)), encoding="utf-8")
    col = latentsearch.create(tmp_path / f"col-{n}", encoder="hashing:16")
    col.index_paths([data], RecordFields(), batch_size=BATCH)
    col.close()
    col = latentsearch.open(tmp_path / f"col-{n}")
    data.write_text("".join(json.dumps(_record(i, "changed")) + "\n" for i in range(n)), encoding="utf-8")
    tracemalloc.start()
    try:
        report = col.index_paths([data], RecordFields(), batch_size=BATCH)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.updated == n
    col.close()
    return peak


def _held_per_record(n: int = 500) -> float:
    """What holding a record (key, text, metadata, as parsed) costs, per record."""
    lines = [json.dumps(_record(i, "changed")) for i in range(n)]
    tracemalloc.start()
    try:
        held = [json.loads(line) for line in lines]
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(held) == n
    return size / n


@pytest.mark.slow
def test_peak_memory_does_not_follow_the_corpus(tmp_path):
    """The peak grows with the corpus only by what the run keeps per record by design (an 8-byte
    digest and an 8-byte id, with the copies a merge or a growing array makes) and by what the
    libraries do along the way: about 70 bytes a record with today's, more or less with others.
    So the bound is relative, not in bytes: an extra record costs less than half of what holding
    just its key would (a 1,000-character key), let alone the whole record."""
    small, large = 2_000, 8_000
    peaks = {n: _peak_while_indexing(tmp_path, n) for n in (small, large)}
    per_record = (peaks[large] - peaks[small]) / (large - small)
    key_bytes = sys.getsizeof(_record(0, "changed")["id"])
    held = _held_per_record()
    assert per_record < key_bytes / 2, (
        f"{per_record:.0f} bytes more per extra record (peaks {peaks}); holding a record's key costs "
        f"{key_bytes} bytes, the whole record {held:.0f}"
    )
