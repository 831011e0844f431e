"""A Python client of ``latentsearch serve``: ``latentsearch.connect(url, token)``.

    import latentsearch
    server = latentsearch.connect("http://127.0.0.1:8000", token="…")
    papers = server.collection("papers")
    papers.search("protein folding", k=5)          # [Hit(...), ...], as Collection.search returns
    papers.upsert(["a new abstract"], keys=["p-9"])

Searches return the same :class:`~latentsearch.types.Hit` named tuples as an embedded
:class:`~latentsearch.collection.Collection`, and errors come back as the latentsearch error the
server raised (``InvalidInputError``, ``CollectionNotFoundError``, ``CollectionLockedError``, …
or one of :mod:`latentsearch.serve.errors`), with the server's message and ``.status``.
Only httpx and numpy are imported: no model, no FAISS, no database driver.
"""

from __future__ import annotations

import io
import json
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import InvalidInputError, LatentSearchError
from ..indexes.overrides import search_overrides
from ..types import Cluster, Deleted, Hit, Item
from .errors import ServiceUnavailableError, make_error


class FilterStats(NamedTuple):
    """What a filtered search found: how many items matched, how it searched them, and why
    nothing matched when nothing did (the server's ``filter`` answer)."""

    matches: int
    strategy: str
    explanation: str | None = None


