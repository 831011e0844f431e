"""The HTTP API through Starlette's TestClient: every route, the token rules, every error code,
size limits, path traversal on the file route and on collection names, metrics, and the Python
client giving exactly the hits of embedded search. Collections use ``hashing:64`` (no model)."""

from __future__ import annotations

import json
import os
import threading
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
from latentsearch.errors import CollectionNotFoundError, InvalidInputError  # noqa: E402
from latentsearch.serve.app import create_app  # noqa: E402
from latentsearch.serve.client import Client  # noqa: E402
from latentsearch.serve.errors import (  # noqa: E402
    AccessDeniedError, ItemNotFoundError, PayloadTooLargeError, TokenRequiredError,
)
from latentsearch.serve.state import ServedCollections, ServeOptions  # noqa: E402

TOKEN = "write-token-1"
READ = "read-token-2"
W = {"Authorization": f"Bearer {TOKEN}"}
TOPICS = ["ships", "cats", "bread", "stars"]
WORDS = {
    "ships": "ship sea sail boat hull float harbour",
    "cats": "cat kitten purr whiskers mouse nap",
    "bread": "bread yeast dough oven flour crust",
    "stars": "star galaxy telescope fusion light orbit",
}


def make_texts(n: int = 60) -> tuple[list[str], list[dict[str, Any]]]:
    texts, metas = [], []
    for i in range(n):
        topic = TOPICS[i % 4]
        words = WORDS[topic].split()
        texts.append(" ".join(words[(i + j) % len(words)] for j in range(5)) + f" note{i}")
        metas.append({"topic": topic, "n": i})
    return texts, metas


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    """A collection ``notes`` of 60 texts in four topics, keyed k0..k59, closed."""
    texts, metas = make_texts()
    with latentsearch.create(tmp_path / "notes", encoder="hashing:64", index="Flat") as col:
        col.add(texts, metadata=metas, keys=[f"k{i}" for i in range(len(texts))])
    return tmp_path / "notes"


def serve(paths: list[Path], **options: Any) -> Iterator[TestClient]:
    app = create_app(paths, ServeOptions(**options))
    with TestClient(app) as client:
        assert app.state.collections.wait_ready(30), app.state.collections.failed
        yield client


@pytest.fixture
def api(notes: Path) -> Iterator[TestClient]:
    yield from serve([notes], token=TOKEN)


def search(api: TestClient, body: dict[str, Any], name: str = "notes", **kw: Any) -> Any:
    return api.post(f"/api/collections/{name}/search", json=body, **kw)


# -- reads ------------------------------------------------------------------------------------------


def test_health_collections_and_info(api: TestClient, notes: Path) -> None:
    assert api.get("/api/health").json() == {"status": "ok"}
    listed = api.get("/api/collections").json()["collections"]
    assert [c["name"] for c in listed] == ["notes"] and listed[0]["items"] == 60
    info = api.get("/api/collections/notes").json()
    with latentsearch.open(notes) as col:
        expected = col.info()
    assert info == {"name": "notes", **expected, "queries": ["image", "text"], "decodes": False}  # hashing:64
    assert api.get("/openapi.json").json()["paths"]["/api/collections/{name}/search"]["post"]


def test_search_forms_match_embedded_search(api: TestClient, notes: Path) -> None:
    with latentsearch.open(notes) as col:
        one = search(api, {"query": "boat harbour", "k": 5}).json()
        assert one["filter"] is None
        assert one["hits"] == [h.to_dict() for h in col.search("boat harbour", k=5)]
        vector = np.linspace(-1, 1, 64).astype(np.float32)
        batch = search(api, {"queries": ["yeast", {"id": 3}, {"vector": vector.tolist()}], "k": 4}).json()
        expected = col.search_batch(["yeast", 3, vector], k=4)
        assert batch["results"] == [[h.to_dict() for h in row] for row in expected]
        assert all(h["id"] != 3 for h in batch["results"][1])  # more like item 3 leaves it out
        lexical = search(api, {"query": "telescope", "k": 3, "mode": "hybrid"}).json()["hits"]
        assert lexical == [h.to_dict() for h in col.search("telescope", k=3, mode="hybrid")]


