"""The Python API: latentsearch.create / open and Collection, end to end.

Fast encoders only: ``hashing:64`` for text and images, and precomputed vectors
(``encoder=None, dim=...``). Crash tests check DESIGN invariant 2 (the store is the truth;
the index snapshot is replayed or rebuilt) and the writer lock (invariant 4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import latentsearch
from latentsearch.errors import (
    CollectionExistsError,
    CollectionLockedError,
    CollectionNotFoundError,
    DimensionMismatchError,
    EncoderMismatchError,
    InvalidInputError,
    LatentSearchError,
    UnknownSpecError,
)

PIL_Image = pytest.importorskip("PIL.Image")

ENCODER = "hashing:64"
DIM = 16  # precomputed-vector collections

TEXTS = [
    "the cat sat on the mat",
    "a dog barked in the fog",
    "ships sail across the stormy sea",
    "stock markets fell sharply on monday",
    "the recipe needs flour sugar and eggs",
    "quantum computers use qubits",
    "the goalkeeper saved a penalty",
    "volcanoes erupt molten lava",
    "a violin concerto in d major",
    "rain forests hold many species",
    "the train left the station late",
    "honey bees pollinate flowers",
]
KEYS = [f"doc-{i}" for i in range(len(TEXTS))]


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    """Tiny indexes: one thread avoids OpenMP contention and keeps HNSW deterministic."""
    faiss = pytest.importorskip("faiss")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture
def text_col(tmp_path: Path):
    col = latentsearch.create(tmp_path / "texts", encoder=ENCODER, index="Flat")
    col.ids = col.add(TEXTS, metadata=[{"n": i, "even": i % 2 == 0} for i in range(len(TEXTS))], keys=KEYS)
    yield col
    col.close()


def random_images(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [PIL_Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)) for _ in range(n)]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def brute_force(stored: dict[int, np.ndarray], q: np.ndarray, k: int, metric: str) -> tuple[list[int], list[float]]:
    ids = np.array(list(stored), dtype=np.int64)
    x = np.stack([stored[i] for i in ids])
    if metric == "l2":
        s = ((x - q) ** 2).sum(1)
        order = np.argsort(s, kind="stable")[:k]
    else:
        s = x @ q
        order = np.argsort(-s, kind="stable")[:k]
    return ids[order].tolist(), s[order].tolist()


def assert_same_hits(a: list, b: list) -> None:
    """Same scores, and the same ids except among items tied with the last score (where a
    top-k cut may pick any of them: the hashing encoder gives many texts equal scores)."""
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5, atol=1e-6)
    if a:
        cut = a[-1].score
        assert [h.id for h in a if abs(h.score - cut) > 1e-6] == [h.id for h in b if abs(h.score - cut) > 1e-6]


# -- create, add, get, search -----------------------------------------------------------------


def test_add_texts_with_metadata_and_keys_then_get(text_col) -> None:
    ids = text_col.ids
    assert len(ids) == len(TEXTS) == len(text_col)
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids)
    items = text_col.get([ids[3], 10**9, ids[0]])  # order kept; unknown ids left out
    assert [it.id for it in items] == [ids[3], ids[0]]
    assert items[0].text == TEXTS[3] and items[0].key == KEYS[3] and items[0].modality == "text"
    assert items[0].metadata == {"n": 3, "even": False}
    assert text_col.get([]) == []


def test_search_by_text(text_col) -> None:
    hits = text_col.search("which cat sat on a mat", k=3)
    assert len(hits) == 3
    top = hits[0]
    assert (top.id, top.key, top.text, top.modality) == (text_col.ids[0], KEYS[0], TEXTS[0], "text")
    assert top.metadata == {"n": 0, "even": True}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    exact = text_col.search(TEXTS[5], k=1)[0]
    assert exact.id == text_col.ids[5] and exact.score == pytest.approx(1.0, abs=1e-5)
    assert len(text_col.search("cat", k=100)) == len(TEXTS)  # k larger than the collection


def test_search_by_item_id_excludes_the_item(text_col) -> None:
    for item_id in text_col.ids[:4]:
        hits = text_col.search(item_id, k=5)
        assert len(hits) == 5
        assert item_id not in [h.id for h in hits]
        by_text = [h.id for h in text_col.search(TEXTS[text_col.ids.index(item_id)], k=6) if h.id != item_id]
        assert [h.id for h in hits] == by_text[:5]
    everything = text_col.search(text_col.ids[0], k=len(TEXTS))
    assert len(everything) == len(TEXTS) - 1
    assert text_col.search(np.int64(text_col.ids[1]), k=2)[0].id != text_col.ids[1]


def test_search_by_vector(text_col) -> None:
    v = text_col.encoder.encode_text([TEXTS[7]])[0]
    for query in (v, v.tolist(), 5.0 * v):  # ndarray, list; cosine ignores the length
        top = text_col.search(query, k=1)[0]
        assert top.id == text_col.ids[7] and top.score == pytest.approx(1.0, abs=1e-5)


def test_images_pil_and_paths(tmp_path: Path) -> None:
    images = random_images(6)
    paths = []
    for i, im in enumerate(images[3:]):
        paths.append(tmp_path / f"img{i}.png")
        im.save(paths[-1])
    with latentsearch.create(tmp_path / "images", encoder=ENCODER, index="Flat") as col:
        pil_ids = col.add(images[:3], metadata=[{"i": i} for i in range(3)])
        path_ids = col.add(paths, keys=["p0", "p1", "p2"])
        assert len(col) == 6
        items = col.get(pil_ids + path_ids)
        assert {it.modality for it in items} == {"image"}
        assert items[3].source == str(paths[0].resolve())
        for im, item_id in zip(images[:3], pil_ids):  # search by a PIL image
            top = col.search(im, k=1)[0]
            assert top.id == item_id and top.score == pytest.approx(1.0, abs=1e-5)
            assert top.image_path is None
        for path, item_id in zip(paths, path_ids):  # search by an image Path
            top = col.search(path, k=1)[0]
            assert top.id == item_id and top.score == pytest.approx(1.0, abs=1e-5)
            assert top.image_path == str(path.resolve())
        # A PIL image with the same pixels as a file finds the file's item.
        assert col.search(images[4], k=1)[0].id == path_ids[1]
        not_an_image = tmp_path / "notes.txt"
        not_an_image.write_text("hello")
        with pytest.raises(InvalidInputError):
            col.search(not_an_image)
        with pytest.raises(InvalidInputError):
            col.search(tmp_path / "missing.png")


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_precomputed_vectors_match_brute_force(metric: str, tmp_path: Path) -> None:
    x = vectors(200, seed=1)
    with latentsearch.create(tmp_path / "v", encoder=None, dim=DIM, index="Flat", metric=metric) as col:
        ids = col.add(x, metadata=[{"row": i} for i in range(200)])
        assert len(col) == 200 and col.get([ids[5]])[0].modality == "vector"
        stored = dict(zip(ids, unit(x) if metric == "cosine" else x))
        for q in vectors(5, seed=2):
            qq = unit(q) if metric == "cosine" else q
            want_ids, want_scores = brute_force(stored, qq, 7, metric)
            hits = col.search(q, k=7)
            assert [h.id for h in hits] == want_ids
            np.testing.assert_allclose([h.score for h in hits], want_scores, rtol=1e-4, atol=1e-4)
        # Query by item id: its neighbours, without itself.
        want_ids, _ = brute_force({i: v for i, v in stored.items() if i != ids[9]}, stored[ids[9]], 5, metric)
        assert [h.id for h in col.search(ids[9], k=5)] == want_ids
        with pytest.raises(InvalidInputError):
            col.search("text needs an encoder")
        with pytest.raises(InvalidInputError):
            col.add(["text needs an encoder"])
        assert len(col) == 200


def test_cosine_vectors_are_normalised_at_the_door(tmp_path: Path) -> None:
    with latentsearch.create(tmp_path / "v", encoder=None, dim=DIM, index="Flat") as col:
        x = vectors(10, seed=3) * np.arange(1, 11, dtype=np.float32)[:, None]
        ids = col.add(x)
        for i, v in zip(ids, x):
            top = col.search(v * 0.001, k=1)[0]
            assert top.id == i and top.score == pytest.approx(1.0, abs=1e-5)


def test_search_batch_equals_individual_searches(text_col, tmp_path: Path) -> None:
    im = random_images(1, seed=5)[0]
    path = tmp_path / "q.png"
    im.save(path)
    text_col.add([im], keys=["img"])
    vector = text_col.encoder.encode_text(["flowers and bees"])[0]
    queries = ["cat on a mat", vector, text_col.ids[2], im, path, "train station"]
    batch = text_col.search_batch(queries, k=4)
    assert len(batch) == len(queries)
    for query, hits in zip(queries, batch):
        assert_same_hits(hits, text_col.search(query, k=4))
    assert text_col.search_batch([], k=3) == []


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_an_ivf_collection_trains_when_it_has_enough_vectors(metric: str, tmp_path: Path) -> None:
    path = tmp_path / "ivf"
    x = vectors(700, seed=60)
    stored = dict()
    queries = vectors(5, seed=61)

    def check(col) -> None:
        for q in queries:
            want, scores = brute_force(stored, unit(q) if metric == "cosine" else q, 5, metric)
            hits = col.search(q, k=5)
            assert [h.id for h in hits] == want  # nprobe=16 of 16 lists: exhaustive
            np.testing.assert_allclose([h.score for h in hits], scores, rtol=1e-4, atol=1e-4)

    with latentsearch.create(path, encoder=None, dim=DIM, index="IVF16,Flat?nprobe=16", metric=metric) as col:
        stored.update(zip(col.add(x[:300]), unit(x[:300]) if metric == "cosine" else x[:300]))
        assert "exact" in col.info()["index_in_use"]  # 300 < 39 * 16: a flat index stands in
        check(col)
        stored.update(zip(col.add(x[300:]), unit(x[300:]) if metric == "cosine" else x[300:]))
        assert col.info()["index_in_use"] == "IVF16,Flat"
        check(col)
    with latentsearch.open(path) as col:
        assert col.info()["index_in_use"] == "IVF16,Flat"
        check(col)


def test_auto_index_starts_exact(tmp_path: Path) -> None:
    with latentsearch.create(tmp_path / "a", encoder=ENCODER) as col:
        assert col.config.index == "auto"
        col.add(TEXTS)
        assert col.info()["index_in_use"] == "Flat"
        assert col.search(TEXTS[2], k=1)[0].text == TEXTS[2]


def test_empty_collection_search(tmp_path: Path) -> None:
    with latentsearch.create(tmp_path / "e", encoder=ENCODER, index="Flat") as col:
        assert len(col) == 0
        assert col.search("anything", k=5) == []
        assert col.search_batch(["a", "b"], k=5) == [[], []]


# -- keys, upsert, delete ------------------------------------------------------------------------


def test_add_with_an_existing_key_raises_and_adds_nothing(text_col) -> None:
    with pytest.raises(InvalidInputError) as err:
        text_col.add(["brand new text", "another"], keys=["brand-new", KEYS[2]])
    assert KEYS[2] in str(err.value)
    assert len(text_col) == len(TEXTS)
    assert text_col.search("brand new text", k=1)[0].key != "brand-new"


@pytest.mark.parametrize("index", ["Flat", "HNSW16", "IVF16,Flat"])
def test_upsert_keeps_the_id_and_changes_the_vector(index: str, tmp_path: Path) -> None:
    with latentsearch.create(tmp_path / "u", encoder=ENCODER, index=index) as col:
        ids = col.add(TEXTS, keys=KEYS, metadata=[{"v": 1}] * len(TEXTS))
        before = col.search(TEXTS[4], k=1)[0]
        assert before.id == ids[4]
        new_text = "an orchestra tunes its instruments"
        assert col.upsert([new_text], keys=[KEYS[4]], metadata=[{"v": 2}]) == [ids[4]]
        added = col.upsert(["a completely new entry"], keys=["doc-new"])
        assert added[0] > max(ids)
        assert len(col) == len(TEXTS) + 1
        item = col.get([ids[4]])[0]
        assert (item.text, item.metadata) == (new_text, {"v": 2})
        top = col.search(new_text, k=1)[0]
        assert top.id == ids[4] and top.score == pytest.approx(1.0, abs=1e-5)
        old = [h for h in col.search(TEXTS[4], k=len(TEXTS) + 1) if h.id == ids[4]]
        assert len(old) == 1 and old[0].score < 0.5, "the old vector must be gone from the index"
        ids_in_results = [h.id for h in col.search("the", k=len(TEXTS) + 5)]
        assert len(ids_in_results) == len(set(ids_in_results)), "an upserted id appears twice"
        # Upserting the same content changes nothing and returns the id.
        assert col.upsert([new_text], keys=[KEYS[4]], metadata=[{"v": 2}]) == [ids[4]]
    with latentsearch.open(tmp_path / "u") as col:  # and it survives a reopen
        top = col.search(new_text, k=1)[0]
        assert top.id == ids[4] and top.score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("index", ["Flat", "HNSW16"])
def test_delete_by_id_and_key(index: str, tmp_path: Path) -> None:
    with latentsearch.create(tmp_path / "d", encoder=ENCODER, index=index) as col:
        ids = col.add(TEXTS, keys=KEYS)
        assert col.delete(ids=[ids[0], ids[1]], keys=[KEYS[1], KEYS[2]]) == 3  # ids[1] named twice
        assert col.delete(ids=[ids[0], 10**9], keys=["no-such-key"]) == 0
        gone = set(ids[:3])
        assert len(col) == len(TEXTS) - 3
        assert col.get(ids[:4]) == col.get([ids[3]])
        for query in TEXTS[:3] + ["the"]:
            assert not gone & {h.id for h in col.search(query, k=len(TEXTS))}
        with pytest.raises(InvalidInputError):
            col.search(ids[0])  # a deleted item cannot be a query
        # Invariant 3: ids are never reused, and a deleted key can be added again.
        new = col.add(["the cat sat on the mat"], keys=[KEYS[0]])
        assert new[0] > max(ids)
        assert col.search("cat mat", k=1)[0].id == new[0]
    with latentsearch.open(tmp_path / "d") as col:
        assert len(col) == len(TEXTS) - 2
        assert not gone & {h.id for h in col.search("the", k=len(TEXTS))}
        assert col.add(["one more"])[0] > new[0]


# -- lifecycle ------------------------------------------------------------------------------------


def test_context_manager_reopen_gives_the_same_results(tmp_path: Path) -> None:
    path = tmp_path / "c"
    queries = ["cat", "sea ships", "flowers"]
    with latentsearch.create(path, encoder=ENCODER, index="HNSW16") as col:
        col.add(TEXTS, keys=KEYS)
        first = col.search_batch(queries, k=5)
        assert (path / "latentsearch.json").exists()
    # The writer lock was released on exit and a snapshot was written.
    assert (path / "index.faiss").exists() and (path / "index.json").exists()
    for extra, encoder in enumerate((None, ENCODER)):
        col = latentsearch.open(path, encoder=encoder)
        try:
            assert len(col) == len(TEXTS) + extra
            again = col.search_batch(queries, k=5)
            assert [[h.id for h in r] for r in again] == [[h.id for h in r] for r in first]
            np.testing.assert_allclose([[h.score for h in r] for r in again], [[h.score for h in r] for r in first], rtol=1e-6)
            col.lock_timeout = 0.5
            col.add(["written after reopening"])  # not locked by the closed one
        finally:
            col.close()
    assert len(latentsearch.open(path)) == len(TEXTS) + 2


def test_reindex_never_re_encodes(text_col, monkeypatch) -> None:
    from latentsearch.encoders.hashing import HashingEncoder

    queries = [text_col.ids[0], text_col.encoder.encode_text(["bees and flowers"])[0]]
    before = [[h.id for h in hits] for hits in text_col.search_batch(queries, k=4)]

    def boom(*args, **kwargs):
        raise AssertionError("reindex must use the stored vectors, not the encoder")

    monkeypatch.setattr(HashingEncoder, "encode_text", boom)
    monkeypatch.setattr(HashingEncoder, "encode_image", boom)
    monkeypatch.setattr("latentsearch.collection.create_encoder", boom)

    text_col.reindex("HNSW16")
    info = text_col.info()
    assert (info["index"], info["index_in_use"], info["indexed"]) == ("HNSW16", "HNSW16", len(TEXTS))
    assert [[h.id for h in hits] for hits in text_col.search_batch(queries, k=4)] == before
    text_col.reindex("IVF16,Flat?nprobe=4")  # too few vectors to train: exact until then
    info = text_col.info()
    assert info["index"] == "IVF16,Flat?nprobe=4" and "exact" in info["index_in_use"]
    assert [[h.id for h in hits] for hits in text_col.search_batch(queries, k=4)] == before
    with pytest.raises(UnknownSpecError):
        text_col.reindex("IVF16,Nonsense")
    assert text_col.info()["index"] == "IVF16,Flat?nprobe=4"
    text_col.close()
    with latentsearch.open(text_col.path) as col:
        assert col.config.index == "IVF16,Flat?nprobe=4"
        assert [[h.id for h in hits] for hits in col.search_batch(queries, k=4)] == before
        assert json.loads((col.path / "index.json").read_text())["spec"] == "IVF16,Flat?nprobe=4"


# -- invariant 2: the store is the truth; the snapshot is replayed or rebuilt -----------------


def check_matches_store(path: Path, expected: dict[int, np.ndarray]) -> None:
    """Every committed item is found (by its own vector, first), and nothing else ever is."""
    with latentsearch.open(path) as col:
        assert len(col) == len(expected)
        assert col.info()["indexed"] == len(expected)
        for q in vectors(3, seed=99):
            found = [h.id for h in col.search(q, k=len(expected) + 10)]
            assert sorted(found) == sorted(expected), "the index and the store disagree"
        for item_id, v in expected.items():
            top = col.search(v, k=1)[0]
            assert top.id == item_id and top.score == pytest.approx(1.0, abs=1e-5)


def two_snapshots(path: Path, index: str) -> tuple[dict[int, np.ndarray], Path]:
    """A collection with an older snapshot copied aside and a newer one in place.

    First 20 vectors, closed (snapshot 1, copied to ``old/``); then 10 more added, 5 of the
    first deleted and 3 upserted with new vectors, closed (snapshot 2). Returns what the store
    holds (id -> unit vector) and the folder holding snapshot 1.
    """
    x = vectors(20, seed=10)
    with latentsearch.create(path, encoder=None, dim=DIM, index=index) as col:
        ids = col.add(x, keys=[f"k{i}" for i in range(20)])
    old = path.parent / "old-snapshot"
    old.mkdir()
    for name in ("index.faiss", "index.json"):
        (old / name).write_bytes((path / name).read_bytes())
    expected = dict(zip(ids, unit(x)))
    y, z = vectors(10, seed=11), vectors(3, seed=12)
    with latentsearch.open(path) as col:
        expected.update(zip(col.add(y), unit(y)))
        assert col.delete(ids=ids[:5]) == 5
        assert col.upsert(z, keys=["k5", "k6", "k7"]) == ids[5:8]
    for i in ids[:5]:
        del expected[i]
    expected.update(zip(ids[5:8], unit(z)))
    return expected, old


def _set_watermark(path: Path, value: int) -> None:
    meta = json.loads((path / "index.json").read_text())
    meta["watermark"] = value
    (path / "index.json").write_text(json.dumps(meta))


DAMAGE = {
    "intact": lambda path, old: None,
    "no index.json": lambda path, old: (path / "index.json").unlink(),
    "no index.faiss": lambda path, old: (path / "index.faiss").unlink(),
    "truncated index.faiss": lambda path, old: (path / "index.faiss").write_bytes((path / "index.faiss").read_bytes()[:50]),
    "garbage index.json": lambda path, old: (path / "index.json").write_text("{"),
    # A crash between the two renames of a save: a new index file with the old json, and back.
    "stale index.json": lambda path, old: (path / "index.json").write_bytes((old / "index.json").read_bytes()),
    "stale index.faiss": lambda path, old: (path / "index.faiss").write_bytes((old / "index.faiss").read_bytes()),
    # A whole older snapshot: replayed from its watermark (adds, deletes and updates).
    "older snapshot": lambda path, old: [
        (path / n).write_bytes((old / n).read_bytes()) for n in ("index.faiss", "index.json")
    ],
    # A watermark ahead of the store (the store was restored from a backup): rebuilt.
    "watermark ahead of the store": lambda path, old: _set_watermark(path, 10**6),
}


@pytest.mark.parametrize("index", ["Flat", "HNSW16"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_reopen_after_damage_gives_every_committed_item(damage: str, index: str, tmp_path: Path) -> None:
    path = tmp_path / "col"
    expected, old = two_snapshots(path, index)
    DAMAGE[damage](path, old)
    check_matches_store(path, expected)  # a reader: replays or rebuilds, writes nothing
    with latentsearch.open(path) as col:  # a writer whose changes cancel out saves a snapshot
        assert col.delete(ids=col.add(vectors(1, seed=98))) == 1
    meta = json.loads((path / "index.json").read_text())
    assert meta["spec"] == index and meta["ntotal"] == len(expected)
    check_matches_store(path, expected)  # and again, from that fresh snapshot


def test_reader_sees_writes_that_no_snapshot_holds(tmp_path: Path) -> None:
    """A writer that has not closed (no snapshot since): another Collection replays the store."""
    path = tmp_path / "col"
    x = vectors(20, seed=20)
    with latentsearch.create(path, encoder=None, dim=DIM, index="HNSW16") as col:
        ids = col.add(x, keys=[f"k{i}" for i in range(20)])
    writer = latentsearch.open(path)
    try:
        y = vectors(8, seed=21)
        new = writer.add(y)
        writer.delete(ids=ids[:4])
        writer.upsert(vectors(2, seed=22), keys=["k4", "k5"])
        expected = dict(zip(ids, unit(x)))
        expected.update(zip(new, unit(y)))
        expected.update(zip(ids[4:6], unit(vectors(2, seed=22))))
        for i in ids[:4]:
            del expected[i]
        check_matches_store(path, expected)  # read while the writer still holds the lock
    finally:
        writer.close()
    check_matches_store(path, expected)


CRASHING_WRITER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import latentsearch

    path, data = sys.argv[1], np.load(sys.argv[2])
    col = latentsearch.open(path)
    new = col.add(data["new"])
    col.delete(ids=[int(i) for i in data["delete"]])
    col.upsert(data["upsert"], keys=["k0", "k1"])
    print(json.dumps(new), flush=True)
    os._exit(0)  # no close(): no snapshot, and the OS drops the lock
    """
)


