"""Sources (folders, text encodings, HTML, JSONL, CSV) and images (formats, modes, EXIF, bad
files), checked on their own and through a collection with the hashing encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import latentsearch
from latentsearch.errors import InvalidInputError
from latentsearch.ingest.records import Record, open_image
from latentsearch.ingest.readers import read_text_file
from latentsearch.ingest.sources import RecordFields, records_from_paths
from latentsearch.types import Skipped
from helpers import write, write_jsonl  # noqa: E402


def collect(paths, fields: RecordFields = RecordFields()) -> tuple[list[Record], list[Skipped]]:
    """Records and skips of ``paths``, text files read as the pipeline reads them."""
    records, skipped = [], []
    for item in records_from_paths([Path(p) for p in paths], fields):
        if isinstance(item, Record) and item.text_path is not None:
            try:
                item.load()
            except (OSError, ValueError) as exc:
                item = Skipped(item.source, str(exc))
        (records if isinstance(item, Record) else skipped).append(item)
    return records, skipped


def by_name(skipped: list[Skipped]) -> dict[str, str]:
    return {Path(s.source).name: s.reason for s in skipped}


def rgb_image(width: int = 40, height: int = 30, seed: int = 0):
    from PIL import Image

    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (height, width, 3), dtype=np.uint8))


# -- folders and text files ----------------------------------------------------------------------


def test_folders_are_walked_recursively_sorted_and_hidden_entries_skipped(tmp_path):
    write(tmp_path / "b.txt", "bee")
    write(tmp_path / "a.md", "# ay")
    write(tmp_path / "sub" / "deep" / "c.rst", "sea")
    write(tmp_path / ".hidden.txt", "hidden file")
    write(tmp_path / ".git" / "notes.txt", "hidden folder")
    write(tmp_path / "sub" / ".cache" / "x.txt", "hidden folder below")
    records, skipped = collect([tmp_path])
    assert skipped == []
    assert [r.text for r in records] == ["# ay", "bee", "sea"]
    for r in records:
        assert Path(r.source).is_absolute()
        assert r.key == r.source  # files are keyed by their resolved path


def test_a_single_file_and_a_missing_path(tmp_path):
    f = write(tmp_path / "one.txt", "only this")
    records, skipped = collect([f, tmp_path / "nope.txt", tmp_path / "no-folder"])
    assert [r.text for r in records] == ["only this"]
    assert by_name(skipped) == {
        "nope.txt": "no such file or folder",
        "no-folder": "no such file or folder",
    }


@pytest.mark.parametrize(
    "raw",
    [
        "héllo wörld ✓".encode("utf-8"),
        b"\xef\xbb\xbf" + "héllo wörld ✓".encode("utf-8"),
        "héllo wörld ✓".encode("utf-16"),  # with a BOM, native byte order
        b"\xfe\xff" + "héllo wörld ✓".encode("utf-16-be"),
        b"\xff\xfe" + "héllo wörld ✓".encode("utf-16-le"),
    ],
    ids=["utf8", "utf8-bom", "utf16", "utf16-be-bom", "utf16-le-bom"],
)
def test_text_encodings(tmp_path, raw):
    records, skipped = collect([write(tmp_path / "t.txt", raw)])
    assert skipped == []
    assert [r.text for r in records] == ["héllo wörld ✓"]


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (bytes(range(1, 32)) * 4 + b"\xff\xfe", "binary"),  # control characters, no NUL
        (b"", "empty file"),
        (b"  \n\t\n", "empty file"),
        (b"\xef\xbb\xbf", "no text"),
    ],
    ids=["binary", "controls", "empty", "whitespace", "bom-only"],
)
def test_unusable_text_files_are_skipped_with_a_reason(tmp_path, raw, reason):
    records, skipped = collect([write(tmp_path / "bad.txt", raw)])
    assert records == []
    assert len(skipped) == 1
    assert skipped[0].source == str((tmp_path / "bad.txt").resolve())
    assert reason in skipped[0].reason


def test_html_is_stripped_to_text(tmp_path):
    page = """<!DOCTYPE html>
    <html><head><title>Page title</title>
    <style>body { color: red; }</style>
    <script>var secret = "do not index";</script></head>
    <body><h1>Ships</h1><!-- a comment -->
    <p>Ships   float &amp; boats&nbsp;sail.</p>
    <script type="module">alert(1)</script>
    <p>Last words</p></body></html>
    """
    text = read_text_file(write(tmp_path / "page.html", page))
    assert text == ("Page title Ships Ships float & boats sail. Last words", None)
    assert read_text_file(write(tmp_path / "frag.htm", "<p>Intro</p>Tail text")) == ("Intro Tail text", None)
    records, skipped = collect([write(tmp_path / "empty.html", "<html><script>x()</script></html>")])
    assert records == [] and "no text" in skipped[0].reason


def test_unsupported_suffix_is_skipped(tmp_path):
    write(tmp_path / "keep.txt", "kept")
    write(tmp_path / "data.xyz", "whatever")
    write(tmp_path / "Makefile", "all:")
    records, skipped = collect([tmp_path])
    assert [r.text for r in records] == ["kept"]
    assert by_name(skipped) == {
        "Makefile": "unsupported file type (none)",
        "data.xyz": "unsupported file type .xyz",
    }


def test_suffixes_are_case_insensitive(tmp_path):
    write(tmp_path / "UPPER.TXT", "shouting")
    rgb_image().save(tmp_path / "PHOTO.JPG")
    records, skipped = collect([tmp_path])
    assert skipped == []
    assert sorted(r.modality for r in records) == ["image", "text"]


# -- JSONL and CSV records ------------------------------------------------------------------------


def test_jsonl_records_keys_metadata_and_bad_lines(tmp_path):
    lines = [
        json.dumps({"_id": "d1", "id": "ignored", "text": "first doc", "year": 2020}),
        "",
        "this is not json",
        json.dumps([1, 2, 3]),
        json.dumps({"_id": "d4", "body": "no text field"}),
        json.dumps({"id": 7, "text": "numeric id", "tags": ["a", "b"]}),
        json.dumps({"key": "k8", "text": "keyed"}),
        json.dumps({"text": "no id at all"}),
        json.dumps({"_id": "d10", "text": "   "}),
    ]
    f = write(tmp_path / "docs.jsonl", "\n".join(lines) + "\n")
    records, skipped = collect([f])
    where = str(f.resolve())
    assert [(r.key, r.text) for r in records] == [
        ("d1", "first doc"),
        ("7", "numeric id"),
        ("k8", "keyed"),
        (f"{where}:8", "no id at all"),  # no id: keyed by file and line
    ]
    assert records[0].metadata == {"id": "ignored", "year": 2020}
    assert records[1].metadata == {"tags": ["a", "b"]}
    assert records[0].source == f"{where}:1"
    reasons = {s.source: s.reason for s in skipped}
    assert set(reasons) == {f"{where}:{n}" for n in (3, 4, 5, 9)}  # physical line numbers
    assert reasons[f"{where}:3"].startswith("not JSON")
    assert reasons[f"{where}:4"] == "record is not an object"
    assert reasons[f"{where}:5"] == "record has no text in 'text'"


def test_jsonl_with_a_bom_and_ndjson_suffix(tmp_path):
    f = write(tmp_path / "d.ndjson", b"\xef\xbb\xbf" + json.dumps({"_id": "x", "text": "t"}).encode())
    records, skipped = collect([f])
    assert skipped == [] and [(r.key, r.text) for r in records] == [("x", "t")]


def test_csv_with_a_header(tmp_path):
    csv_text = 'id,title,text,lang\n1,Hello,"world, with a comma",en\n2,,only text,fr\n3,No body,,de\n'
    f = write(tmp_path / "table.csv", b"\xef\xbb\xbf" + csv_text.encode())  # Excel writes a BOM
    records, skipped = collect([f])
    assert [(r.key, r.text) for r in records] == [("1", "world, with a comma"), ("2", "only text")]
    assert records[0].metadata == {"title": "Hello", "lang": "en"}
    assert records[0].source == f"{f.resolve()}:2"  # line 1 is the header
    assert [(s.source, s.reason) for s in skipped] == [
        (f"{f.resolve()}:4", "record has no text in 'text'")
    ]


def test_text_field_title_text_joins_fields(tmp_path):
    f = write_jsonl(
        tmp_path / "corpus.jsonl",
        [
            {"_id": "a", "title": "Ships", "text": "float on water"},
            {"_id": "b", "title": "", "text": "no title"},
            {"_id": "c", "title": "Only a title"},
            {"_id": "d", "other": "neither"},
        ],
    )
    records, skipped = collect([f], RecordFields(text="title,text"))
    assert [(r.key, r.text) for r in records] == [
        ("a", "Ships float on water"),
        ("b", "no title"),
        ("c", "Only a title"),
    ]
    assert [s.reason for s in skipped] == ["record has no text in 'title,text'"]


def test_key_field_option(tmp_path):
    f = write(tmp_path / "r.jsonl", json.dumps({"_id": "x", "doc": "D1", "text": "t"}))
    records, _ = collect([f], RecordFields(key="doc"))
    assert records[0].key == "D1"
    assert records[0].metadata == {"_id": "x"}


def test_image_records_via_an_image_field(tmp_path, monkeypatch):
    folder = tmp_path / "set"
    (folder / "pics").mkdir(parents=True)
    rgb_image().save(folder / "pics" / "cat.png")
    f = write_jsonl(
        folder / "images.jsonl",
        [
            {"_id": "cat", "image": "pics/cat.png", "label": "cat"},
            {"_id": "gone", "image": "pics/missing.png"},
            {"_id": "none", "label": "no image"},
        ],
    )
    monkeypatch.chdir(tmp_path)  # paths are relative to the JSONL file, not to the working dir
    records, skipped = collect([f], RecordFields(image="image"))
    assert [(r.key, r.modality) for r in records] == [("cat", "image"), ("gone", "image")]
    assert records[0].image_path == (folder / "pics" / "cat.png").resolve()
    assert records[0].metadata == {"label": "cat"}
    assert records[0].text is None
    assert [s.reason for s in skipped] == ["record has no 'image' field"]

    with latentsearch.create(tmp_path / "col", encoder="hashing:32", index="Flat") as col:
        report = col.index_paths([f], RecordFields(image="image"))
        assert report.added == 1
        reasons = by_name(report.skipped)
        assert "missing.png" in reasons  # the reason's wording belongs to the pipeline
        [hit] = col.search(folder / "pics" / "cat.png", k=1)
        assert (hit.key, hit.modality, hit.metadata) == ("cat", "image", {"label": "cat"})


# -- images ------------------------------------------------------------------------------------

FORMATS = [("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp")]


@pytest.mark.parametrize("fmt, suffix", FORMATS, ids=[s for _, s in FORMATS])
def test_open_image_formats(tmp_path, fmt, suffix):
    from PIL import features

    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow has no WebP support")
    path = tmp_path / f"img.{suffix}"
    rgb_image(40, 30).save(path, fmt)
    im = open_image(path)
    assert im.mode == "RGB"
    assert im.size == (40, 30)
    path.unlink()  # fully decoded: the file is no longer needed
    assert np.asarray(im).shape == (30, 40, 3)


def test_open_image_modes(tmp_path):
    from PIL import Image

    base = rgb_image(20, 10)
    sources = {
        "L": (base.convert("L"), "png"),
        "P": (base.convert("P"), "png"),
        "RGBA": (base.convert("RGBA"), "png"),
        "LA": (base.convert("LA"), "png"),
        "CMYK": (base.convert("CMYK"), "jpg"),
        "1": (base.convert("1"), "png"),
    }
    for mode, (image, suffix) in sources.items():
        path = tmp_path / f"{mode}.{suffix}"
        image.save(path)
        with Image.open(path) as check:
            assert check.mode == mode
        out = open_image(path)
        assert (out.mode, out.size) == ("RGB", (20, 10)), mode


def test_transparent_pixels_become_white(tmp_path):
    from PIL import Image

    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # one opaque red pixel; the rest fully transparent black
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = np.asarray(open_image(tmp_path / "a.png"))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[3, 3]) == (255, 255, 255)


def test_sixteen_bit_images_are_scaled(tmp_path):
    from PIL import Image

    arr = (np.arange(12 * 8).reshape(8, 12) * 600).astype(np.uint16)  # up to 56 400
    image = Image.fromarray(arr)
    assert image.mode == "I;16"
    for suffix in ("png", "tif"):
        path = tmp_path / f"deep.{suffix}"
        image.save(path)
        out = np.asarray(open_image(path))
        assert out.shape == (8, 12, 3)
        assert out.max() >= 254 and out.min() == 0  # scaled, not clipped to a white image
        assert len(np.unique(out[..., 0])) > 50


def test_sixteen_bit_scaling_rounds(tmp_path):
    from PIL import Image

    arr = (np.arange(12 * 8).reshape(8, 12) * 600).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    out = np.asarray(open_image(tmp_path / "deep.png"))[..., 0]
    np.testing.assert_array_equal(out, np.rint(arr * (255.0 / arr.max())).astype(np.uint8))


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    rgb_image(40, 30).save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    with Image.open(tmp_path / "rotated.jpg") as raw:
        assert raw.size == (40, 30)
    assert open_image(tmp_path / "rotated.jpg").size == (30, 40)


def test_animated_gif_uses_the_first_frame(tmp_path):
    from PIL import Image

    frames = [Image.new("RGB", (20, 10), colour) for colour in ("red", "blue", "green")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    out = open_image(tmp_path / "anim.gif")
    assert out.size == (20, 10)
    assert out.getpixel((5, 5)) == (255, 0, 0)


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    import PIL.Image

    from latentsearch import media

    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", PIL.Image.MAX_IMAGE_PIXELS)  # restored after
    monkeypatch.setattr(media, "MAX_IMAGE_PIXELS", 100)
    rgb_image(20, 20).save(tmp_path / "big.png")
    with pytest.raises(Exception, match="(?i)decompression bomb|too large"):
        open_image(tmp_path / "big.png")


def make_bad_images(folder: Path) -> dict[str, str]:
    """Broken image files, each with a word its skip reason must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb_image(64, 48).save(folder / "good.png")
    rgb_image(64, 48, seed=1).save(folder / "good.jpg")
    png, jpg = (folder / "good.png").read_bytes(), (folder / "good.jpg").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (folder / "junk.webp").write_bytes(b"this is not an image" * 20)
    (folder / "empty.gif").write_bytes(b"")
    return {
        "truncated.png": "truncated",
        "truncated.jpg": "truncated",
        "junk.webp": "cannot identify",
    }


