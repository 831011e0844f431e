"""Sources: folder walking (globs, hidden entries, symbolic links), file lists, Parquet and
Python records, text decoding, and every bad input skipped with a reason; then the ``index``
command's options."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from latentsearch.cli import EXIT_SKIPPED, cli
from latentsearch.errors import InvalidInputError
from latentsearch.ingest import sources
from latentsearch.ingest.records import Record
from latentsearch.ingest.readers import LATIN1_WARNING, read_text_file
from latentsearch.ingest.sources import RecordFields, records_from_iterable, records_from_paths
from latentsearch.ingest.walk import SourceOptions, compile_glob, iter_files, paths_from_list
from latentsearch.types import Skipped
from helpers import write  # noqa: E402

ENC = "hashing:64"


def split(items) -> tuple[list[Record], list[Skipped]]:
    items = list(items)
    return [r for r in items if isinstance(r, Record)], [s for s in items if isinstance(s, Skipped)]


def names(root: Path, **options) -> list[str]:
    """Relative paths of the files found under ``root`` with these options."""
    found = list(iter_files([root], SourceOptions(**options)))
    assert all(not isinstance(f, Skipped) for f in found), found
    return [f.path.relative_to(root).as_posix() for f in found]


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    for rel in (
        "a.md",
        "b.txt",
        "docs/guide.md",
        "docs/api/ref.md",
        "docs/api/ref.txt",
        "drafts/wip.md",
        "node_modules/pkg/readme.md",
        ".git/config.txt",
        "docs/.cache/x.md",
        ".env.txt",
    ):
        write(root / rel, f"text of {rel}")
    return root


# -- globs, hidden entries -------------------------------------------------------------------


def test_walk_order_files_before_subfolders_and_hidden_left_out(tree):
    assert names(tree) == [
        "a.md",
        "b.txt",
        "docs/guide.md",
        "docs/api/ref.md",
        "docs/api/ref.txt",
        "drafts/wip.md",
        "node_modules/pkg/readme.md",
    ]


def test_hidden_option_takes_hidden_files_and_folders(tree):
    found = names(tree, hidden=True)
    assert {".env.txt", ".git/config.txt", "docs/.cache/x.md"} <= set(found)
    assert len(found) == 10


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"include": ["*.md"]}, ["a.md", "docs/guide.md", "docs/api/ref.md", "drafts/wip.md", "node_modules/pkg/readme.md"]),
        ({"include": ["docs/*.md"]}, ["docs/guide.md"]),  # * stays within one folder
        ({"include": ["docs/**/*.md"]}, ["docs/guide.md", "docs/api/ref.md"]),  # ** spans none or more
        ({"include": ["**/ref.*"]}, ["docs/api/ref.md", "docs/api/ref.txt"]),
        ({"include": ["ref.txt", "a.*"]}, ["a.md", "docs/api/ref.txt"]),  # a name matches at any depth
        ({"include": ["?.[mt][dx]*"]}, ["a.md", "b.txt"]),
        ({"include": ["[!a].txt"]}, ["b.txt"]),
        ({"exclude": ["*.md"]}, ["b.txt", "docs/api/ref.txt"]),
        ({"exclude": ["node_modules", "drafts/"]}, ["a.md", "b.txt", "docs/guide.md", "docs/api/ref.md", "docs/api/ref.txt"]),
        ({"exclude": ["docs/**"]}, ["a.md", "b.txt", "drafts/wip.md", "node_modules/pkg/readme.md"]),
        ({"include": ["*.md"], "exclude": ["docs", "drafts/wip.md", "pkg"]}, ["a.md"]),  # exclude wins
        ({"include": ["./docs/api/*"]}, ["docs/api/ref.md", "docs/api/ref.txt"]),
    ],
)
def test_include_and_exclude_globs(tree, options, expected):
    assert names(tree, **options) == expected


def test_glob_rule_details():
    assert compile_glob("*.md").fullmatch("a.md") and not compile_glob("*.md").fullmatch("d/a.md")
    assert compile_glob("**").fullmatch("any/depth/at.all")
    assert compile_glob("a/**/b").fullmatch("a/b") and compile_glob("a/**/b").fullmatch("a/x/y/b")
    assert not compile_glob("a?c").fullmatch("a/c")
    assert not compile_glob("[!x]").fullmatch("/")
    assert compile_glob("[]]x").fullmatch("]x")
    assert compile_glob("[ab").fullmatch("[ab")  # an unclosed class is literal
    assert compile_glob("a.b").fullmatch("a.b") and not compile_glob("a.b").fullmatch("axb")
    assert not compile_glob("*.MD").fullmatch("a.md")  # case-sensitive
    with pytest.raises(InvalidInputError, match="empty"):
        SourceOptions(include=("  ",))


def test_explicit_paths_bypass_filters(tree):
    found = list(iter_files([tree / ".env.txt", tree / "drafts" / "wip.md"], SourceOptions(exclude=("*",))))
    assert [f.path.name for f in found] == [".env.txt", "wip.md"]


def test_a_hidden_root_folder_is_walked(tree):
    assert names(tree / ".git") == ["config.txt"]


# -- symbolic links ------------------------------------------------------------------------------


def test_a_symlink_loop_is_walked_once(tmp_path):
    root = tmp_path / "root"
    write(root / "top.txt")
    write(root / "sub" / "inner.txt")
    (root / "sub" / "back").symlink_to(root, target_is_directory=True)  # sub/back -> root
    (root / "self").symlink_to(".", target_is_directory=True)
    records, skipped = split(records_from_paths([root]))
    assert skipped == []
    assert sorted(Path(r.source).name for r in records) == ["inner.txt", "top.txt"]


def test_a_file_reached_through_two_symlinks_is_one_input(tmp_path):
    real = write(tmp_path / "store" / "blob.txt", "the real file")
    root = tmp_path / "root"
    root.mkdir()
    (root / "one.txt").symlink_to(real)
    (root / "two.txt").symlink_to(root / "one.txt")  # a link to a link
    records, skipped = split(records_from_paths([root, real, root / "two.txt"]))
    assert skipped == []
    assert [(r.key, r.source) for r in records] == [(str(real.resolve()), str(real.resolve()))]


def test_symlinked_folders_are_followed_and_the_link_name_decides_the_type(tmp_path):
    outside = tmp_path / "outside"
    write(outside / "far.md", "far away")
    write(tmp_path / "blobs" / "0a1b2c", "content-addressed, no suffix")
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "note.txt").symlink_to(tmp_path / "blobs" / "0a1b2c")
    assert names(root, include=("linked/*.md", "note.txt")) == ["note.txt", "linked/far.md"]
    records, _ = split(records_from_paths([root]))
    assert sorted(r.source for r in records) == sorted(
        [str((outside / "far.md").resolve()), str((tmp_path / "blobs" / "0a1b2c").resolve())]
    )


def test_broken_symlinks_are_skipped(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    (root / "loop.txt").symlink_to(root / "loop.txt")
    records, skipped = split(records_from_paths([root, root / "gone.txt"]))
    assert records == []
    reasons = {(Path(s.source).name, s.reason) for s in skipped}
    assert reasons == {("gone.txt", "broken symbolic link"), ("loop.txt", "symbolic link loop")}


# -- file lists ------------------------------------------------------------------------------------


def test_paths_from_a_list_file(tmp_path, monkeypatch):
    write(tmp_path / "a.txt")
    write(tmp_path / "sub dir" / "b.md")
    listing = write(tmp_path / "list.txt", "# my files\na.txt\n\n   \n  sub dir/b.md  \r\n#c.txt\n")
    monkeypatch.chdir(tmp_path)  # relative entries are relative to the working folder
    assert list(paths_from_list(listing)) == ["a.txt", "sub dir/b.md"]
    records, skipped = split(records_from_paths(paths_from_list(listing)))
    assert skipped == [] and len(records) == 2


def test_paths_from_stdin(monkeypatch):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x.txt\n# no\ny.txt\n")))
    assert list(paths_from_list("-")) == ["x.txt", "y.txt"]


# -- text files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "héllo wörld ✓".encode(),
        b"\xef\xbb\xbf" + "héllo wörld ✓".encode(),
        "héllo wörld ✓".encode("utf-16"),
        "héllo wörld ✓".encode("utf-32"),
    ],
    ids=["utf8", "utf8-bom", "utf16-bom", "utf32-bom"],
)
def test_unicode_text_has_no_warning(tmp_path, raw):
    assert read_text_file(write(tmp_path / "t.txt", raw)) == ("héllo wörld ✓", None)


def test_latin1_fallback_is_reported(tmp_path):
    f = write(tmp_path / "old.txt", "café crème, naïve façade".encode("latin-1"))
    assert read_text_file(f) == ("café crème, naïve façade", LATIN1_WARNING)
    [record] = records_from_paths([f])
    record.load()
    assert (record.text, record.warning) == ("café crème, naïve façade", "not UTF-8; read as Latin-1")


@pytest.mark.parametrize(
    "raw",
    [
        b"text\x00with a NUL",
        "utf-16 with a NUL\0".encode("utf-16"),
        b"mostly \x01\x02\x03\x04\x05\x06 control",  # 6 of 20 characters
        bytes(range(256)) * 4,  # not UTF-8 and full of control characters once read as Latin-1
    ],
    ids=["nul", "utf16-nul", "controls", "latin1-controls"],
)
def test_binary_content_is_an_error(tmp_path, raw):
    with pytest.raises(ValueError, match="binary content"):
        read_text_file(write(tmp_path / "b.txt", raw))


def test_a_few_control_characters_are_text(tmp_path):
    raw = b"\x1b[1mbold\x1b[0m " + b"plain words, tabs\tand\r\nline feeds\x0c " * 20
    text, warning = read_text_file(write(tmp_path / "log.txt", raw))
    assert text.startswith("\x1b[1mbold") and warning is None


def test_markdown_is_text_and_html_is_stripped(tmp_path):
    assert read_text_file(write(tmp_path / "r.md", "# Title\n\n*emph*")) == ("# Title\n\n*emph*", None)
    html = "<html><style>p{}</style><p>caf\xe9 <b>au</b> lait</p></html>".encode("latin-1")
    assert read_text_file(write(tmp_path / "p.html", html)) == ("café au lait", LATIN1_WARNING)


# -- robustness: each bad input skipped with a reason ------------------------------------------------


def test_zero_byte_files_are_skipped_when_listed(tmp_path):
    for name in ("empty.txt", "empty.png", "empty.jsonl", "empty.parquet"):
        write(tmp_path / name, b"")
    records, skipped = split(records_from_paths([tmp_path]))
    assert records == []
    assert {(Path(s.source).name, s.reason) for s in skipped} == {
        (n, "empty file") for n in ("empty.txt", "empty.png", "empty.jsonl", "empty.parquet")
    }


def test_unsupported_types_and_special_files(tmp_path):
    write(tmp_path / "prog.py", "print()")
    write(tmp_path / "README", "no suffix")
    os.mkfifo(tmp_path / "pipe.txt")  # opening it must not block
    records, skipped = split(records_from_paths([tmp_path]))
    assert records == []
    assert {(Path(s.source).name, s.reason) for s in skipped} == {
        ("prog.py", "unsupported file type .py"),
        ("README", "unsupported file type (none)"),
        ("pipe.txt", "not a regular file"),
    }


def test_unreadable_files_and_folders(tmp_path):
    write(tmp_path / "secret.txt").chmod(0)
    write(tmp_path / "locked" / "inside.txt")
    (tmp_path / "locked").chmod(0)
    if os.access(tmp_path / "secret.txt", os.R_OK):
        (tmp_path / "locked").chmod(0o755)
        pytest.skip("this user reads any file (root); the simulated test below covers it")
    try:
        records, skipped = split(records_from_paths([tmp_path]))
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert records == []
    assert {(Path(s.source).name, s.reason) for s in skipped} == {
        ("secret.txt", "permission denied"),
        ("locked", "permission denied"),
    }


def test_permission_denied_simulated(tmp_path, monkeypatch):
    secret = write(tmp_path / "secret.txt")
    write(tmp_path / "open.txt", "fine")
    real_open = os.open

    def guarded_open(path, *args, **kwargs):
        if Path(path).name == "secret.txt":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    records, skipped = split(records_from_paths([tmp_path]))
    monkeypatch.undo()
    assert [Path(r.source).name for r in records] == ["open.txt"]
    assert skipped == [Skipped(str(secret.resolve()), "permission denied")]
    # Readable when listed, not when read: the reader says why.
    monkeypatch.setattr(os, "open", guarded_open)
    with pytest.raises(ValueError, match="permission denied"):
        read_text_file(secret)


def test_a_file_that_vanishes_after_listing(tmp_path):
    write(tmp_path / "a.txt")
    write(tmp_path / "b.txt")
    write(tmp_path / "c.jsonl", json.dumps({"text": "x"}))
    stream = records_from_paths([tmp_path])
    first = next(stream)
    assert Path(first.source).name == "a.txt"
    (tmp_path / "b.txt").unlink()  # the folder was listed already
    (tmp_path / "c.jsonl").unlink()
    rest = list(stream)
    assert [(Path(s.source).name, s.reason) for s in rest] == [("b.txt", "file vanished"), ("c.jsonl", "file vanished")]


def test_a_file_that_vanishes_before_reading(tmp_path):
    [record] = records_from_paths([write(tmp_path / "a.txt")])
    (tmp_path / "a.txt").unlink()
    with pytest.raises(FileNotFoundError):  # the pipeline reports it as vanished
        record.load()


def test_bad_records_are_skipped_with_their_line(tmp_path):
    lines = [
        json.dumps({"id": "ok", "text": "fine", "doc": "D1"}),
        "{not json",
        json.dumps({"id": "no-text", "body": "x"}),
        json.dumps({"id": "no-doc", "text": "has text"}),
    ]
    f = write(tmp_path / "r.jsonl", "\n".join(lines))
    where = str(f.resolve())
    records, skipped = split(records_from_paths([f], RecordFields(key="doc")))
    assert [r.key for r in records] == ["D1"]
    reasons = {s.source: s.reason for s in skipped}
    assert reasons[f"{where}:2"].startswith("not JSON (")
    assert reasons[f"{where}:3"] == "record has no key in 'doc'"
    assert reasons[f"{where}:4"] == "record has no key in 'doc'"
    _, skipped = split(records_from_paths([f]))
    assert [(s.source, s.reason) for s in skipped] == [
        (f"{where}:2", reasons[f"{where}:2"]),
        (f"{where}:3", "record has no text in 'text'"),
    ]


def test_a_record_file_that_is_not_utf8(tmp_path):
    """Each line is decoded on its own: the row that is not UTF-8 is skipped, not the file."""
    f = write(tmp_path / "r.csv", "id,text\n1,caf\xe9\n2,ok\n".encode("latin-1"))
    records, skipped = split(records_from_paths([f]))
    assert [r.key for r in records] == ["2"]
    assert skipped == [Skipped(f"{f.resolve()}:2", "not UTF-8 (byte 0xe9)")]
    header = write(tmp_path / "h.csv", "id,t\xe9xt\n1,ok\n".encode("latin-1"))
    [skipped] = records_from_paths([header])
    assert skipped.reason == "cannot read the header row: not UTF-8 (byte 0xe9)"


def test_the_generator_never_raises_on_a_messy_folder(tmp_path):
    write(tmp_path / "ok.txt", "fine")
    write(tmp_path / "bad.jsonl", "{\n[1]\n\"s\"\n")
    write(tmp_path / "bad.csv", b"\xff\xfe\x00garbage")
    write(tmp_path / "bad.parquet", b"PAR1 not really")
    write(tmp_path / "z.bin", b"\0\0")
    (tmp_path / "dangling.md").symlink_to(tmp_path / "nope")
    records, skipped = split(records_from_paths([tmp_path, tmp_path / "missing"]))
    assert [Path(r.source).name for r in records] == ["ok.txt"]
    assert len(skipped) == 8
    assert all(s.reason for s in skipped)


# -- Parquet -------------------------------------------------------------------------------------------


def write_parquet(path: Path, columns: dict, **kwargs) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path, **kwargs)
    return path


def test_parquet_records_with_metadata(tmp_path, monkeypatch):
    import datetime
    import decimal

    import pyarrow as pa

    monkeypatch.setattr(sources, "PARQUET_BATCH_ROWS", 2)  # several batches
    n = 5
    f = write_parquet(
        tmp_path / "t.parquet",
        {
            "_id": pa.array([f"d{i}" for i in range(n)]),
            "title": pa.array(["T0", None, "T2", "T3", "T4"]),
            "text": pa.array(["zero", "one", None, "three", "four"]),
            "year": pa.array(np.arange(2000, 2000 + n, dtype=np.int64)),
            "score": pa.array([0.5, 1.5, 2.5, float("inf"), 4.5]),
            "tags": pa.array([["a"], [], ["b", "c"], None, ["d"]], type=pa.list_(pa.string())),
            "when": pa.array([datetime.date(2020, 1, i + 1) for i in range(n)]),
            "price": pa.array([decimal.Decimal("1.25")] * n, type=pa.decimal128(5, 2)),
        },
        row_group_size=3,
    )
    where = str(f.resolve())
    records, skipped = split(records_from_paths([f], RecordFields(text="title,text")))
    assert [(r.key, r.text) for r in records] == [("d0", "T0 zero"), ("d1", "one"), ("d2", "T2"), ("d4", "T4 four")]
    assert [(s.source, s.reason.split(";")[0]) for s in skipped] == [(f"{where}:4", "field 'score' is inf")]
    assert records[0].source == f"{where}:1"
    assert records[0].metadata == {"title": "T0", "year": 2000, "score": 0.5, "tags": ["a"], "when": "2020-01-01", "price": 1.25}
    assert type(records[0].metadata["year"]) is int
    json.dumps([r.metadata for r in records], allow_nan=False)
    records, skipped = split(records_from_paths([f]))
    assert [s.source for s in skipped] == [f"{where}:3", f"{where}:4"]  # row numbers count from 1


def test_parquet_key_and_image_fields(tmp_path):
    from PIL import Image

    (tmp_path / "pics").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "pics" / "r.png")
    f = write_parquet(tmp_path / "i.parquet", {"name": ["red", "none"], "img": ["pics/r.png", None], "label": [1, 2]})
    records, skipped = split(records_from_paths([f], RecordFields(image="img", key="name")))
    assert [(r.key, r.modality, r.image_path, r.metadata) for r in records] == [
        ("red", "image", (tmp_path / "pics" / "r.png").resolve(), {"label": 1})
    ]
    assert [s.reason for s in skipped] == ["record has no 'img' field"]


def test_parquet_binary_columns(tmp_path):
    f = write_parquet(tmp_path / "b.parquet", {"text": ["a", "b"], "blob": [b"utf-8 ok", b"\xff\x00"]})
    records, skipped = split(records_from_paths([f]))
    assert records[0].metadata == {"blob": "utf-8 ok"}
    assert [s.reason for s in skipped] == ["field 'blob' holds binary data, which metadata cannot store"]


def test_parquet_without_pyarrow(tmp_path, monkeypatch):
    f = write_parquet(tmp_path / "t.parquet", {"text": ["a"]})
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert list(records_from_paths([f])) == [Skipped(str(f.resolve()), "install pyarrow to read Parquet")]


def test_a_corrupt_parquet_file(tmp_path):
    f = write(tmp_path / "bad.parquet", b"PAR1" + b"\0" * 64)
    [skipped] = list(records_from_paths([f]))
    assert skipped.source == str(f.resolve()) and skipped.reason.startswith("cannot read Parquet")


# -- record fields that the first record lacks -----------------------------------------------------


CORPUS = [{"_id": "a", "title": "Ships", "text": "float on water"}, {"_id": "b", "title": "Cats", "text": "purr"}]


def write_records(path: Path, rows: list[dict]) -> Path:
    """``rows`` as a JSONL, CSV or Parquet file, by ``path``'s suffix."""
    if path.suffix == ".parquet":
        return write_parquet(path, {k: [r.get(k) for r in rows] for k in rows[0]})
    if path.suffix == ".csv":
        header = list(rows[0])
        lines = [",".join(header)] + [",".join(str(r.get(k, "")) for k in header) for r in rows]
        return write(path, "\n".join(lines) + "\n")
    return write(path, "\n".join(json.dumps(r) for r in rows) + "\n")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_text_field_the_first_record_lacks_is_an_error(tmp_path, suffix):
    from latentsearch.errors import MissingFieldError

    f = write_records(tmp_path / f"corpus{suffix}", CORPUS)
    with pytest.raises(MissingFieldError) as info:
        records_from_paths([f], RecordFields(text="titel"))  # raised on the call, before any record
    assert str(info.value) == (
        f"the first record of {f.resolve()} has no text field 'titel'; its fields are: _id, title, text. "
        "Did you mean 'title'?"
    )
    assert isinstance(info.value, InvalidInputError)
    records, skipped = split(records_from_paths([f], RecordFields(text="title,text")))
    assert len(records) == 2 and skipped == []


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (RecordFields(text="title,body"), "has no text field 'body'; its fields are: _id, title, text"),
        (RecordFields(text="title, text", key="doc"), "has no key field 'doc'"),
        (RecordFields(image="img"), "has no image field 'img'"),
        (RecordFields(text="titel,bdy", key="idd"), "has no text field 'titel' and no text field 'bdy' and no key field 'idd'"),
    ],
)
def test_every_named_field_is_checked(tmp_path, fields, words):
    from latentsearch.errors import MissingFieldError

    f = write_records(tmp_path / "corpus.jsonl", CORPUS)
    with pytest.raises(MissingFieldError, match=words):
        records_from_paths([f], fields)


