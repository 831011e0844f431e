"""Large images that pass the bomb check do not exhaust memory: a JPEG is decoded at a reduced
scale, a PNG is decoded at full size but shrunk at once, and the bytes of full-size pixels being
decoded at once are bounded per process (an image larger than the bound is decoded alone); a
chunk holds at most MAX_CHUNK_IMAGES shrunk images, dropped once encoded. A skip always names
its reason, a MemoryError's too."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from latentsearch import media
from latentsearch.encoders.hashing import HashingEncoder
from latentsearch.errors import error_reason
from latentsearch.ingest import pipeline, prepare
from latentsearch.ingest.records import Record
from latentsearch.media import MAX_IMAGE_SIDE, DecodeBudget, UnreadableImageError, open_image


@pytest.fixture
def encoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The size of every image the hashing encoder is given."""
    sizes: list[tuple[int, int]] = []
    real = HashingEncoder.encode_image

    def spy(self, images, batch_size=32):
        sizes.extend(im.size for im in images)
        return real(self, images, batch_size)

    monkeypatch.setattr(HashingEncoder, "encode_image", spy)
    return sizes


def test_a_large_png_reaches_the_encoder_shrunk(hashing_collection, tmp_path: Path, encoded_sizes) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    Image.new("RGB", (6000, 6000), (40, 90, 200)).save(folder / "big.png")  # ~100 KiB on disk
    Image.new("RGB", (120, 80), (1, 2, 3)).save(folder / "small.png")
    report = hashing_collection().index_paths([folder])
    assert (report.added, report.skipped) == (2, [])
    assert sorted(encoded_sizes) == [(120, 80), (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)]


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.jpg"
    Image.new("RGB", (6000, 3000), (200, 30, 30)).save(path, quality=80)
    decoded, held = [], []
    real_decode, real_hold = media._decode, media.DECODING.hold

    def decode(im, max_side):
        decoded.append(im.size)  # what load() will decode: the draft's size, not the file's
        return real_decode(im, max_side)

    def hold(nbytes):
        held.append(nbytes)
        return real_hold(nbytes)

    monkeypatch.setattr(media, "_decode", decode)
    monkeypatch.setattr(media.DECODING, "hold", hold)
    out = open_image(path)
    assert out.size == (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE // 2)
    assert decoded == [(3000, 1500)]  # scale 1/2: the smallest at least 2048 x 1024
    assert held and held[0] < 3000 * 1500 * 4 * 2 < 6000 * 3000 * 4  # the budget counts the drafted pixels


def test_a_memory_error_while_decoding_is_a_skip_that_says_so(hashing_collection, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 48), (i * 60, 0, 0)).save(folder / f"ok{i}.png")
    Image.new("RGB", (640, 480), (0, 0, 90)).save(folder / "huge.png")
    real_decode = media._decode

    def decode(im, max_side):
        if Path(im.filename).name == "huge.png":
            raise MemoryError()  # what Pillow raises when it cannot allocate the pixels: no message
        return real_decode(im, max_side)

    monkeypatch.setattr(media, "_decode", decode)
    with pytest.raises(UnreadableImageError, match=r"out of memory decoding a 640x480 image"):
        open_image(folder / "huge.png")
    report = hashing_collection().index_paths([folder])
    assert report.added == 3
    [skipped] = report.skipped
    assert Path(skipped.source).name == "huge.png"
    assert skipped.reason == "unreadable image: out of memory decoding a 640x480 image (MemoryError)"
    assert media.DECODING.in_use == 0  # the failed decode gave its share of the budget back


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (MemoryError(), "unreadable image: out of memory (MemoryError)"),
        (KeyError(), "unreadable image: KeyError, with no message"),
        (RuntimeError("  "), "unreadable image: RuntimeError, with no message"),
        (OSError("broken data stream"), "unreadable image: broken data stream"),
    ],
)
def test_a_failure_after_decoding_names_its_reason(tmp_path: Path, error, reason) -> None:
    """The reader's one place for a failure outside the decoder (the model's preprocessing)."""
    path = tmp_path / "a.png"
    Image.new("RGB", (20, 20)).save(path)

    def preprocess(image):
        raise error

    record, _, why = prepare._load(Record(image_path=path), preprocess)
    assert why == reason and record.image is None
    assert error_reason(error).strip()