def test_corrupt_images_are_skipped_by_the_pipeline_with_a_reason(tmp_path):
    expected = make_bad_images(tmp_path / "imgs")
    with latentsearch.create(tmp_path / "col", encoder="hashing:32", index="Flat") as col:
        report = col.index_paths([tmp_path / "imgs"])
        assert report.added == 2
        reasons = by_name(report.skipped)
        assert reasons.pop("empty.gif") == "empty file"  # found when listing, never opened
        assert set(reasons) == set(expected)
        for name, word in expected.items():
            assert reasons[name].startswith("unreadable image: ") and word in reasons[name], name
        assert sorted(Path(h.source).name for h in col.search(tmp_path / "imgs" / "good.png", k=5)) == [
            "good.jpg",
            "good.png",
        ]
        # Running again re-tries the bad files (they were never stored) and keeps the good ones.
        again = col.index_paths([tmp_path / "imgs"])
        assert (again.added, again.unchanged, len(again.skipped)) == (0, 2, len(expected) + 1)


def test_add_with_an_unreadable_image_is_an_error(tmp_path):
    make_bad_images(tmp_path / "imgs")
    with latentsearch.create(tmp_path / "col", encoder="hashing:32", index="Flat") as col:
        with pytest.raises(InvalidInputError, match="truncated.png"):
            col.add([tmp_path / "imgs" / "good.png", tmp_path / "imgs" / "truncated.png"])
        assert len(col) == 0


