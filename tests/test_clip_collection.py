"""A CLIP collection end to end: images indexed from files, found by a text query and by an image."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip_fixture import make_tiny_clip  # noqa: E402

import latentsearch  # noqa: E402


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


def test_text_query_finds_images(tiny_clip, tmp_path):
    from PIL import Image

    pics = tmp_path / "pics"
    pics.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(pics / f"p{i}.png")
    with latentsearch.create(tmp_path / "col", encoder=f"clip:{tiny_clip}", index="Flat") as col:
        report = col.index_paths([pics])
        assert report.added == 6 and not report.skipped
        encoder = col.encoder
        hits = col.search("a photo of a red cat", k=6)
        # The ranking is the one the model gives: text vector against image vectors, cosine.
        query = encoder.encode_text(["a photo of a red cat"])[0]
        images = encoder.encode_image([Image.open(pics / f"p{i}.png").convert("RGB") for i in range(6)])
        scores = images @ query / (np.linalg.norm(images, axis=1) * np.linalg.norm(query))
        expected = [str((pics / f"p{i}.png").resolve()) for i in np.argsort(-scores)]
        assert [h.source for h in hits] == expected
        assert all(h.modality == "image" and h.image_path == h.source for h in hits)
        np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1], rtol=1e-4, atol=1e-5)
        # An image query finds the same image first.
        assert col.search(pics / "p3.png", k=1)[0].source == str((pics / "p3.png").resolve())