def test_what_counts_as_the_first_record(tmp_path):
    """The first line that is a JSON object; a null or empty value is a field all the same; with
    an image field the text field is not used, so not checked."""
    lines = ["not json", "[1, 2]", json.dumps({"_id": "a", "title": None, "text": ""}), json.dumps({"_id": "b", "x": 1})]
    f = write(tmp_path / "r.jsonl", "\n".join(lines))
    records, skipped = split(records_from_paths([f], RecordFields(text="title,text")))
    assert records == [] and len(skipped) == 4  # each line skipped for its own reason, as before
    assert skipped[2].reason == "record has no text in 'title,text'"
    images = write(tmp_path / "i.jsonl", json.dumps({"name": "red", "image": "red.png"}))
    [record] = records_from_paths([images], RecordFields(image="image", key="name"))
    assert record.key == "red"


def test_a_record_file_found_in_a_folder_is_skipped_whole(tmp_path):
    """A folder may hold record files of other shapes: one reason for the file, nothing raised."""
    folder = tmp_path / "data"
    f = write_records(folder / "corpus.jsonl", CORPUS)
    write_records(folder / "table.csv", CORPUS)
    write(folder / "note.txt", "a note")
    records, skipped = split(records_from_paths([folder], RecordFields(text="titel")))
    assert [Path(r.source).name for r in records] == ["note.txt"]
    assert [(s.source, s.reason) for s in skipped] == [
        (str(f.resolve()), "the first record has no text field 'titel'; its fields are: _id, title, text. Did you mean 'title'?"),
        (str((folder / "table.csv").resolve()), "the first record has no text field 'titel'; its fields are: _id, title, text. Did you mean 'title'?"),
    ]


