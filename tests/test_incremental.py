"""Re-indexing a folder: only new and changed files are embedded; renames reuse vectors;
--prune removes what is gone; long files become passages grouped back by document."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import latentsearch
from latentsearch.ingest.records import PASSAGE_SEPARATOR
from latentsearch.ingest.chunking import ChunkConfig

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau. "


class CountingEncoder:
    """Wraps the collection's encoder and counts the texts it is asked to encode."""

    def __init__(self, inner):
        self.inner, self.texts = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_text(self, texts, batch_size=32):
        self.texts += len(texts)
        return self.inner.encode_text(texts, batch_size)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    for i in range(5):
        (d / f"f{i}.txt").write_text(f"note {i} about the {['sea', 'sky', 'soil', 'sun', 'snow'][i]}")
    return d


def open_counting(path: Path):
    col = latentsearch.open(path)
    col.encoder_slot.use(CountingEncoder(latentsearch.open(path).encoder))
    return col


def test_unchanged_files_are_not_encoded_again(tmp_path, folder):
    with latentsearch.create(tmp_path / "col", encoder="hashing:64", index="Flat") as col:
        assert col.index_paths([folder]).added == 5
    with open_counting(tmp_path / "col") as col:
        report = col.index_paths([folder])
        assert (report.added, report.updated, report.unchanged) == (0, 0, 5)
        assert col.encoder.texts == 0


def test_modify_touch_rename_copy_delete_and_prune(tmp_path, folder, store_url, hashing_collection):
    """On SQLite (in the folder) and on PostgreSQL."""
    col = hashing_collection("col", index="HNSW16", store=None if store_url.startswith("sqlite") else store_url)
    col.index_paths([folder])
    col.close()
    (folder / "f0.txt").write_text("note 0 rewritten about rivers")  # changed
    os.utime(folder / "f1.txt", ns=(1, 1))  # touched only: same content, other mtime
    shutil.move(folder / "f2.txt", folder / "sub" / "moved.txt")  # renamed
    shutil.copy(folder / "f3.txt", folder / "copy.txt")  # duplicated
    (folder / "f4.txt").unlink()  # deleted
    with open_counting(tmp_path / "col") as col:
        report = col.index_paths([folder], prune=True)
        assert col.encoder.texts == 1, "only the rewritten file is embedded"
        assert report.updated == 1 and report.added == 2  # moved.txt and copy.txt, vectors reused
        assert report.pruned == 2  # f2.txt (moved away) and f4.txt
        assert len(col) == 5
        keys = {Path(h.key).name for h in col.search("note", k=10)}
        assert keys == {"f0.txt", "f1.txt", "moved.txt", "f3.txt", "copy.txt"}
        assert col.search("rivers", k=1)[0].key.endswith("f0.txt")
        assert col.verify()["missing_from_index"] == []
    with open_counting(tmp_path / "col") as col:
        report = col.index_paths([folder])
        assert (report.added, report.updated, report.unchanged) == (0, 0, 5)
        assert col.encoder.texts == 0


def test_long_documents_become_passages_and_group_back(tmp_path, folder):
    (folder / "long.txt").write_text(WORDS * 40)
    with latentsearch.create(tmp_path / "col", encoder="hashing:64", index="Flat") as col:
        col.index_paths([folder], chunking=ChunkConfig(max_tokens=64, overlap_tokens=8))
        passages = [h for h in col.search("sigma tau", k=50) if h.document.endswith("long.txt")]
        assert len(passages) > 5
        sep = PASSAGE_SEPARATOR
        assert {h.key for h in passages} == {f"{h.document}{sep}{h.metadata['passage']}" for h in passages}
        assert all(len(h.text.split()) <= 64 for h in passages)
        grouped = col.search("sigma tau", k=3, group_by="document")
        assert len({h.document for h in grouped}) == 3
        assert grouped[0].document.endswith("long.txt")
        # The document shrinks: its passages that no longer exist leave the collection.
        (folder / "long.txt").write_text(WORDS * 5)
        col.index_paths([folder], chunking=ChunkConfig(max_tokens=64, overlap_tokens=8))
        left = [h for h in col.search("sigma tau", k=50) if h.document.endswith("long.txt")]
        assert 1 < len(left) < len(passages)
        assert col.verify()["not_in_store"] == [] and col.verify()["missing_from_index"] == []


def test_without_chunking_a_long_text_is_one_item(tmp_path, folder):
    (folder / "long.txt").write_text(WORDS * 40)
    with latentsearch.create(tmp_path / "col", encoder="hashing:64", index="Flat") as col:
        col.index_paths([folder], chunking=None)
        assert len(col) == 6


def test_a_changed_encoder_fingerprint_forces_re_embedding(tmp_path, folder):
    import json

    from click.testing import CliRunner

    from latentsearch.cli import cli
    from latentsearch.errors import EncoderMismatchError

    with latentsearch.create(tmp_path / "col", encoder="hashing:64", index="HNSW16") as col:
        col.index_paths([folder])
        before = {h.id: h.score for h in col.search("note about the sea", k=5)}
    manifest = tmp_path / "col" / "latentsearch.json"
    data = json.loads(manifest.read_text())
    real = data["encoder_fingerprint"]
    data["encoder_fingerprint"] = "weights-of-an-older-model"  # as if the model had changed since
    manifest.write_text(json.dumps(data))
    with latentsearch.open(tmp_path / "col") as col:
        with pytest.raises(EncoderMismatchError, match="re-embed"):
            col.search("note about the sea", k=5)
    result = CliRunner().invoke(cli, ["index", str(tmp_path / "col"), str(folder)])
    assert result.exit_code == 0, result.output
    assert "re-embedding its 5 items first" in result.stderr
    assert json.loads(manifest.read_text())["encoder_fingerprint"] == real
    with latentsearch.open(tmp_path / "col") as col:
        after = {h.id: h.score for h in col.search("note about the sea", k=5)}
        assert after.keys() == before.keys()
        assert col.verify()["missing_from_index"] == [] and col.verify()["indexed_twice"] == []


def test_reindexing_a_record_file_with_other_fields_says_what_will_be_replaced(tmp_path, caplog):
    import json

    from click.testing import CliRunner

    from latentsearch.cli import cli
    from latentsearch.ingest.sources import RecordFields

    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps({"_id": f"d{i}", "title": f"title {i}", "text": f"text of {i}"}) + "\n"
                            for i in range(6)))
    with latentsearch.create(tmp_path / "col", encoder="hashing:32") as col:
        first = col.index_paths([data], RecordFields(text="text"))
        assert first.added == 6 and first.warnings == []
        again = col.index_paths([data], RecordFields(text="text"))
        assert again.unchanged == 6 and again.warnings == []
        with caplog.at_level("WARNING"):
            changed = col.index_paths([data], RecordFields(text="title,text"))
        assert changed.updated == 6
        (warning,) = changed.warnings
        assert warning.source == str(data.resolve())
        assert "--text-field text, now with --text-field title,text" in warning.reason
        assert "will be replaced" in warning.reason and "will be replaced" in caplog.text
    result = CliRunner().invoke(cli, ["index", str(tmp_path / "col"), str(data), "--text-field", "text"])
    assert result.exit_code == 0 and "indexed before with --text-field title,text" in result.output, result.output
