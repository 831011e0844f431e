"""``timm:NAME?backend=onnx``: the pooled image model exported once to ONNX and run by ONNX
Runtime; vectors equal to torch's to float rounding, the export cached, the backend pinned by the
collection, and the options it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="backend=onnx needs onnxruntime")
pytest.importorskip("timm")

import latentsearch  # noqa: E402
from latentsearch.encoders import create_encoder, onnx_export  # noqa: E402
from latentsearch.errors import EncoderMismatchError, InvalidInputError  # noqa: E402

SPEC = "timm:resnet18?pretrained=false"


def pictures(n: int = 6) -> list:
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 56, 3), dtype=np.uint8)) for i in range(n)]


def test_onnx_gives_torchs_vectors_and_exports_once(onnx_cache, monkeypatch) -> None:
    torch_enc, onnx_enc = create_encoder(SPEC), create_encoder(SPEC + "&backend=onnx")
    assert onnx_enc.spec == "timm:resnet18?pretrained=false&seed=0&backend=onnx" and onnx_enc.dim == torch_enc.dim == 512
    a, b = torch_enc.encode_image(pictures()), onnx_enc.encode_image(pictures(), batch_size=4)
    assert b.shape == a.shape and b.dtype == np.float32
    assert np.abs(a - b).max() < 1e-4
    assert onnx_enc.fingerprint() != torch_enc.fingerprint()
    exported = list(onnx_cache.rglob("model.onnx"))
    assert len(exported) == 1

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_export, "export_image_model", no_export)
    again = create_encoder(SPEC + "&backend=onnx")  # from the cache
    assert again.fingerprint() == onnx_enc.fingerprint()
    assert np.array_equal(again.encode_image(pictures()[:2]), b[:2])


def test_a_collection_pins_the_backend(onnx_cache, tmp_path: Path) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    for i, im in enumerate(pictures()):
        im.save(folder / f"p{i}.png")
    path = tmp_path / "col"
    with latentsearch.create(path, encoder=SPEC + "&backend=onnx", index="Flat") as col:
        report = col.index_paths([folder])
        assert report.added == 6
        hits = col.search(folder / "p3.png", k=1)
        assert hits[0].source.endswith("p3.png") and hits[0].score > 0.999
    with pytest.raises(EncoderMismatchError):
        latentsearch.open(path, encoder=SPEC)
    with latentsearch.open(path) as col:
        assert col.config.encoder.endswith("backend=onnx")


@pytest.mark.parametrize("options, words", [
    ("&backend=onnx-int8", "backend=onnx-int8"),
    ("&backend=onnx&layer=layer2", "layer= reads the torch model"),
    ("&backend=tensorrt", "not one of"),
])
def test_refused_backends(options: str, words: str) -> None:
    with pytest.raises(InvalidInputError, match=words):
        create_encoder(SPEC + options)
