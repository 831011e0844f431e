"""Small helpers several test files share (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# The data shared between checkouts (../shared next to the clone; LATENTSEARCH_SHARED moves it),
# by the same rule as benchmarks/_common.py, so the scripts the tests run find the same data.
SHARED = Path(os.environ.get("LATENTSEARCH_SHARED", ROOT.parent / "shared"))
DATASETS = SHARED / "datasets"


def needs_dataset(name: str) -> pytest.MarkDecorator:
    """Skip unless ``DATASETS / name`` exists (a fresh clone has no ../shared), saying where it looked."""
    path = DATASETS / name
    return pytest.mark.skipif(not path.is_dir(), reason=f"needs the {name} dataset at {path} (../shared/datasets, "
                                                        "or LATENTSEARCH_SHARED)")


def assert_matrix(out: np.ndarray, n: int, dim: int) -> None:
    """The encoder contract: an (n, dim) finite float32 C-contiguous array."""
    assert isinstance(out, np.ndarray)
    assert out.shape == (n, dim)
    assert out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    assert np.isfinite(out).all()


def write(path: Path, data: str | bytes = "some text") -> Path:
    """Write text (UTF-8) or bytes to ``path``, creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """One JSON object per line, UTF-8, folders created."""
    return write(path, "\n".join(json.dumps(r) for r in records))


def write_beir(folder: Path) -> Path:
    """A four-document BEIR folder where each query shares distinctive words with its answer."""
    docs = {
        "d1": ("Ships", "ships float on water because of buoyancy"),
        "d2": ("Bread", "yeast makes bread dough rise"),
        "d3": ("Stars", "stars shine by nuclear fusion"),
        "d4": ("Whales", "whales sing long songs in the ocean"),
    }
    queries = {"q1": "why do ships float", "q2": "how does yeast raise bread", "q3": "whales songs"}
    qrels = [("q1", "d1", 1), ("q2", "d2", 1), ("q3", "d4", 2)]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": t, "text": x}) + "\n" for k, (t, x) in docs.items())
    )
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items())
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
    )
    return folder


def assert_one_line_error(result: Any, *words: str, code: int | None = None) -> str:
    """A non-zero exit, no traceback, and exactly one ``Error:`` line naming ``words``."""
    assert result.exit_code != 0
    if code is not None:
        assert result.exit_code == code
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def write_small_corpus(folder: Path) -> Path:
    """Three short text files (cats, ships, boats) in ``folder``, made here; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cats.txt").write_text("cats purr and sleep all day")
    (folder / "ships.txt").write_text("ships float on the water")
    (folder / "boats.md").write_text("boats sail on the water at sea")
    return folder


def write_random_pictures(folder: Path, query: Path, n: int = 3) -> tuple[Path, Path]:
    """``n`` seeded random 32 × 24 PNGs ``p0.png``… in ``folder``, and ``query``: the pixels of
    ``p1.png`` saved in another format (by its suffix)."""
    from PIL import Image

    rng = np.random.RandomState(0)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.randint(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    Image.open(folder / "p1.png").save(query)
    return folder, query