def test_index_paths_writes_nothing_when_a_field_is_missing(tmp_path, hashing_collection):
    from latentsearch.errors import MissingFieldError

    first = write_records(tmp_path / "good.jsonl", CORPUS)
    second = write_records(tmp_path / "other.csv", [{"id": 1, "body": "x"}])
    col = hashing_collection()
    with pytest.raises(MissingFieldError, match=f"the first record of {second.resolve()} has no text field 'title'"):
        col.index_paths([first, second], RecordFields(text="title,text"))
    assert len(col) == 0  # the good file before it was not written either


def test_the_index_command_refuses_a_missing_text_field(tmp_path):
    f = write_records(tmp_path / "corpus.jsonl", CORPUS)
    result = run("index", tmp_path / "col", f, "--encoder", ENC, "--text-field", "titel")
    assert result.exit_code == 1, (result.output, result.exception)
    assert "Traceback" not in result.output
    assert result.stderr.strip() == (
        f"Error: the first record of {f.resolve()} has no text field 'titel'; its fields are: _id, title, text. "
        "Did you mean 'title'?"
    )
    assert not (tmp_path / "col").exists()  # nothing created, nothing written
    listing = write(tmp_path / "list.txt", f"{f}\n")
    result = run("index", tmp_path / "col", "--files-from", listing, "--encoder", ENC, "--image-field", "picture")
    assert result.exit_code == 1 and "has no image field 'picture'" in result.stderr
    assert not (tmp_path / "col").exists()


