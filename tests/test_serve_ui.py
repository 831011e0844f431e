"""The web UI's files and the map route, through Starlette's TestClient: the page and its
assets with their security headers, nothing else served from the static folder, the map's points,
clusters, query and marked items (placed where the sampled items are), its cache, and the image
search that answers its vector. The browser test is tests/test_serve_browser.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import latentsearch  # noqa: E402
from test_serve import READ, TOKEN, make_photos, make_texts, serve  # noqa: E402


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    texts, metas = make_texts(120)
    with latentsearch.create(tmp_path / "notes", encoder="hashing:64", index="Flat") as col:
        col.add(texts, metadata=metas, keys=[f"k{i}" for i in range(len(texts))])
    return tmp_path / "notes"


@pytest.fixture
def api(notes: Path) -> Iterator[TestClient]:
    yield from serve([notes], token=TOKEN)


def get_map(api: TestClient, **params: Any) -> dict[str, Any]:
    r = api.get("/api/collections/notes/map", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_page_and_its_files(api: TestClient) -> None:
    page = api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset in ("/ui/app.js", "/ui/style.css"):
        assert f'"{asset}"' in page.text  # the page names its assets by these paths
        r = api.get(asset)
        assert r.status_code == 200 and r.headers["content-security-policy"] == csp
    assert api.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert "http" not in "".join(line for line in page.text.splitlines() if "src=" in line or "href=" in line)


@pytest.mark.parametrize("path", ["/ui/../app.py", "/ui/..%2Fapp.py", "/ui/%2e%2e/routes.py", "/ui/index.htm", "/ui/"])
def test_nothing_else_is_served_from_the_package(api: TestClient, path: str) -> None:
    r = api.get(path)
    assert r.status_code == 404 and "error" in r.json()
    assert "import" not in r.text


def test_the_map_of_a_collection(api: TestClient, notes: Path) -> None:
    m = get_map(api, sample=50)
    assert m["projection"] == "pca" and m["items"] == 120 and m["sampled"] == 50
    assert len(m["ids"]) == len(m["x"]) == len(m["y"]) == len(m["cluster"]) == 50
    assert len(set(m["ids"])) == 50 and set(m["ids"]) <= set(range(1, 121))
    assert not m["stored_clustering"] and sum(c["size"] for c in m["clusters"]) == 50
    assert {c["id"] for c in m["clusters"]} == set(m["cluster"])
    assert m["query"] is None and m["marked"] == []
    everything = get_map(api)  # the default sample is larger than the collection
    assert everything["sampled"] == 120 and sorted(everything["ids"]) == list(range(1, 121))


def test_marked_items_fall_where_the_map_has_them(api: TestClient) -> None:
    m = get_map(api, sample=60, ids=[3, 3, 50, 9999])
    at = {i: (x, y) for i, x, y in zip(m["ids"], m["x"], m["y"])}
    marked = {p["id"]: (p["x"], p["y"]) for p in m["marked"]}
    assert set(marked) == {3, 50}  # an id twice is placed once, an unknown one not at all
    for i, (x, y) in marked.items():
        if i in at:
            assert np.allclose(at[i], (x, y), atol=1e-5)


def test_the_query_is_placed_among_its_neighbours(api: TestClient) -> None:
    m = get_map(api, query="cat kitten purr whiskers")
    q = np.array([m["query"]["x"], m["query"]["y"]])
    points = np.stack([m["x"], m["y"]], axis=1)
    nearest = np.argsort(((points - q) ** 2).sum(1))[:10]
    items = api.get("/api/collections/notes/items", params={"ids": [m["ids"][i] for i in nearest]}).json()["items"]
    assert sum(i["metadata"]["topic"] == "cats" for i in items) >= 8


def test_the_map_by_post_takes_any_query(api: TestClient) -> None:
    text = get_map(api, query="yeast dough", ids=[1, 2])
    by_text = api.post("/api/collections/notes/map", json={"query": "yeast dough", "ids": [1, 2]}).json()
    assert by_text == text
    by_id = api.post("/api/collections/notes/map", json={"query": {"id": 2}}).json()
    two = by_text["marked"][1]
    assert np.allclose([by_id["query"]["x"], by_id["query"]["y"]], [two["x"], two["y"]], atol=1e-5)
    vector = api.post("/api/collections/notes/map", json={"query": {"vector": [0.5] * 64}}).json()
    assert vector["query"] is not None


def test_the_map_is_kept_until_the_collection_changes(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from latentsearch.serve import maps

    first = get_map(api, sample=30)
    assert get_map(api, sample=30) == first
    cache = api.app.state.collections.maps  # type: ignore[attr-defined]
    built = []
    real = maps.build_map
    monkeypatch.setattr(maps, "build_map", lambda *a, **kw: built.append(1) or real(*a, **kw))
    get_map(api, sample=30)
    assert built == []  # unchanged collection: the kept map
    r = api.post("/api/collections/notes/items", json={"texts": ["a new note about bread"]}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    monkeypatch.setattr(maps, "REFRESH_SECONDS", 0.0)
    assert get_map(api, sample=30)["items"] == 121 and built == [1]
    assert len(cache._maps) == 1


def test_map_errors(api: TestClient, tmp_path: Path) -> None:
    for params in ({"sample": 0}, {"sample": 10**9}, {"seed": -1}, {"ids": "x"}):
        r = api.get("/api/collections/notes/map", params=params)
        assert r.status_code == 422 and "error" in r.json(), params
    r = api.post("/api/collections/notes/map", json={"query": {"id": 99999}})
    assert r.status_code == 400 and "99999" in r.json()["error"]  # as /search answers it
    assert api.get("/api/collections/nope/map").status_code == 404
    with latentsearch.create(tmp_path / "empty", encoder="hashing:64"):
        pass
    for client in serve([tmp_path / "empty"]):
        r = client.get("/api/collections/empty/map")
        assert r.status_code == 400 and "empty" in r.json()["error"]


def test_the_map_needs_the_read_token(notes: Path) -> None:
    for client in serve([notes], token=TOKEN, read_token=READ):
        assert client.get("/api/collections/notes/map").status_code == 401
        assert client.get("/", ).status_code == 200  # the page itself asks for the token
        r = client.get("/api/collections/notes/map", headers={"Authorization": f"Bearer {READ}"})
        assert r.status_code == 200


def test_stored_clusters_label_the_map(api: TestClient, notes: Path) -> None:
    # the served collection is open; clustering from here is another writer, as from the CLI
    with latentsearch.open(notes) as col:
        col.cluster(4)
        labels = {c["id"]: c["label"] for c in col.store.load_clusters()}
    from latentsearch.serve import maps

    maps_before = api.app.state.collections.maps  # type: ignore[attr-defined]
    maps_before._maps.clear()
    m = get_map(api)
    assert m["stored_clustering"] and {c["id"]: c["label"] for c in m["clusters"]} == labels
    assert maps.MAX_MAPS >= 1


def test_image_search_answers_its_vector(tmp_path: Path) -> None:
    folder = make_photos(tmp_path)
    for client in serve([tmp_path / "photos"]):
        data = (folder / "p1.png").read_bytes()
        url = "/api/collections/photos/search/image"
        plain = client.post(url, files={"file": ("q.png", data, "image/png")}, data={"k": "3"}).json()
        assert "vector" not in plain
        withv = client.post(url, files={"file": ("q.png", data, "image/png")}, data={"k": "3", "vector": "true"}).json()
        assert withv["hits"] == plain["hits"] and len(withv["vector"]) == 64
        again = client.post("/api/collections/photos/search", json={"query": {"vector": withv["vector"]}, "k": 3}).json()
        assert [h["id"] for h in again["hits"]] == [h["id"] for h in plain["hits"]]
        info = client.get("/api/collections/photos").json()
        assert info["queries"] == ["image", "text"]
        bad = client.post(url, files={"file": ("notes.txt", b"plain text", "text/plain")})
        assert bad.status_code == 400 and "not an image" in bad.json()["error"] and "tempfile" not in bad.json()["error"]


def test_workers_size_the_thread_pool(notes: Path) -> None:
    for client in serve([notes], workers=3):
        assert client.portal.call(_thread_pool_size) == 3  # type: ignore[union-attr]
        assert client.get("/api/collections/notes/map", params={"sample": 5}).status_code == 200


async def _thread_pool_size() -> int:
    import anyio.to_thread

    return int(anyio.to_thread.current_default_thread_limiter().total_tokens)


def test_an_items_latent_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from latentsearch.encoders import ENCODERS
    from test_decoding import EntryPoint, colours

    monkeypatch.setattr(ENCODERS, "_plugins", {**ENCODERS.plugins(), "toyae": EntryPoint()})
    colours(tmp_path / "images", 6)
    with latentsearch.create(tmp_path / "ae", encoder="toyae:", metric="l2", index="Flat") as col:
        col.index_paths([tmp_path / "images"])
    for client in serve([tmp_path / "ae"]):
        assert client.get("/api/collections/ae").json()["decodes"] is True
        r = client.get("/api/collections/ae/items/1/decoded")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        import io

        image = Image.open(io.BytesIO(r.content))
        assert image.size == (8, 8) and np.asarray(image)[..., 0].mean() > 150  # c00.png is red
        assert client.get("/api/collections/ae/items/99/decoded").status_code == 404
    texts, _ = make_texts(3)
    with latentsearch.create(tmp_path / "h", encoder="hashing:16") as col:
        col.add(texts)
    for client in serve([tmp_path / "h"]):
        r = client.get("/api/collections/h/items/1/decoded")
        assert r.status_code == 400 and "has no decoder" in r.json()["error"]
