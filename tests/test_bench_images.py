"""Image retrieval quality: the metric functions by hand, the harness and ``bench images`` on tiny folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from latentsearch.cli import cli
from latentsearch.errors import EncoderMismatchError, InvalidInputError
from latentsearch.evaluation.images import (
    average_precision,
    average_precisions,
    class_matches,
    exact_average_precisions,
    exact_rankings,
    first_per_class,
    image_quality,
    labelled_images,
    per_class_means,
    precision_at_k,
)

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def write_images(folder: Path, per_class: int = 6, seed: int = 0) -> Path:
    """``folder/<colour>/<n>.png``: solid colours with a little noise, 24x24."""
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (folder / name).mkdir(parents=True)
        for n in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 12, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{n:02d}.png")
    return folder


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return write_images(tmp_path / "colours")


# -- metric functions, hand-computed ---------------------------------------------------------------


def test_precision_at_k_by_hand():
    matches = [True, False, True, True, False]
    assert precision_at_k(matches, 1) == 1.0
    assert precision_at_k(matches, 2) == 0.5
    assert precision_at_k(matches, 4) == 0.75
    assert precision_at_k(matches, 10) == 0.3  # divided by k even when fewer were retrieved
    assert precision_at_k([], 3) == 0.0
    with pytest.raises(InvalidInputError):
        precision_at_k(matches, 0)


def test_average_precision_by_hand():
    # relevant at ranks 1 and 3 of 4: (1/1 + 2/3) / 2
    assert average_precision([1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    # relevant at ranks 2, 3 and 5: (1/2 + 2/3 + 3/5) / 3
    assert average_precision([0, 1, 1, 0, 1]) == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)
    assert average_precision([1, 1, 0, 0]) == 1.0
    assert average_precision([0, 0, 1, 1]) == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert average_precision([0, 0, 0]) == 0.0
    assert average_precision([]) == 0.0


def test_average_precisions_agrees_row_by_row():
    rng = np.random.default_rng(3)
    m = rng.random((40, 17)) < 0.3
    rows = [average_precision(row) for row in m]
    assert np.allclose(average_precisions(m), rows)
    with pytest.raises(InvalidInputError):
        average_precisions(np.zeros(3, dtype=bool))


def test_class_matches():
    assert class_matches("cat", ["cat", "dog", "cat"]).tolist() == [True, False, True]


def test_exact_rankings_leave_the_query_out_and_sort_best_first():
    x = np.array([[0.0], [1.0], [3.0], [6.0]], dtype=np.float32)
    (start, order), = exact_rankings(x, "l2")
    assert start == 0
    # By distance from 0: 1, 3, 6; from 1: 0 (1), 3 (2), 6 (5); from 3: 1 (2), then 0 and 6
    # tied at 3, in row order; from 6: 3, 1, 0.
    assert order.tolist() == [[1, 2, 3], [0, 2, 3], [1, 0, 3], [2, 1, 0]]
    # Inner product: higher is closer, ties keep row order.
    y = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)
    blocks = list(exact_rankings(y, "ip", chunk=3))
    assert [b[0] for b in blocks] == [0, 3]
    order = np.concatenate([b[1] for b in blocks])
    assert order.tolist() == [[2, 3, 1], [3, 0, 2], [0, 3, 1], [1, 0, 2]]


def test_exact_average_precisions_by_hand():
    # 1-D points 0, 1, 4, 6 of classes a b a b (l2):
    # 0 ranks 1(b) 4(a) 6(b) -> 1/2; 1 ranks 0(a) 4(a) 6(b) -> 1/3;
    # 4 ranks 6(b) 1(b) 0(a) -> 1/3; 6 ranks 4(a) 1(b) 0(a) -> 1/2.
    x = np.array([[0.0], [1.0], [4.0], [6.0]], dtype=np.float32)
    labels = ["a", "b", "a", "b"]
    aps = exact_average_precisions(x, labels, "l2", chunk=3)
    assert aps.tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 3, 1 / 2])
    # Inner product, cosine alike: class a at angles 0 and 10 degrees, b at 90 and 60.
    angles = np.radians([0, 10, 90, 60])
    unit = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    # 0 ranks 10(a) -> 1; 10 ranks 0(a) -> 1; 90 ranks 60(b) -> 1; 60 ranks 90(b) (30 deg) before 10 (50) -> 1.
    assert exact_average_precisions(unit, labels[:1] + ["a", "b", "b"], "cosine").tolist() == pytest.approx([1.0] * 4)
    # Mixed: a at 0 and 60, b at 10 and 90 -> 0 ranks 10(b) 60(a) 90 -> 1/2.
    mixed = exact_average_precisions(unit, ["a", "b", "b", "a"], "ip")
    assert mixed[0] == pytest.approx(1 / 2)
    with pytest.raises(InvalidInputError):
        exact_average_precisions(x, labels[:3], "l2")
    with pytest.raises(InvalidInputError):
        exact_average_precisions(x, labels, "hamming")


def test_per_class_means_by_hand():
    per_class, overall = per_class_means(
        {"precision@1": [1, 0, 1, 1, 1], "map": [0.5, 0.25, 1.0, 0.5, 0.0]}, ["a", "a", "b", "b", "b"]
    )
    assert per_class == {
        "a": {"images": 2, "precision@1": 0.5, "map": 0.375},
        "b": {"images": 3, "precision@1": 1.0, "map": 0.5},
    }
    assert overall == {"images": 5, "precision@1": 0.8, "map": pytest.approx(2.25 / 5)}  # per image, not per class
    with pytest.raises(InvalidInputError):
        per_class_means({"map": [1.0]}, ["a", "b"])


# -- the folder ----------------------------------------------------------------------------------


def test_labelled_images_lists_classes_in_order(images: Path):
    (images / "red" / "notes.txt").write_text("not an image")
    (images / ".hidden").mkdir()
    (images / ".hidden" / "x.png").write_bytes((images / "red" / "00.png").read_bytes())
    (images / "empty").mkdir()
    paths, labels = labelled_images(images)
    assert len(paths) == 18 and labels == ["blue"] * 6 + ["green"] * 6 + ["red"] * 6
    assert paths[0] == images / "blue" / "00.png" and all(p.parent.name == label for p, label in zip(paths, labels))
    kept, kept_labels = first_per_class(paths, labels, 2)
    assert [p.name for p in kept] == ["00.png", "01.png"] * 3 and kept_labels == ["blue"] * 2 + ["green"] * 2 + ["red"] * 2
    with pytest.raises(InvalidInputError, match="at least 2"):
        first_per_class(paths, labels, 1)


def test_bad_folders_are_clear_errors(tmp_path: Path):
    with pytest.raises(InvalidInputError, match="no image folder"):
        labelled_images(tmp_path / "missing")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    with pytest.raises(InvalidInputError, match="no class subfolders"):
        labelled_images(flat)
    one = tmp_path / "one"
    (one / "cats").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(one / "cats" / "a.png")
    with pytest.raises(InvalidInputError, match="one class only"):
        labelled_images(one)


# -- the harness ---------------------------------------------------------------------------------


def test_image_quality_on_solid_colours(images: Path, tmp_path: Path):
    col = tmp_path / "col"
    result = image_quality(images, col, encoder="hashing:64", ks=(1, 5, 10, 100))
    assert result.images == 18 and result.classes == ["blue", "green", "red"]
    assert result.ks == (1, 5, 10)  # 100 is more than the 17 others a query can rank
    assert result.overall["precision@1"] == 1.0
    assert result.overall["precision@5"] == 1.0  # five of the other five of its colour
    assert result.overall["precision@10"] == pytest.approx(0.5)  # only five can match
    assert result.overall["map"] == pytest.approx(1.0)
    for label in COLOURS:
        assert result.per_class[label]["images"] == 6 and result.per_class[label]["precision@1"] == 1.0
    assert result.added == 18 and result.encoder == "hashing:64" and result.index == "Flat"
    assert result.fingerprint and not result.skipped

    # Reusing the collection with another index encodes nothing and gives the same numbers.
    again = image_quality(images, col, index="HNSW16", ks=(1, 5))
    assert again.added == 0 and again.index == "HNSW16"
    assert again.overall["precision@1"] == 1.0 and again.overall["map"] == pytest.approx(1.0)
    # A subset of a reused collection is refused: the rest would join every ranking.
    with pytest.raises(InvalidInputError, match="besides these 9 images"):
        image_quality(images, col, limit_per_class=3)
    with pytest.raises(EncoderMismatchError):
        image_quality(images, col, encoder="hashing:32")


def test_image_quality_map_is_exact_and_precision_follows_the_index(tmp_path: Path):
    """Noisier classes: mAP from numpy equals the AP of the Flat index's complete ranking."""
    data = tmp_path / "noisy"
    rng = np.random.default_rng(1)
    for c in range(3):
        (data / f"c{c}").mkdir(parents=True)
        for n in range(7):
            base = np.array([120 + 40 * c, 120, 120 - 30 * c])
            pixels = np.clip(base + rng.normal(0, 70, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(data / f"c{c}" / f"{n}.png")
    result = image_quality(data, tmp_path / "col", encoder="hashing:64", ks=(1, 20))
    assert result.ks == (1, 20)
    assert 0 < result.overall["map"] < 1
    # precision@20 over complete rankings of 20 others: each class has 6 others -> 6/20.
    assert result.overall["precision@20"] == pytest.approx(6 / 20)

    aps, p1 = full_index_rankings(data, tmp_path / "col")
    assert result.overall["map"] == pytest.approx(float(np.mean(aps)), abs=1e-9)
    assert result.overall["precision@1"] == pytest.approx(float(np.mean(p1)))


def full_index_rankings(data: Path, collection: Path) -> tuple[list[float], list[float]]:
    """AP and precision@1 of each image from the collection's own complete rankings."""
    import latentsearch

    with latentsearch.open(collection) as col:
        paths, labels = labelled_images(data)
        keys = [str(p.resolve()) for p in paths]
        ids = [col.store.keys_to_ids(keys)[k][0] for k in keys]
        label_of = dict(zip(ids, labels))
        rows = col.search_batch(ids, k=len(ids) - 1)
    matches = [class_matches(label_of[i], [label_of[h.id] for h in row]) for i, row in zip(ids, rows)]
    assert all(len(m) == len(ids) - 1 for m in matches)
    return [average_precision(m) for m in matches], [precision_at_k(m, 1) for m in matches]


@pytest.mark.slow
def test_image_quality_with_a_timm_encoder(images: Path, tmp_path: Path):
    pytest.importorskip("timm")
    result = image_quality(images, tmp_path / "col", encoder="timm:test_resnet?pretrained=false", ks=(1, 5))
    assert result.images == 18 and result.encoder.startswith("timm:test_resnet")
    assert set(result.overall) == {"images", "precision@1", "precision@5", "map"}
    assert all(0.0 <= v <= 1.0 for k, v in result.overall.items() if k != "images")
    # The model's vectors are not unit length: the exact mAP still ranks as the cosine index does.
    aps, _ = full_index_rankings(images, tmp_path / "col")
    assert result.overall["map"] == pytest.approx(float(np.mean(aps)), abs=1e-6)


def test_image_quality_refuses_a_class_with_one_image(tmp_path: Path):
    data = write_images(tmp_path / "d", per_class=1)
    with pytest.raises(InvalidInputError, match="only one readable image"):
        image_quality(data, tmp_path / "col", encoder="hashing:64")
    assert not (tmp_path / "col").exists()  # refused before a collection was made


# -- the command ---------------------------------------------------------------------------------


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_bench_images_prints_a_table(images: Path, tmp_path: Path):
    result = invoke("bench", "images", "--dataset", images, "--encoder", "hashing:64", "-q")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "18 images in 3 classes" in result.output and "hashing:64" in result.output
    for label in [*COLOURS, "overall"]:
        row = next(line for line in lines if f" {label} " in line)
        assert "1.0000" in row
    assert "P@1" in result.output and "mAP" in result.output and "P@100" not in result.output


def test_bench_images_json_and_collection_reuse(images: Path, tmp_path: Path):
    col, out = tmp_path / "col", tmp_path / "out.json"
    result = invoke("bench", "images", "--dataset", images, "--encoder", "hashing:64", "--collection", col,
                    "--limit-per-class", 4, "-k", 1, "-k", 3, "--json", out, "-q")
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "image_quality" and doc["machine"]["libraries"]["latentsearch"]
    assert doc["dataset"]["images"] == 12 and doc["dataset"]["classes"] == ["blue", "green", "red"]
    assert doc["ks"] == [1, 3] and doc["overall"]["precision@1"] == 1.0 and doc["overall"]["map"] == pytest.approx(1.0)
    assert set(doc["per_class"]["red"]) == {"images", "precision@1", "precision@3", "map"}

    again = invoke("bench", "images", "--dataset", images, "--collection", col, "--limit-per-class", 4,
                   "--json", "-", "-q")
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["added"] == 0


def test_bench_images_errors_are_one_line(tmp_path: Path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "a.png")
    result = CliRunner().invoke(cli, ["bench", "images", "--dataset", str(flat), "--encoder", "hashing:64"])
    assert result.exit_code != 0
    assert "no class subfolders" in result.output and "Traceback" not in result.output
    missing = CliRunner().invoke(cli, ["bench", "images", "--dataset", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_image_quality_script_runs_on_tiny_data(images: Path, tmp_path: Path):
    import subprocess
    import sys

    out = tmp_path / "image_quality.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "image_quality.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--dataset", str(images), "--encoder", "hashing:64", "--baseline", "hashing:32",
         "--limit-per-class", "4", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote" in proc.stdout and "overall" in proc.stdout
    doc = json.loads(out.read_text())
    assert [r["encoder"] for r in doc["results"]] == ["hashing:64", "hashing:32"]
    assert doc["dataset"]["images"] == 12 and doc["results"][0]["overall"]["precision@1"] == 1.0
    machine = doc["machine"]  # _common.machine() is report.machine_info() plus the scripts' libraries
    assert {"python", "platform", "processor", "cpus", "libraries", "date", "faiss_threads"} <= set(machine)
    assert machine["libraries"]["latentsearch"]


def test_bench_images_markdown(images: Path, tmp_path: Path):
    md = tmp_path / "images.md"
    result = invoke("bench", "images", "--dataset", images, "--encoder", "hashing:64", "--markdown", md, "-q")
    assert result.exit_code == 0, result.output
    lines = md.read_text().splitlines()
    assert lines[0].startswith("### ") and lines[2].startswith("| class | images | P@1")
    assert any(line.startswith("| **overall** | 18 | 1.0000") for line in lines)
    assert "overall" in result.output  # written to a file, so the table is printed as well
