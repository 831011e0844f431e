"""Decoding latents back into images: ``Collection.decode`` and ``latentsearch explore …
--decode PNG`` (a walk, an arithmetic, samples around a latent) with a toy linear autoencoder
registered as an encoder, and the errors of an encoder without a decoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import latentsearch
from latentsearch.cli import cli
from latentsearch.encoders import ENCODERS
from latentsearch.encoders.base import BaseEncoder, Decoder
from latentsearch.errors import InvalidInputError

SIDE, DIM = 8, 12


class LinearAutoencoder(BaseEncoder):
    """``toyae:``: an 8×8 RGB image averaged over 4×4 blocks (12 numbers, in [0, 1]); decoding
    paints each block with its average."""

    modalities = frozenset({"image"})
    decodes = True

    def __init__(self, name: str = "", options: dict[str, str] | None = None):
        self.spec, self.dim = "toyae:", DIM
        self.calls: list[int] = []

    def fingerprint(self) -> str:
        return "toyae-1"

    def encode_image(self, images: Any, batch_size: int = 32) -> np.ndarray:
        x = np.stack([np.asarray(im.convert("RGB").resize((SIDE, SIDE)), np.float32) / 255 for im in images])
        blocks = x.reshape(len(x), 2, SIDE // 2, 2, SIDE // 2, 3).mean(axis=(2, 4))
        return self._checked(blocks.reshape(len(x), DIM), len(images))

    def decode(self, vectors: np.ndarray, batch_size: int = 32) -> list[Any]:
        self.calls.append(len(vectors))
        blocks = np.clip(vectors, 0, 1).reshape(-1, 2, 2, 3)
        x = blocks.repeat(SIDE // 2, axis=1).repeat(SIDE // 2, axis=2)
        return [Image.fromarray((p * 255).round().astype(np.uint8)) for p in x]


class EntryPoint:
    value = "tests:LinearAutoencoder"

    def load(self) -> Any:
        return LinearAutoencoder


@pytest.fixture(autouse=True)
def toyae(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ENCODERS, "_plugins", {**ENCODERS.plugins(), "toyae": EntryPoint()})


def colours(folder: Path, n: int = 12) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        base = np.array([(220, 30, 30), (30, 200, 40), (30, 60, 220)][i % 3])
        pixels = np.clip(base + rng.integers(-20, 20, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
        paths.append(folder / f"c{i:02d}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


@pytest.fixture
def col(tmp_path: Path) -> Any:
    colours(tmp_path / "images")
    with latentsearch.create(tmp_path / "c", encoder="toyae:", metric="l2", index="Flat") as c:
        c.index_paths([tmp_path / "images"])
    return tmp_path / "c"


def run(*args: object) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_decode_gives_back_what_the_model_decodes(col: Path, tmp_path: Path) -> None:
    with latentsearch.open(col) as c:
        assert isinstance(c.encoder, Decoder) and c.encoder.decodes
        _, vectors = c.searcher.vectors([1, 2, 3])
        images = c.decode(vectors)
        assert [im.size for im in images] == [(SIDE, SIDE)] * 3
        expected = c.encoder.decode(vectors)
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, expected))
        # one latent decodes too, and the stored latent of an image decodes to (about) that image
        original = np.asarray(Image.open(tmp_path / "images" / "c00.png"), np.float32)
        assert np.abs(np.asarray(c.decode(vectors[0])[0], np.float32) - original).mean() < 20
        with pytest.raises(InvalidInputError, match="12"):
            c.decode(np.zeros((2, 5), np.float32))
        with pytest.raises(InvalidInputError):
            c.decode(np.full((1, DIM), np.nan, np.float32))
        assert c.decode(np.zeros((0, DIM), np.float32)) == []


def test_an_encoder_without_a_decoder_says_so(tmp_path: Path) -> None:
    with latentsearch.create(tmp_path / "h", encoder="hashing:16") as c:
        c.add(["one", "two"])
        with pytest.raises(InvalidInputError, match="has no decoder"):
            c.decode(np.zeros((1, 16), np.float32))
    r = run("explore", tmp_path / "h", "--between", "#1", "#2", "--decode", tmp_path / "x.png")
    assert r.exit_code != 0 and "has no decoder" in r.output and not (tmp_path / "x.png").exists()
    with latentsearch.create(tmp_path / "v", encoder=None, dim=4) as c:
        c.add(np.eye(4, dtype=np.float32))
        with pytest.raises(InvalidInputError, match="no encoder"):
            c.decode(np.zeros((1, 4), np.float32))


def test_explore_between_decodes_a_walk_into_a_grid(col: Path, tmp_path: Path) -> None:
    out = tmp_path / "walk.png"
    r = run("explore", col, "--between", "#1", "#2", "--steps", 6, "--decode", out, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["decoded"] == str(out) and len(data["points"]) == 6
    assert data["points"][0]["hits"][0]["id"] == 1 and data["points"][-1]["hits"][0]["id"] == 2
    grid = Image.open(out)
    assert grid.size[0] > 6 * 96 and grid.size[1] > 2 * 96  # 6 decoded, 6 nearest items under them
    # the first cell is item 1's latent decoded: red like c00.png, the second column's last is green
    cell = np.asarray(grid.convert("RGB"))[4 + 48, 4 + 48]
    assert cell[0] > 150 and cell[1] < 100


def test_explore_arithmetic_and_around(col: Path, tmp_path: Path) -> None:
    out = tmp_path / "sum.png"
    r = run("explore", col, "#1 + #4 - #7", "-k", 4, "--decode", out)
    assert r.exit_code == 0, r.output
    assert Image.open(out).size[1] > 2 * 96 and "result" in r.stdout
    assert all(f"  {i}  " not in r.stdout for i in (1, 4, 7))  # the items named are left out
    out = tmp_path / "around.png"
    r = run("explore", col, "--around", "#3", "--samples", 5, "--radius", 0.2, "--decode", out, "--json")
    assert r.exit_code == 0, r.output
    points = json.loads(r.stdout)["points"]
    assert [p["caption"] for p in points] == ["centre", "sample 1", "sample 2", "sample 3", "sample 4"]
    assert points[0]["hits"][0]["id"] == 3
    listed = run("explore", col, "--around", "#3", "--samples", 3, "--json")  # nothing decoded
    assert listed.exit_code == 0 and json.loads(listed.stdout)["decoded"] is None


def test_a_missing_file_is_shown_decoded(col: Path, tmp_path: Path) -> None:
    (tmp_path / "images" / "c01.png").unlink()
    out = tmp_path / "walk.png"
    r = run("explore", col, "--between", "#2", "#5", "--steps", 2, "--decode", out)
    assert r.exit_code == 0, r.output and out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--around", "#1", "--samples", 0, "--decode", "x.png"], "samples"),
        (["--around", "#1", "--radius", -1], "radius"),
        (["#1", "--mmr", 0.5, "--decode", "x.png"], "nothing to --decode"),
        (["#1", "--around", "#2"], "one of EXPRESSION"),
        (["--around", "#999", "--decode", "x.png"], "999"),
    ],
)
def test_explore_decode_errors(col: Path, tmp_path: Path, args: list[Any], message: str) -> None:
    r = run("explore", col, *args)
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output