def test_at_most_one_image_larger_than_the_budget_is_decoded_at_once(
    hashing_collection, tmp_path: Path, monkeypatch, encoded_sizes
) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    side = MAX_IMAGE_SIDE + 300  # full-size: shrunk after decoding
    for i in range(6):
        Image.new("RGB", (side, side // 2), (i * 40, 10, 10)).save(folder / f"img{i}.png")
    one = side * (side // 2) * 4  # the RGB pixels of one, as Pillow holds them
    monkeypatch.setattr(media, "DECODING", DecodeBudget(one))  # each costs more than the whole budget
    live, most, lock = [0], [0], threading.Lock()
    real_decode = media._decode

    def decode(im, max_side):
        with lock:
            live[0] += 1
            most[0] = max(most[0], live[0])
        try:
            time.sleep(0.02)  # widen the window for a second reader thread
            return real_decode(im, max_side)
        finally:
            with lock:
                live[0] -= 1

    monkeypatch.setattr(media, "_decode", decode)
    report = hashing_collection().index_paths([folder])
    assert (report.added, report.skipped) == (6, [])
    assert most[0] == 1 and prepare.READ_THREADS > 1
    assert max(max(size) for size in encoded_sizes) == MAX_IMAGE_SIDE


def test_small_images_share_the_budget_and_a_large_one_waits_until_it_is_alone() -> None:
    budget = DecodeBudget(100)
    events: list[str] = []
    with budget.hold(30), budget.hold(30):  # both fit: no waiting
        assert budget.in_use == 60

        def large() -> None:
            with budget.hold(10_000):  # more than the whole budget: counted as all of it
                events.append(f"large with {budget.in_use}")

        thread = threading.Thread(target=large)
        thread.start()
        time.sleep(0.05)
        assert events == [] and thread.is_alive()  # waiting for the two small ones
    thread.join(timeout=5)
    assert events == ["large with 100"] and budget.in_use == 0


def test_a_chunk_holds_a_bounded_number_of_images_and_drops_them_once_encoded(
    hashing_collection, tmp_path: Path, monkeypatch
) -> None:
    images = [Record(image_path=tmp_path / f"{i}.png") for i in range(40)]
    chunks = list(pipeline.chunked(images + [Record(text="t")] * 3, budget=1024))
    assert [sum(r.modality == "image" for r in c) for c in chunks] == [16, 16, 8]
    assert [len(c) for c in pipeline.chunked([Record(text="t")] * 100, budget=64)] == [64, 36]

    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (30, 20), (i, 0, 0)).save(folder / f"{i}.png")
    written: list[Record] = []
    real_write = pipeline._write

    def write(parts, prep, *args):
        written.extend(r for r, _ in prep.encode)
        return real_write(parts, prep, *args)

    monkeypatch.setattr(pipeline, "_write", write)
    assert hashing_collection().index_paths([folder], batch_size=1024).added == 5
    assert len(written) == 5 and all(r.image is None and r.image_path is not None for r in written)


def test_reembed_decodes_a_chunk_at_a_time_and_names_why_an_image_is_skipped(
    hashing_collection, tmp_path: Path, monkeypatch
) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(20):
        Image.new("RGB", (30, 20), (i * 10, 0, 0)).save(folder / f"{i:02d}.png")
    col = hashing_collection()
    assert col.index_paths([folder]).added == 20
    (folder / "07.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # no longer decodes
    most = [0]
    real_encode = pipeline.encode_records

    def encode(get_encoder, records, dim, batch_size):
        most[0] = max(most[0], sum(r.image is not None for r in records))
        return real_encode(get_encoder, records, dim, batch_size)

    monkeypatch.setattr("latentsearch.ingest.reembed.encode_records", encode)
    report = col.reembed(batch_size=1024)
    assert report.updated == 19
    [skipped] = report.skipped
    assert Path(skipped.source).name == "07.png" and skipped.reason.startswith("unreadable: ")
    assert skipped.reason.removeprefix("unreadable: ").strip()
    assert most[0] <= pipeline.MAX_CHUNK_IMAGES
