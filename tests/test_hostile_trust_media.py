"""Images that pass the bomb check are shrunk as they are decoded, and a skipped image always
says why."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import latentsearch
from latentsearch.media import MAX_IMAGE_SIDE, UnreadableImageError, open_image


def test_a_large_png_is_shrunk_as_it_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (9000, 4500), (10, 200, 30)).save(path)  # a few hundred KiB on disk
    im = open_image(path)
    assert im.size == (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE // 2) and im.mode == "RGB"
    assert im.getpixel((100, 100)) == (10, 200, 30)
    assert len(im.tobytes()) <= MAX_IMAGE_SIDE * MAX_IMAGE_SIDE * 3  # bounded, whatever the file


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_keeping_its_orientation(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.jpg"
    im = Image.new("RGB", (6000, 3000), (200, 30, 30))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    im.save(path, exif=exif.tobytes())
    drafts = []
    real_draft = Image.Image.draft

    def draft(self, mode, size):
        drafts.append(size)
        return real_draft(self, mode, size)

    monkeypatch.setattr("PIL.JpegImagePlugin.JpegImageFile.draft", draft, raising=False)
    out = open_image(path)
    assert out.size == (MAX_IMAGE_SIDE // 2, MAX_IMAGE_SIDE)  # shrunk, then turned upright
    assert drafts and drafts[0] == (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE // 2)


def test_a_large_palette_image_keeps_its_colours(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    im = Image.new("P", (4096, 1024), 0)
    im.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    im.save(path)
    out = open_image(path)
    assert out.size == (2048, 512) and out.mode == "RGB" and out.getpixel((10, 10)) == (255, 0, 0)


def test_a_small_image_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (300, 200), (1, 2, 3)).save(path)
    assert open_image(path).size == (300, 200)
    assert open_image(path, max_side=100).size == (100, 67)


@pytest.mark.parametrize("error", [EOFError(), SyntaxError(""), MemoryError(), KeyError()])
def test_a_decoding_error_without_a_message_still_says_what_failed(tmp_path: Path, monkeypatch, error) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (20, 20)).save(path)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr("PIL.ImageOps.exif_transpose", fail)
    with pytest.raises(UnreadableImageError) as err:
        open_image(path)
    assert str(err.value).strip() and type(error).__name__ in str(err.value)
    with latentsearch.create(tmp_path / "col", encoder="hashing:64", index="Flat") as col:
        report = col.index_paths([path])
    [skipped] = report.skipped
    assert skipped.reason.startswith("unreadable image: ") and skipped.reason != "unreadable image: "
    assert type(error).__name__ in skipped.reason


def test_unreadable_files_keep_their_reasons(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UnreadableImageError, match="cannot identify image file"):
        open_image(tmp_path / "empty.png")
    with pytest.raises(FileNotFoundError):
        open_image(tmp_path / "missing.png")