def test_mixed_folder_through_a_collection(tmp_path):
    data = tmp_path / "data"
    write(data / "cats.txt", "cats purr and sleep")
    write(data / "ships.md", "ships float on water")
    write(data / "page.html", "<p>boats <b>sail</b> on water</p>")
    write(data / "bin.txt", b"\x00\x00binary")
    write(data / "notes.jsonl", json.dumps({"_id": "n1", "text": "a note on cats", "year": 2021}))
    rgb_image().save(data / "pic.png")
    write(data / "script.py", "print(1)")
    with latentsearch.create(tmp_path / "col", encoder="hashing:64", index="Flat") as col:
        report = col.index_paths([data])
        assert report.added == 5
        assert sorted(by_name(report.skipped)) == ["bin.txt", "script.py"]
        hits = col.search("cats", k=2)
        assert {h.key for h in hits} == {str((data / "cats.txt").resolve()), "n1"}
        note = next(h for h in hits if h.key == "n1")
        assert note.metadata == {"year": 2021}
        # Unchanged files are not encoded again; a changed one is updated in place.
        write(data / "cats.txt", "cats purr, sleep and eat")
        again = col.index_paths([data])
        assert (again.added, again.updated, again.unchanged) == (0, 1, 4)
        assert len(col) == 5


def test_every_record_is_accounted_for_when_ids_repeat_across_files(tmp_path):
    write(tmp_path / "a.csv", "id,text\n1,alpha apples\n2,beta bananas\n")
    write(tmp_path / "b.csv", "id,text\n1,gamma grapes\n2,delta dates\n")
    with latentsearch.create(tmp_path / "col", encoder="hashing:32", index="Flat") as col:
        report = col.index_paths([tmp_path / "a.csv", tmp_path / "b.csv"])
        assert report.added + report.updated + report.unchanged + len(report.skipped) == 4
        assert len(col) + len(report.skipped) == 4


def test_progress_and_commits_follow_encoded_batches(tmp_path):
    """Each encoded batch is committed, then reported: an interrupted run keeps what it showed."""
    import latentsearch
    from latentsearch.ingest.sources import RecordFields

    data = tmp_path / "records.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "text": f"record number {i}"}) + "\n" for i in range(200)))
    col = latentsearch.create(tmp_path / "col", encoder="hashing:32")
    seen: list[tuple[int, int]] = []  # (inputs reported, items committed by then)
    reader = latentsearch.open(tmp_path / "col")

    def progress(n: int) -> None:
        seen.append((n, len(reader)))

    report = col.index_paths([data], RecordFields(), batch_size=8, progress=progress)
    assert report.added == 200 and report.inputs == 200
    assert sum(n for n, _ in seen) == 200 and max(n for n, _ in seen) <= 8 and len(seen) >= 25
    done = 0
    for n, committed in seen:
        done += n
        assert committed >= done  # what the bar shows is in the store already
    reader.close()
    col.close()