# -- Python iterables -----------------------------------------------------------------------------------


def test_records_from_an_iterable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def rows():
        yield {"id": np.int64(3), "title": "T", "text": "body", "n": np.float32(0.5), "v": np.arange(2)}
        yield {"text": "no key"}
        yield ["not", "a", "dict"]
        yield {"id": "x", "text": ""}
        yield {"id": "y", "text": "ok", "bad": object()}

    records, skipped = split(records_from_iterable(rows(), RecordFields(text="title,text"), source="mine"))
    assert [(r.key, r.text, r.source) for r in records] == [("3", "T body", None), (None, "no key", None)]
    assert records[0].metadata == {"title": "T", "n": 0.5, "v": [0, 1]}
    assert [(s.source, s.reason.split(";")[0]) for s in skipped] == [
        ("mine:3", "record is not an object"),
        ("mine:4", "record has no text in 'title,text'"),
        ("mine:5", "field 'bad' holds a object"),
    ]
    [image] = records_from_iterable([{"image": "p.png"}], RecordFields(image="image"))
    assert image.image_path == tmp_path / "p.png"


# -- the index command --------------------------------------------------------------------------------


def run(*args: object, input: str | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def index_json(*args: object, input: str | None = None, code: int = 0) -> dict:
    result = run("index", *args, "--encoder", ENC, "--json", input=input)
    assert result.exit_code == code, (result.output, result.exception)
    return json.loads(result.stdout)


def stored_sources(col: Path) -> list[str]:
    import latentsearch

    with latentsearch.open(col) as c:
        return sorted(Path(h.source).name for h in c.search("text", k=50))


def test_index_include_exclude_hidden(tmp_path, tree):
    report = index_json(tmp_path / "c1", tree, "--include", "*.md", "--exclude", "node_modules", "--exclude", "drafts")
    assert report["added"] == 3 and report["skipped"] == []
    assert stored_sources(tmp_path / "c1") == ["a.md", "guide.md", "ref.md"]
    report = index_json(tmp_path / "c2", tree, "--hidden", "--include", "*.txt")
    assert stored_sources(tmp_path / "c2") == [".env.txt", "b.txt", "config.txt", "ref.txt"]


def test_index_files_from_a_file_and_stdin(tmp_path, tree, monkeypatch):
    monkeypatch.chdir(tree)
    listing = write(tmp_path / "list.txt", "# docs\ndocs/guide.md\n\nb.txt\n")
    assert index_json(tmp_path / "c1", "--files-from", listing)["added"] == 2
    report = index_json(tmp_path / "c2", "a.md", "--files-from", "-", input="docs/api/ref.md\n# skip\nmissing.txt\n", code=EXIT_SKIPPED)
    assert report["added"] == 2
    assert report["skipped"] == [{"source": str(tree / "missing.txt"), "reason": "no such file or folder"}]


def test_index_errors_file(tmp_path, tree):
    write(tree / "empty.txt", b"")
    write(tree / "bin.txt", b"\0\1\2")
    write(tree / "x.py", "pass")
    errors = tmp_path / "skipped.jsonl"
    result = run("index", tmp_path / "col", tree, "--encoder", ENC, "-q", "--errors", errors)
    assert result.exit_code == EXIT_SKIPPED, result.output
    lines = [json.loads(line) for line in errors.read_text(encoding="utf-8").splitlines()]
    assert all(set(line) == {"source", "reason"} for line in lines)
    by_name = {Path(line["source"]).name: line["reason"] for line in lines}
    assert by_name["empty.txt"] == "empty file"
    assert by_name["x.py"] == "unsupported file type .py"
    assert "binary content" in by_name["bin.txt"]
    assert len(lines) == 3
    # A clean run leaves an empty file, so a script can always read it.
    assert run("index", tmp_path / "col2", tree / "a.md", "--encoder", ENC, "-q", "--errors", errors).exit_code == 0
    assert errors.read_text() == ""


def test_index_option_errors(tmp_path, tree):
    result = run("index", tmp_path / "col")
    assert result.exit_code == 2 and "--files-from" in result.output
    result = run("index", tmp_path / "col", tree, "--include", "", "--encoder", ENC)
    assert result.exit_code == 1 and "Error: the glob '' is empty" in result.stderr
    result = run("index", tmp_path / "col", tree, "--files-from", tmp_path / "nope.txt")
    assert result.exit_code == 2
    assert not (tmp_path / "col").exists()


def test_index_help_documents_every_option():
    result = run("index", "--help")
    assert result.exit_code == 0
    for option in ("--include", "--exclude", "--hidden", "--files-from", "--errors", "--text-field", "--image-field", "--key-field"):
        assert option in result.output
    assert "Example:" in result.output and "**" in result.output