def test_crashed_writer_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "col"
    x = vectors(30, seed=30)
    with latentsearch.create(path, encoder=None, dim=DIM, index="Flat") as col:
        ids = col.add(x, keys=[f"k{i}" for i in range(30)])
    data = {"new": vectors(12, seed=31), "delete": np.array(ids[10:15]), "upsert": vectors(2, seed=32)}
    np.savez(tmp_path / "data.npz", **data)
    run = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(path), str(tmp_path / "data.npz")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr
    new = json.loads(run.stdout.strip().splitlines()[-1])
    expected = dict(zip(ids, unit(x)))
    expected.update(zip(new, unit(data["new"])))
    expected.update(zip(ids[:2], unit(data["upsert"])))
    for i in ids[10:15]:
        del expected[i]
    check_matches_store(path, expected)
    with latentsearch.open(path) as col:  # the dead writer's lock is gone
        col.lock_timeout = 1
        assert col.add(vectors(1, seed=33))[0] > max(new)


# -- the writer lock -------------------------------------------------------------------------------


def test_second_writer_is_refused_while_the_first_holds_the_lock(text_col) -> None:
    other = latentsearch.open(text_col.path)
    try:
        with text_col.writing():
            text_col.add(["the first writer now holds the lock"])
            other.lock_timeout = 0.2
            for write in (
                lambda: other.add(["refused"]),
                lambda: other.upsert(["refused"], keys=[KEYS[0]]),
                lambda: other.delete(ids=[text_col.ids[0]]),
                lambda: other.reindex("HNSW16"),
            ):
                with pytest.raises(CollectionLockedError) as err:
                    write()
                assert str(text_col.path) in str(err.value) or "writ" in str(err.value)
            # Readers are never blocked, and see what the writer committed.
            assert other.search("first writer holds the lock", k=1)[0].text == "the first writer now holds the lock"
            assert len(other) == len(TEXTS) + 1
        other.add(["now it may write"])  # the block ended: the first writer, still open, is idle
        assert len(other) == len(TEXTS) + 2
        assert text_col.search("now it may write", k=1)[0].text == "now it may write"  # and sees it
    finally:
        other.close()