def test_search_filter_stats(api: TestClient) -> None:
    body = search(api, {"query": "cat", "k": 3, "where": {"topic": "cats"}}).json()
    assert body["filter"]["matches"] == 15 and body["filter"]["strategy"] in ("exact", "index")
    assert all(h["metadata"]["topic"] == "cats" for h in body["hits"])
    none = search(api, {"query": "cat", "where": {"topik": "cats"}}).json()
    assert none["hits"] == [] and none["filter"]["matches"] == 0 and "topic" in none["filter"]["explanation"]


def test_items_get_and_many(api: TestClient) -> None:
    item = api.get("/api/collections/notes/items/2").json()
    assert item["key"] == "k1" and item["metadata"] == {"topic": "cats", "n": 1}
    many = api.get("/api/collections/notes/items", params={"ids": [5, 999, 1]}).json()["items"]
    assert [i["id"] for i in many] == [5, 1]


def test_clusters(api: TestClient) -> None:
    groups = api.post("/api/collections/notes/clusters", json={"query": "cat purr", "k": 20, "n_clusters": 2}).json()
    assert len(groups["clusters"]) == 2 and sum(g["size"] for g in groups["clusters"]) == 20


def make_photos(tmp_path: Path) -> Path:
    """``tmp_path/photos``: three one-colour images of ``tmp_path/pics`` (returned), ``hashing:64``."""
    folder = tmp_path / "pics"
    folder.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        Image.new("RGB", (24, 24), colour).save(folder / f"p{i}.png")
    with latentsearch.create(tmp_path / "photos", encoder="hashing:64", index="Flat") as col:
        col.index_paths([folder])
    return folder


def test_image_search_upload(tmp_path: Path) -> None:
    folder = make_photos(tmp_path)
    with latentsearch.open(tmp_path / "photos") as col:
        expected = col.search(folder / "p1.png", k=2)
    for client in serve([tmp_path / "photos"], token=TOKEN):
        data = (folder / "p1.png").read_bytes()
        r = client.post("/api/collections/photos/search/image", files={"file": ("q.png", data, "image/png")}, data={"k": "2"})
        assert r.status_code == 200, r.text
        assert r.json()["hits"] == [h.to_dict() for h in expected]
        bad = client.post("/api/collections/photos/search/image", files={"file": ("q.png", b"not an image")})
        assert bad.status_code == 400 and "is not an image this server can read" in bad.json()["error"]
        remote = Client("http://testserver", http=client).collection("photos")
        assert remote.search(folder / "p1.png", k=2) == expected


# -- writes and tokens ------------------------------------------------------------------------------


def test_add_upsert_delete_are_durable(api: TestClient, notes: Path) -> None:
    url = "/api/collections/notes/items"
    ids = api.post(url, json={"texts": ["a new note about ships"], "metadata": [{"topic": "ships"}]}, headers=W).json()["ids"]
    assert len(ids) == 1
    again = api.post(url, json={"texts": ["replaced text"], "keys": ["k0"]}, headers=W).json()["ids"]
    assert again == [1]  # upsert by key keeps the id
    vectors = api.post(url, json={"vectors": [[0.5] * 64, [0.25] * 64], "keys": ["v1", "v2"]}, headers=W).json()["ids"]
    gone = api.request("DELETE", url, json={"ids": [ids[0], 12345], "keys": ["v1", "nope"]}, headers=W).json()
    assert gone == {"deleted": 2, "missing_ids": [12345], "missing_keys": ["nope"]}
    # Another process sees every acknowledged write while the server still runs.
    with latentsearch.open(notes) as col:
        assert col.get([1])[0].text == "replaced text" and col.get([1])[0].metadata == {"topic": "ships", "n": 0}
        assert [i.key for i in col.get(vectors)] == ["v2"] and col.get(ids) == []
    assert api.get(f"/api/collections/notes/items/{ids[0]}").status_code == 404
    assert all(h["id"] != ids[0] for h in search(api, {"query": "a new note about ships"}).json()["hits"])