class Client:
    """A connection to one server (an ``httpx.Client`` underneath: connections are reused and
    it may be shared by threads). ``http`` sends the requests through another client, e.g.
    Starlette's ``TestClient(app)``."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, http: Any = None):
        import httpx

        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = http if http is not None else httpx.Client(base_url=self.url, timeout=timeout)
        self._transport_error = httpx.TransportError

    def collection(self, name: str) -> RemoteCollection:
        """The served collection ``name`` (checked on first use, not now)."""
        return RemoteCollection(self, name)

    def collections(self) -> list[str]:
        """The names of the served collections."""
        return [c["name"] for c in self.request("GET", "/api/collections")["collections"]]

    def health(self) -> dict[str, Any]:
        """``{"status": "ok"}`` when the server is ready; raises ServiceUnavailableError before."""
        return self.request("GET", "/api/health")  # type: ignore[no-any-return]

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; the JSON answer, or the server's error raised as a latentsearch error."""
        try:
            headers = {**self._headers, **kwargs.pop("headers", {})}
            response = self.http.request(method, path, headers=headers, **kwargs)
        except self._transport_error as exc:
            raise ServiceUnavailableError(f"cannot reach the latentsearch server at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.content

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"latentsearch.connect({self.url!r})"


class RemoteCollection:
    """A served collection, with the methods of :class:`~latentsearch.collection.Collection`
    that make sense over HTTP; arguments and results are the same."""

    def __init__(self, client: Client, name: str):
        from urllib.parse import quote

        self.client, self.name = client, name
        self._path = f"/api/collections/{quote(name, safe='')}"

    def search(
        self,
        query: Any,
        k: int = 10,
        group_by: str | None = None,
        where: Mapping[str, Any] | None = None,
        mode: str = "dense",
        hybrid_weights: Sequence[float] = (1.0, 1.0),
        params: Mapping[str, int] | str | None = None,
    ) -> list[Hit]:
        """The ``k`` nearest items to a text, a vector, an item id, an image ``Path`` or a PIL image
        (``params``: the index's search options for this query, e.g. ``{"efSearch": 512}``)."""
        if isinstance(query, Path) or _is_image(query):
            return self.search_batch_with_stats([query], k, group_by, where, mode, params=params)[0][0]
        body = self._search_body(k, group_by, where, mode, hybrid_weights, params, query=_query(query))
        return _hits(self.client.request("POST", f"{self._path}/search", json=body)["hits"])

    def search_batch(self, queries: Sequence[Any], k: int = 10, group_by: str | None = None,
                     where: Mapping[str, Any] | None = None, mode: str = "dense",
                     hybrid_weights: Sequence[float] = (1.0, 1.0),
                     params: Mapping[str, int] | str | None = None) -> list[list[Hit]]:
        """One list of hits per query, searched together in one request."""
        return self.search_batch_with_stats(queries, k, group_by, where, mode, hybrid_weights, params)[0]

    def search_batch_with_stats(self, queries: Sequence[Any], k: int = 10, group_by: str | None = None,
                                where: Mapping[str, Any] | None = None, mode: str = "dense",
                                hybrid_weights: Sequence[float] = (1.0, 1.0),
                                params: Mapping[str, int] | str | None = None) -> tuple[list[list[Hit]], FilterStats | None]:
        """:meth:`search_batch`, and what the filter did (None without ``where``). An image (a
        ``Path`` or a PIL image) is uploaded, so it comes alone: a batch of one."""
        if isinstance(queries, (str, bytes)):
            raise InvalidInputError("search_batch() takes a list of queries, not a single one")
        if any(isinstance(q, Path) or _is_image(q) for q in queries):
            if len(queries) != 1:
                raise InvalidInputError("search images one at a time with search(); a batch takes texts, vectors and ids")
            if mode != "dense":
                raise InvalidInputError(f"{mode} search needs a text query; search by image with mode='dense'")
            return self._search_image(queries[0], k, group_by, where, params)
        body = self._search_body(k, group_by, where, mode, hybrid_weights, params, queries=[_query(q) for q in queries])
        answer = self.client.request("POST", f"{self._path}/search", json=body)
        return [_hits(row) for row in answer["results"]], _stats(answer.get("filter"))

    def clusters(self, query: Any, k: int = 100, n_clusters: int | None = None,
                 where: Mapping[str, Any] | None = None) -> list[Cluster]:
        """The ``k`` nearest neighbours of ``query`` grouped into labelled clusters."""
        body = {"query": _query(query), "k": k, "n_clusters": n_clusters, "where": where}
        answer = self.client.request("POST", f"{self._path}/clusters", json=body)
        return [
            Cluster(c["id"], c["label"], c["size"], c["score"], Hit(**c["representative"]), _hits(c["members"]))
            for c in answer["clusters"]
        ]

    def add(self, inputs: Any, metadata: Sequence[Mapping[str, Any]] | None = None,
            keys: Sequence[str] | None = None) -> list[int]:
        """Add texts or a 2-D array (or list of lists) of vectors; returns the new ids in order.
        A key that exists already is an error, as in ``Collection.add``."""
        return self._write(inputs, metadata, keys, "error")

    def upsert(self, inputs: Any, keys: Sequence[str], metadata: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
        """Add or replace by key; returns each input's id (a replaced item keeps its id, and its
        metadata unless ``metadata`` is given)."""
        if keys is None:
            raise InvalidInputError("upsert() needs keys")
        return self._write(inputs, metadata, keys, "update")

    def delete(self, ids: Sequence[int] = (), keys: Sequence[str] = ()) -> Deleted:
        """Delete by id and/or key; how many existed, with ``.missing_ids`` and ``.missing_keys``."""
        body = {"ids": [int(i) for i in ids], "keys": list(keys)}
        answer = self.client.request("DELETE", f"{self._path}/items", json=body)
        return Deleted(answer["deleted"], answer["missing_ids"], answer["missing_keys"])

    def get(self, ids: Sequence[int]) -> list[Item]:
        """The items with these ids, in that order; ids that do not exist are left out."""
        ids = [int(i) for i in ids]
        if not ids:
            return []
        answer = self.client.request("GET", f"{self._path}/items", params={"ids": ids})
        return [Item(**i) for i in answer["items"]]

    def file(self, item_id: int) -> bytes:
        """The bytes of the file an image or text item was indexed from."""
        return self.client.request("GET", f"{self._path}/items/{int(item_id)}/file")  # type: ignore[no-any-return]

    def info(self) -> dict[str, Any]:
        """What ``Collection.info()`` says on the server, with the collection's ``name``."""
        return self.client.request("GET", self._path)  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return int(self.info()["items"])

    def __repr__(self) -> str:
        return f"RemoteCollection({self.client.url!r}, {self.name!r})"

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _search_body(k: int, group_by: str | None, where: Any, mode: str, weights: Sequence[float], params: Any,
                     **query: Any) -> dict[str, Any]:
        body = {**query, "k": k, "group_by": group_by, "where": where, "mode": mode, "hybrid_weights": list(weights)}
        if params:
            body["params"] = search_overrides(params)  # checked here: a bad option never leaves
        return body

    def _search_image(self, image: Any, k: int, group_by: str | None, where: Any,
                      params: Any = None) -> tuple[list[list[Hit]], FilterStats | None]:
        if isinstance(image, Path):
            try:
                name, data = image.name, image.expanduser().read_bytes()
            except OSError as exc:
                raise InvalidInputError(f"cannot read the image {image}: {exc.strerror or exc}") from None
        else:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            name, data = "query.png", buffer.getvalue()
        form = {"k": str(k)}
        if where is not None:
            form["where"] = json.dumps(where)
        if group_by is not None:
            form["group_by"] = group_by
        if params:
            form["params"] = "&".join(f"{name}={value}" for name, value in search_overrides(params).items())
        answer = self.client.request("POST", f"{self._path}/search/image", files={"file": (name, data)}, data=form)
        return [_hits(answer["hits"])], _stats(answer.get("filter"))

    def _write(self, inputs: Any, metadata: Any, keys: Any, on_conflict: str) -> list[int]:
        if isinstance(inputs, (str, bytes)):
            raise InvalidInputError("add() takes a list of inputs (or a 2-D array of vectors), not a single one")
        body: dict[str, Any] = {"metadata": None if metadata is None else [dict(m) for m in metadata],
                                "keys": None if keys is None else list(keys), "on_conflict": on_conflict}
        rows = inputs.tolist() if hasattr(inputs, "tolist") else [r.tolist() if hasattr(r, "tolist") else r for r in inputs]
        if rows and all(isinstance(r, str) for r in rows):
            body["texts"] = rows
        elif all(isinstance(r, (list, tuple)) for r in rows):
            body["vectors"] = [[float(x) for x in r] for r in rows]
        else:
            raise InvalidInputError("a remote collection takes texts (str) or vectors; upload images with the server's host")
        return [int(i) for i in self.client.request("POST", f"{self._path}/items", json=body)["ids"]]


def _query(q: Any) -> Any:
    if isinstance(q, str):
        return q
    if isinstance(q, numbers.Integral) and not isinstance(q, bool):
        return {"id": int(q)}
    if hasattr(q, "tolist"):
        q = q.tolist()
    if isinstance(q, (list, tuple)):
        flat = q[0] if len(q) == 1 and isinstance(q[0], (list, tuple)) else q  # one row of a 2-D array
        return {"vector": [float(x) for x in flat]}
    raise InvalidInputError(f"cannot search by a {type(q).__name__}; use text, a vector, an item id or an image")


def _is_image(q: Any) -> bool:
    return hasattr(q, "convert") and hasattr(q, "size") and hasattr(q, "save")


def _hits(rows: list[dict[str, Any]]) -> list[Hit]:
    return [Hit(**h) for h in rows]


def _stats(data: Mapping[str, Any] | None) -> FilterStats | None:
    return None if data is None else FilterStats(data["matches"], data["strategy"], data.get("explanation"))


def _error(response: Any) -> LatentSearchError:
    try:
        data = response.json()
        message, kind = str(data.get("error") or data), data.get("type")
    except (ValueError, AttributeError):
        message, kind = response.text.strip()[:500] or response.reason_phrase, None
    return make_error(kind, response.status_code, message)


def connect(url: str, token: str | None = None, timeout: float = 60.0) -> Client:
    """A :class:`Client` of the server at ``url``; ``token`` is sent as ``Authorization: Bearer``."""
    return Client(url, token, timeout)