def test_an_open_idle_writer_blocks_no_other_process(text_col) -> None:
    text_col.add(["written, and the collection stays open"])
    script = (
        "import sys, latentsearch\n"
        "col = latentsearch.open(sys.argv[1])\n"
        "col.lock_timeout = 2\n"
        "col.add(['from another process'])\n"
        "col.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(text_col.path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert text_col.search("from another process", k=1)[0].text == "from another process"
    text_col.add(["and this one writes again"])
    assert len(text_col) == len(TEXTS) + 3
    assert text_col.verify()["missing_from_index"] == []


# -- errors -------------------------------------------------------------------------------------


def test_unknown_encoder_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownSpecError) as err:
        latentsearch.create(tmp_path / "x", encoder="no-such-encoder")
    message = str(err.value)
    assert "no-such-encoder" in message
    for known in ("hashing", "sentence-transformers", "timm", "clip"):
        assert known in message
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "options, error",
    [
        ({"encoder": ENCODER, "index": "IVF16,Bogus"}, UnknownSpecError),
        ({"encoder": ENCODER, "index": "Flat?bogus=1"}, UnknownSpecError),
        ({"encoder": ENCODER, "index": ""}, InvalidInputError),
        ({"encoder": ENCODER, "metric": "manhattan"}, InvalidInputError),
        ({"encoder": ENCODER, "dim": 32}, InvalidInputError),  # hashing:64 gives 64
        ({"encoder": None}, InvalidInputError),  # no encoder and no dim
        ({"encoder": None, "dim": 8, "vector_dtype": "int8"}, InvalidInputError),
    ],
)
def test_failed_create_leaves_no_folder(options: dict, error: type, tmp_path: Path) -> None:
    with pytest.raises(error):
        latentsearch.create(tmp_path / "x", **options)
    assert not (tmp_path / "x").exists()


