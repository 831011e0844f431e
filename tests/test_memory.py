"""Ingestion holds what it works on, not what it has done: the duplicate checks keep 8-byte
digests, the report keeps ids compactly, and peak (Python) memory barely moves when the corpus
grows tenfold."""

from __future__ import annotations

import json
import tracemalloc

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


def _peak_while_indexing(tmp_path, n: int) -> int:
    data = tmp_path / f"records-{n}.jsonl"
    with data.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"record-{i:07d}", "text": f"text number {i} " * 4, "n": i}) + "\n")
    col = latentsearch.create(tmp_path / f"col-{n}", encoder="hashing:16")
    col.index_paths([data], RecordFields(), batch_size=32)  # load the encoder, open the store
    col.close()
    col = latentsearch.open(tmp_path / f"col-{n}")
    data.write_text(data.read_text(encoding="utf-8").replace("text number", "changed text"), encoding="utf-8")
    tracemalloc.start()
    try:
        report = col.index_paths([data], RecordFields(), batch_size=32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.updated == n
    col.close()
    return peak


def test_peak_memory_does_not_follow_the_corpus(tmp_path):
    # Both runs fill the pipeline (chunks of 16 x 32 records, a few in flight); the larger has
    # 16,000 more records, which held whole would add megabytes (keys, sources, texts, metadata).
    # What may grow is 8 bytes of digest and 8 of id per record (and a merge's copy): < 1 MB.
    small, large = _peak_while_indexing(tmp_path, 4_000), _peak_while_indexing(tmp_path, 20_000)
    assert large < small + 1_000_000, (small, large)