def test_token_rules(notes: Path) -> None:
    url = "/api/collections/notes/items"
    body = {"texts": ["x"]}
    for client in serve([notes], token=TOKEN):
        missing = client.post(url, json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert client.post(url, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert client.post(url, json=body, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        assert client.post(url, json=body, headers=W).status_code == 200
        assert search(client, {"query": "x"}).status_code == 200  # reads are open
    for client in serve([notes], token=TOKEN, read_token=READ):
        assert search(client, {"query": "x"}).status_code == 401
        assert client.get("/metrics").status_code == 401
        assert search(client, {"query": "x"}, headers={"Authorization": "Bearer nope"}).status_code == 403
        assert search(client, {"query": "x"}, headers={"Authorization": f"Bearer {READ}"}).status_code == 200
        assert search(client, {"query": "x"}, headers=W).status_code == 200  # the write token reads too
        assert client.post(url, json=body, headers={"Authorization": f"Bearer {READ}"}).status_code == 403
        assert client.get("/api/health").status_code == 200  # health stays open for probes
    for client in serve([notes]):  # no token: read-only
        r = client.post(url, json=body, headers=W)
        assert r.status_code == 403 and "read-only" in r.json()["error"]


# -- errors -------------------------------------------------------------------------------------------


def test_error_codes_are_json(api: TestClient, notes: Path) -> None:
    def check(r: Any, status: int, words: str) -> None:
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert words in r.json()["error"], r.json()

    check(search(api, {"query": "x", "k": 0}), 422, "k")
    check(search(api, {"query": "x", "k": 10**6}), 400, "at most")
    check(search(api, {"query": "x", "mode": "fuzzy"}), 422, "mode")
    check(search(api, {"query": "x", "where": {"topic": {"$regex": "a"}}}), 400, "$regex")
    check(search(api, {"query": {"vector": [1.0, 2.0]}}), 400, "dimension")
    check(search(api, {"query": {"id": 999}}), 400, "no item with id 999")
    check(search(api, {"query": "x", "queries": ["y"]}), 400, "either")
    check(search(api, {"query": "x", "kk": 3}), 422, "kk")
    check(api.post("/api/collections/notes/search", content=b"{not json", headers={"content-type": "application/json"}), 422, "JSON")
    check(api.post("/api/collections/notes/items", json={"texts": ["a"], "keys": ["k1"], "on_conflict": "error"}, headers=W), 400, "exists already")
    check(api.post("/api/collections/notes/items", json={"vectors": [[1.0] * 64, [1.0] * 3]}, headers=W), 400, "vector 1")
    check(api.post("/api/collections/notes/items", json={"texts": ["a", "b"], "metadata": [{}]}, headers=W), 400, "metadata")
    check(api.request("DELETE", "/api/collections/notes/items", json={}, headers=W), 400, "at least one")
    check(api.get("/api/collections/unknown"), 404, "no collection named 'unknown'")
    check(api.get("/api/collections/notes/items/4242"), 404, "no item with id 4242")
    check(api.get("/api/collections/notes/items/abc"), 422, "item_id")
    check(api.get("/no/such/route"), 404, "/docs")
    check(api.put("/api/collections/notes/items", json={}), 405, "PUT")
    with latentsearch.open(notes) as other, other.writing():  # another writer holds the lock
        api.app.state.collections.get("notes").lock_timeout = 0.2
        check(api.post("/api/collections/notes/items", json={"texts": ["z"]}, headers=W), 409, "writing")


def test_internal_error_hides_the_traceback(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    col = api.app.state.collections.get("notes")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals /srv/db password=hunter2")

    col.searcher.search_batch_with_stats = broken  # the façade looks it up on each call
    r = search(api, {"query": "x"})
    assert r.status_code == 500 and r.json()["type"] == "ServerError"
    assert "hunter2" not in r.text and "Traceback" not in r.text and "server's log" in r.json()["error"]
    assert "hunter2" in caplog.text  # the details are in the server's log


def test_size_limits(notes: Path) -> None:
    for client in serve([notes], token=TOKEN, max_body_bytes=10_000, max_image_bytes=2_000):
        big = search(client, {"query": "x" * 20_000})
        assert big.status_code == 413 and big.json()["type"] == "PayloadTooLargeError"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield json.dumps({"query": "y" * 8_000}).encode()
            yield b" " * 8_000

        streamed = client.post("/api/collections/notes/search", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        image = client.post("/api/collections/notes/search/image", files={"file": ("big.png", os.urandom(200_000))})
        assert image.status_code == 413 and "image upload" in image.json()["error"]
        small = client.post("/api/collections/notes/search/image", files={"file": ("b.png", os.urandom(3_000))})
        assert small.status_code == 413 and "2,000 bytes" in small.json()["error"]  # under the body limit, over the image's


def test_decompression_bomb_refused(notes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import latentsearch.media

    monkeypatch.setattr(latentsearch.media, "MAX_IMAGE_PIXELS", 100)  # the check ingestion applies
    Image.new("RGB", (20, 20), (9, 9, 9)).save(tmp_path / "q.png")
    for client in serve([notes]):
        r = client.post("/api/collections/notes/search/image", files={"file": ("q.png", (tmp_path / "q.png").read_bytes())})
        assert r.status_code == 400 and "too large to decode safely" in r.json()["error"]


def test_health_is_503_until_warm_and_after_a_failure(notes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    opened = ServedCollections._open

    def slow_open(self: ServedCollections, served: Any) -> None:
        gate.wait(10)
        opened(self, served)

    monkeypatch.setattr(ServedCollections, "_open", slow_open)
    app = create_app([notes], ServeOptions())
    with TestClient(app) as client:
        assert client.get("/api/health").status_code == 503
        assert search(client, {"query": "x"}).status_code == 503
        gate.set()
        assert app.state.collections.wait_ready(10)
        assert client.get("/api/health").json() == {"status": "ok"}
    monkeypatch.setattr(ServedCollections, "_open", opened)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "latentsearch.json").write_text("{not json")
    reasons: list[str] = []
    app = create_app([broken], ServeOptions(on_failure=reasons.append))
    with TestClient(app) as client:
        assert not app.state.collections.wait_ready(10)
        body = client.get("/api/health").json()
        assert body["status"] == "failed" and "broken" in body["error"] and reasons == [body["error"]]


def test_duplicate_names_refused(notes: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "notes"
    other.mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="two collections named 'notes'"):
        create_app([notes, other])


# -- the file route and path traversal ----------------------------------------------------------------


@pytest.fixture
def files_api(tmp_path: Path) -> Iterator[tuple[TestClient, Any, Path]]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("ships float because of buoyancy")
    (docs / "page.html").write_text("<script>alert(1)</script> ships")
    Image.new("RGB", (16, 16), (200, 10, 10)).save(docs / "red.png")
    (tmp_path / "secret.txt").write_text("top secret")
    with latentsearch.create(tmp_path / "files", encoder="hashing:64", index="Flat") as col:
        col.index_paths([docs])
        col.add(["a plain text"], keys=["plain"])
        by_name = {Path(i.source).name if i.source else i.key: i for i in col.get(list(range(1, 10)))}
    for client in serve([tmp_path / "files"], token=TOKEN):
        yield client, by_name, tmp_path


def test_file_route_sends_indexed_files(files_api: tuple[TestClient, Any, Path]) -> None:
    client, items, _ = files_api
    text = client.get(f"/api/collections/files/items/{items['a.txt'].id}/file")
    assert text.status_code == 200 and text.content == b"ships float because of buoyancy"
    assert text.headers["content-type"].startswith("text/plain") and text.headers["x-content-type-options"] == "nosniff"
    html = client.get(f"/api/collections/files/items/{items['page.html'].id}/file")
    assert html.headers["content-type"].startswith("text/plain")  # never run as a page in the API's origin
    image = client.get(f"/api/collections/files/items/{items['red.png'].id}/file")
    assert image.headers["content-type"] == "image/png" and image.content[:4] == b"\x89PNG"
    assert client.get(f"/api/collections/files/items/{items['plain'].id}/file").status_code == 404  # no file


def test_file_route_refuses_paths_other_than_the_indexed_file(files_api: tuple[TestClient, Any, Path]) -> None:
    from sqlalchemy import text

    client, items, tmp = files_api
    store = client.app.state.collections.get("files").store
    item_id = items["a.txt"].id
    secret = tmp / "secret.txt"
    sources = [
        f"{tmp}/docs/../secret.txt",  # '..' in the stored path
        "secret.txt",  # relative
        "/etc/passwd",  # not a text file's suffix
        f"{tmp}/docs",  # a folder
        f"{tmp}/docs/missing.txt",
        f"{secret}\x00.png",
    ]
    (tmp / "docs" / "folder.txt").mkdir()
    sources.append(str(tmp / "docs" / "folder.txt"))  # a folder with a text file's name
    link = tmp / "docs" / "link.txt"
    link.symlink_to(secret)  # a link on the path: it would lead elsewhere
    sources.append(str(link))
    fifo = tmp / "docs" / "pipe.txt"
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo)
        sources.append(str(fifo))
    for source in sources:
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE items SET source = :s WHERE id = :i"), {"s": source, "i": item_id})
        client.app.state.collections.get("files").searcher.items.forget(np.array([item_id], dtype=np.int64))
        r = client.get(f"/api/collections/files/items/{item_id}/file")
        assert r.status_code == 404, (source, r.text)
        assert b"top secret" not in r.content and r.json()["error"] == f"item {item_id} has no indexed file to send"
    for path in ["/api/collections/%2e%2e/items/1/file", "/api/collections/..%2Ffiles/items/1/file",
                 "/api/collections/files/items/..%2F..%2Fsecret.txt/file", "/api/collections/%2Fetc%2Fpasswd"]:
        r = client.get(path)
        assert r.status_code in (404, 422) and b"top secret" not in r.content, path


# -- metrics and the client ----------------------------------------------------------------------------


def test_metrics_exposition(api: TestClient) -> None:
    search(api, {"query": "x"})
    search(api, {"query": "x", "k": 0})
    api.get("/api/collections/notes/items/1")
    text = api.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    body = text.text
    assert 'latentsearch_http_requests_total{method="POST",route="/api/collections/{name}/search",status="200"} 1' in body
    assert 'latentsearch_http_requests_total{method="POST",route="/api/collections/{name}/search",status="422"} 1' in body
    assert 'latentsearch_http_request_duration_seconds_count{route="/api/collections/{name}/search"} 2' in body
    assert 'latentsearch_http_request_duration_seconds_bucket{route="/api/collections/{name}/search",le="+Inf"} 2' in body
    assert 'latentsearch_collection_items{collection="notes"} 60' in body
    for line in body.splitlines():  # every sample line: name{labels} number
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_client_gives_the_hits_of_embedded_search(api: TestClient, notes: Path) -> None:
    remote = Client("http://testserver", token=TOKEN, http=api).collection("notes")
    with latentsearch.open(notes) as col:
        for query in ["sail boat", "kitten", 7, np.ones(64, dtype=np.float32)]:
            assert remote.search(query, k=6) == col.search(query, k=6)
        where = {"topic": {"$in": ["bread", "stars"]}, "n": {"$gte": 10}}
        assert remote.search("oven", k=5, where=where) == col.search("oven", k=5, where=where)
        assert remote.search("oven", k=5, mode="lexical") == col.search("oven", k=5, mode="lexical")
        assert remote.search_batch(["cat", "star"], k=3) == col.search_batch(["cat", "star"], k=3)
        hits, stats = remote.search_batch_with_stats(["cat"], where={"topic": "cats"})
        assert stats.matches == 15 and hits == col.search_batch(["cat"], where={"topic": "cats"})
        assert remote.get([3, 1, 999]) == col.get([3, 1, 999])
        assert remote.info()["items"] == len(col) == len(remote)
    ids = remote.add(["brand new"], metadata=[{"topic": "new"}])
    assert remote.upsert(["newer"], keys=["k2"]) == [3]
    deleted = remote.delete(ids=ids, keys=["zz"])
    assert deleted == 1 and deleted.missing_keys == ["zz"] and deleted.missing_ids == []
    assert remote.add(np.full((2, 64), 0.5, dtype=np.float32)) and remote.clusters("cat", k=10)[0].members


def test_client_raises_latentsearch_errors(api: TestClient) -> None:
    client = Client("http://testserver", http=api)
    with pytest.raises(CollectionNotFoundError, match="no collection named 'nope'"):
        client.collection("nope").search("x")
    notes = client.collection("notes")
    with pytest.raises(InvalidInputError, match="dimension") as info:
        notes.search([1.0, 2.0])
    assert info.value.status == 400  # type: ignore[attr-defined]
    with pytest.raises(ItemNotFoundError):
        notes.file(1)
    with pytest.raises(TokenRequiredError):
        notes.add(["x"])
    with pytest.raises(AccessDeniedError):
        Client("http://testserver", token="bad", http=api).collection("notes").add(["x"])
    assert issubclass(PayloadTooLargeError, InvalidInputError)
    assert client.collections() == ["notes"] and client.health() == {"status": "ok"}


def test_non_finite_numbers_and_deep_nesting(api: TestClient, notes: Path) -> None:
    url = "/api/collections/notes/items"
    headers = {**W, "content-type": "application/json"}
    r = api.post(url, content=b'{"texts": ["a"], "metadata": [{"x": Infinity}]}', headers=headers)
    assert r.status_code == 400 and "metadata[0].x holds inf" in r.json()["error"]
    r = api.post("/api/collections/notes/search", content=b'{"query": "a", "where": {"n": NaN}}', headers=headers)
    assert r.status_code == 400 and "where.n holds nan" in r.json()["error"]
    deep = '{"texts": ["a"], "metadata": [' + '{"a": ' * 900 + "1" + "}" * 900 + "]}"
    r = api.post(url, content=deep.encode(), headers=headers)
    assert r.status_code == 400 and "deeper than 64 levels" in r.json()["error"]
    with latentsearch.open(notes) as col, pytest.raises(latentsearch.errors.InvalidInputError, match="finite"):
        col.add(["not a number"], metadata=[{"x": float("nan")}])  # refused at the door in Python too


def test_host_check_and_json_content_type_hint(notes: Path) -> None:
    for client in serve([notes], allowed_hosts=["localhost", "127.0.0.1", "::1", "testserver"]):
        assert client.get("/api/health").status_code == 200
        for host in ["localhost:8000", "127.0.0.1", "[::1]:8000"]:
            assert client.get("/api/health", headers={"host": host}).status_code == 200, host
        rebound = client.get("/api/collections", headers={"host": "evil.example:8000"})
        assert rebound.status_code == 421 and "--allowed-host evil.example" in rebound.json()["error"]
        plain = client.post("/api/collections/notes/search", content=b'{"query": "x"}', headers={"content-type": "text/plain"})
        assert plain.status_code == 422 and "Content-Type: application/json" in plain.json()["error"]