def test_create_failing_half_way_removes_what_it_wrote(tmp_path: Path, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("latentsearch.identity.write_manifest", fail)
    with pytest.raises(OSError):
        latentsearch.create(tmp_path / "new", encoder=ENCODER, index="Flat")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError):
        latentsearch.create(tmp_path / "empty", encoder=ENCODER, index="Flat")
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_missing_collection(tmp_path: Path) -> None:
    with pytest.raises(CollectionNotFoundError) as err:
        latentsearch.open(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert not (tmp_path / "nowhere").exists()


def test_create_on_an_existing_collection(text_col, tmp_path: Path) -> None:
    with pytest.raises(CollectionExistsError):
        latentsearch.create(text_col.path, encoder=ENCODER)
    assert len(latentsearch.open(text_col.path)) == len(TEXTS)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("not a collection")
    with pytest.raises(CollectionExistsError):
        latentsearch.create(tmp_path / "busy", encoder=ENCODER)
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["file.txt"]


def test_opening_with_a_different_encoder(text_col, tmp_path: Path) -> None:
    for other in ("hashing:32", "hashing", "none"):
        with pytest.raises(EncoderMismatchError) as err:
            latentsearch.open(text_col.path, encoder=other)
        assert ENCODER in str(err.value)
    latentsearch.open(text_col.path, encoder=ENCODER).close()
    with latentsearch.create(tmp_path / "v", encoder=None, dim=DIM) as col:
        col.add(vectors(3, seed=40))
    with pytest.raises(EncoderMismatchError):
        latentsearch.open(tmp_path / "v", encoder="hashing:16")
    latentsearch.open(tmp_path / "v", encoder="none").close()


def test_an_encoder_whose_outputs_changed_is_refused(text_col) -> None:
    text_col.close()
    manifest = text_col.path / "latentsearch.json"
    data = json.loads(manifest.read_text())
    data["encoder_fingerprint"] = "0" * 32
    manifest.write_text(json.dumps(data))
    with latentsearch.open(text_col.path) as col:
        with pytest.raises(EncoderMismatchError):
            col.search("cat")
        assert col.search(text_col.ids[0], k=1)  # stored vectors still answer


@pytest.mark.parametrize("encoder", [ENCODER, None])
def test_bad_vectors_are_refused_at_the_door(encoder: str | None, tmp_path: Path) -> None:
    dim = 64 if encoder else DIM
    with latentsearch.create(tmp_path / "v", encoder=encoder, dim=None if encoder else DIM, index="Flat") as col:
        col.add(np.ones((2, dim), dtype=np.float32))
        wrong = np.ones((1, dim + 3), dtype=np.float32)
        with pytest.raises(DimensionMismatchError) as err:
            col.add(wrong)
        assert str(dim) in str(err.value) and str(dim + 3) in str(err.value)
        with pytest.raises(DimensionMismatchError) as err:
            col.search(wrong[0])
        assert str(dim) in str(err.value) and str(dim + 3) in str(err.value)
        for bad in (np.nan, np.inf, -np.inf):
            v = np.ones((3, dim), dtype=np.float32)
            v[1, 2] = bad
            with pytest.raises(InvalidInputError):
                col.add(v)
            with pytest.raises(InvalidInputError):
                col.search(v[1])
        with pytest.raises(InvalidInputError):
            col.add(np.ones((2, dim, 1), dtype=np.float32))
        assert len(col) == 2


def test_bad_search_and_add_arguments(text_col) -> None:
    for k in (0, -1):
        with pytest.raises(InvalidInputError):
            text_col.search("cat", k=k)
        with pytest.raises(InvalidInputError):
            text_col.search_batch(["cat"], k=k)
    with pytest.raises(InvalidInputError):
        text_col.search(10**9)  # no such item
    with pytest.raises(InvalidInputError):
        text_col.search({"not": "a query"})
    with pytest.raises(InvalidInputError):
        text_col.search_batch("a single string", k=2)
    with pytest.raises(InvalidInputError):
        text_col.add("a single string, not a list")
    with pytest.raises(InvalidInputError):
        text_col.add(["a", "b"], metadata=[{}])
    with pytest.raises(InvalidInputError):
        text_col.add(["a", "b"], keys=["only-one"])
    with pytest.raises(InvalidInputError):
        text_col.add([{"a": "dict"}])
    assert len(text_col) == len(TEXTS)


def test_every_error_is_a_latentsearch_error() -> None:
    for error in (
        CollectionExistsError, CollectionLockedError, CollectionNotFoundError, DimensionMismatchError,
        EncoderMismatchError, InvalidInputError, UnknownSpecError,
    ):
        assert issubclass(error, LatentSearchError)


def test_hnsw_collection_after_mass_delete_still_returns_k_hits(tmp_path: Path) -> None:
    """HNSW cannot remove: deleted ids are dead in its id map, and a mostly dead graph must
    not make searches come back short."""
    with latentsearch.create(tmp_path / "h", encoder=None, dim=DIM, index="HNSW16") as col:
        ids = col.add(vectors(2000, seed=50))
        col.delete(ids=ids[20:])
        assert len(col) == 20
        short = [len(hits) for hits in col.search_batch(list(vectors(50, seed=51)), k=10)]
        assert short == [10] * 50, f"{sum(s < 10 for s in short)} of 50 searches returned fewer than 10 hits"


# -- known problems -------------------------------------------------------------------------------


def test_upsert_returns_ids_in_input_order(text_col) -> None:
    ids = text_col.upsert(
        ["a new item", "the cat sat on the mat", "a changed dog text"],
        keys=["new-key", KEYS[0], KEYS[1]],
    )
    assert ids[1:] == [text_col.ids[0], text_col.ids[1]]
    assert ids[0] > max(text_col.ids)


BAD_INPUTS = {
    "vectors of strings": lambda col: col.add(np.array([["x"] * DIM])),
    "a 2-D array inside the list": lambda col: col.add([np.ones((2, DIM), dtype=np.float32)]),
    "complex vectors": lambda col: col.add(np.ones((1, DIM), dtype=np.complex64)),
    "metadata that is not a dict": lambda col: col.add(vectors(1, seed=70), metadata=["not a dict"]),
    "metadata that is not JSON": lambda col: col.add(vectors(1, seed=71), metadata=[{"x": object()}]),
}


@pytest.mark.filterwarnings("ignore:Casting complex values")
@pytest.mark.parametrize("bad", list(BAD_INPUTS))
def test_bad_inputs_are_invalid_input_errors_and_add_nothing(bad: str, tmp_path: Path) -> None:
    with latentsearch.create(tmp_path / "v", encoder=None, dim=DIM, index="Flat") as col:
        col.add(vectors(2, seed=72))
        with pytest.raises(InvalidInputError):
            BAD_INPUTS[bad](col)
        assert len(col) == 2
        col.add(vectors(1, seed=73))  # and the collection still works
        assert len(col) == 3


def test_metadata_with_numpy_scalars_is_stored_or_refused_clearly(tmp_path: Path) -> None:
    with latentsearch.create(tmp_path / "v", encoder=None, dim=DIM, index="Flat") as col:
        try:
            ids = col.add(vectors(1, seed=74), metadata=[{"score": np.float32(0.5), "n": np.int64(3)}])
        except InvalidInputError:
            assert len(col) == 0
        else:
            assert col.get(ids)[0].metadata == {"score": 0.5, "n": 3}


def test_adding_a_matrix_writes_in_transactions_and_checks_everything_first(tmp_path, monkeypatch, store_url):
    monkeypatch.setattr("latentsearch.ingest.writer.VECTOR_CHUNK", 100)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((450, 16), dtype=np.float32)
    col = latentsearch.create(tmp_path / "col", encoder=None, dim=16, index="Flat", metric="l2",
                              vector_dtype="float16", store=None if store_url.startswith("sqlite") else store_url)
    meta = [{"n": np.int64(i), "tags": np.array([i, i + 1])} for i in range(450)]
    ids = col.add(x, metadata=meta)
    assert ids == list(range(ids[0], ids[0] + 450)) and len(col) == 450
    item = col.get([ids[7]])[0]
    assert (item.modality, item.key, item.metadata) == ("vector", None, {"n": 7, "tags": [7, 8]})
    assert col.search(x[123], k=1)[0].id == ids[123]
    assert col.store.max_seq() == 450  # one change per row
    # Nothing is written when any row is bad, wherever it is.
    bad_meta = [{}] * 449 + [{"when": object()}]
    with pytest.raises(InvalidInputError, match="metadata 449"):
        col.add(x, metadata=bad_meta)
    too_big = x.copy()
    too_big[420, 3] = 1e6  # beyond float16
    with pytest.raises(InvalidInputError, match="float16"):
        col.add(too_big)
    with pytest.raises(InvalidInputError, match="metadata"):
        col.add(x, metadata=[{}] * 3)
    assert len(col) == 450 and col.verify()["indexed"] == 450
    col.close()
    if not store_url.startswith("sqlite"):
        col.store.drop()


def test_upsert_keeps_stored_metadata_unless_given(text_col) -> None:
    [i] = text_col.upsert(["the cat sat on the sofa"], keys=[KEYS[0]])
    assert i == text_col.ids[0]
    (item,) = text_col.get([i])
    assert item.text == "the cat sat on the sofa" and item.metadata == {"n": 0, "even": True}
    text_col.upsert(["the cat sat on the sofa"], keys=[KEYS[0]], metadata=[{"n": 100}])
    assert text_col.get([i])[0].metadata == {"n": 100}
    text_col.upsert(["the cat sat"], keys=[KEYS[0]], metadata=[{}])
    assert text_col.get([i])[0].metadata == {}
    [new] = text_col.upsert(["a brand new key"], keys=["fresh"])
    assert text_col.get([new])[0].metadata == {}


def test_delete_names_what_it_did_not_find(text_col) -> None:
    deleted = text_col.delete(ids=[text_col.ids[1], 10**9], keys=[KEYS[2], "no-such-key"])
    assert deleted == 2 and deleted.missing_ids == [10**9] and deleted.missing_keys == ["no-such-key"]
    assert text_col.delete(ids=[text_col.ids[1]]).missing_ids == [text_col.ids[1]]  # gone already


def test_a_held_lock_fails_the_index_command_before_any_model_loads(text_col, tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner

    from latentsearch import encoders
    from latentsearch.cli import cli

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    (tmp_path / "new.txt").write_text("a new file to index")
    with text_col.writing():
        monkeypatch.setattr(encoders, "create_encoder", no_model)
        result = CliRunner().invoke(cli, ["index", str(text_col.path), str(tmp_path / "new.txt"), "--wait", "0.2"])
    assert result.exit_code == 1 and "another process is writing" in result.output, result.output
