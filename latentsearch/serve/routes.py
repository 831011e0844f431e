"""The endpoints. Every one that touches a collection is a plain ``def``: FastAPI runs it in its
thread pool, so encoding and searching never block the event loop, and the threads share each
:class:`~latentsearch.collection.Collection` (searches in parallel, writes one at a time). A
write's response is sent after the collection's ``add``/``upsert``/``delete`` returned, that is
after its store transaction committed.

Errors are raised as latentsearch errors and answered by the handlers in :mod:`.app`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from typing import Any, Optional
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from fastapi.responses import JSONResponse as _StrictJSON

from ..errors import InvalidInputError
from .auth import require_read, require_write, served
from .errors import ItemNotFoundError
from .files import decode_upload, open_item_file
from .maps import map_answer
from .metrics import CONTENT_TYPE
from .schemas import (
    ERRORS, AddRequest, ClustersRequest, DeleteRequest, DeleteResponse, IdQuery, IdsResponse, ItemOut, MapRequest,
    SearchRequest, SearchResponse, VectorQuery,
)


class JSONResponse(_StrictJSON):
    """JSON as Starlette writes it; a NaN or infinity stored by an embedded user (metadata
    written in Python) goes out as Python's ``NaN``/``Infinity`` tokens, which ``json.loads``
    and so the Python client read back, rather than failing the request."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except ValueError:
            return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


MAX_MAP_SAMPLE = 20_000
READ = [Depends(require_read)]
WRITE = [Depends(require_write)]
COLLECTION = "/api/collections/{name}"


async def health(request: Request) -> JSONResponse:
    """``{"status": "ok"}`` once every collection is open and its encoder warm; 503 before
    (``"starting"``) or after a failure to open one (``"failed"``, with the reason). The one
    ``async`` endpoint: it touches no collection, so it answers even when every worker thread is
    busy."""
    state = served(request)
    if state.ready.is_set():
        return JSONResponse({"status": "ok"})
    if state.failed is not None:
        return JSONResponse({"status": "failed", "error": state.failed}, status_code=503)
    return JSONResponse({"status": "starting", "error": "opening collections and warming encoders"}, status_code=503)


def metrics(request: Request) -> Response:
    """Prometheus text format: requests by route and status, latency histogram, items per collection."""
    state = served(request)
    return PlainTextResponse(request.app.state.metrics.render(state.item_counts()), media_type=CONTENT_TYPE)


def list_collections(request: Request) -> JSONResponse:
    """Each served collection: its name and what ``Collection.info()`` says."""
    state = served(request)
    return JSONResponse({"collections": [_info(state, n) for n in state.names()]})


def collection_info(name: str, request: Request) -> JSONResponse:
    """Encoder, dimension, metric, index, sizes: ``Collection.info()``; ``queries``: what a
    search may be given besides a vector or an item id ("text", "image"); ``decodes``: whether
    ``…/items/{id}/decoded`` can draw an item's latent."""
    return JSONResponse(_info(served(request), name))


def search(name: str, body: SearchRequest, request: Request) -> JSONResponse:
    """Search by text, ``{"vector": [...]}`` or ``{"id": n}``: ``query`` answers ``{"hits": [...]}``,
    ``queries`` (a batch, encoded and searched together) ``{"results": [[...], ...]}``; ``filter``
    says how many items the ``where`` filter matched, and why none when none did."""
    state = served(request)
    col = state.get(name)
    if (body.query is None) == (body.queries is None):
        raise InvalidInputError("give either 'query' (one query) or 'queries' (a list of queries)")
    batch = body.queries is not None
    queries = [_query(q) for q in (body.queries if batch else [body.query])]  # type: ignore[union-attr]
    _check_sizes(state.options, body.k, len(queries))
    _finite(body.where, "where")
    if not queries:
        return JSONResponse({"results": [], "filter": None})
    hits, stats = col.search_batch_with_stats(
        queries, k=body.k, group_by=body.group_by, where=body.where, mode=body.mode,
        hybrid_weights=body.hybrid_weights, params=body.params,
    )
    out: dict[str, Any] = {"results": [[h.to_dict() for h in row] for row in hits]} if batch else {
        "hits": [h.to_dict() for h in hits[0]]
    }
    out["filter"] = _filter(stats)
    return JSONResponse(out)


def search_image(
    name: str,
    request: Request,
    file: UploadFile = File(..., description="A JPEG, PNG, WebP, GIF, BMP or TIFF image."),
    k: int = Form(10, ge=1),
    where: Optional[str] = Form(None, description='A filter as JSON text, e.g. {"topic": "cats"}.'),
    group_by: Optional[str] = Form(None),
    vector: bool = Form(False, description="Also answer the image's vector (to ask for its clusters or map place)."),
    params: Optional[str] = Form(None, description="The index's search options, e.g. efSearch=256&rescore=4."),
) -> JSONResponse:
    """Search by an uploaded image (multipart field ``file``), decoded with the checks ingestion
    applies (size limit, decompression bombs refused); answers like ``/search``."""
    state = served(request)
    col = state.get(name)
    _check_sizes(state.options, k, 1)
    filters = _parse_where(where)
    _finite(filters, "where")
    image = decode_upload(file.file, file.size, state.options.max_image_bytes, file.filename)
    query: Any = col.searcher.query_vectors([image]).vectors[0] if vector else image  # encoded once
    hits, stats = col.search_batch_with_stats([query], k=k, group_by=group_by or None, where=filters, params=params)
    out: dict[str, Any] = {"hits": [h.to_dict() for h in hits[0]], "filter": _filter(stats)}
    if vector:
        out["vector"] = [float(v) for v in query]
    return JSONResponse(out)


def add_items(name: str, body: AddRequest, request: Request) -> JSONResponse:
    """Add ``texts`` or ``vectors`` (with optional ``metadata``); with ``keys``, upsert by key.
    Answers the ids in input order once the items are committed."""
    col = served(request).get(name)
    if (body.texts is None) == (body.vectors is None):
        raise InvalidInputError("give either 'texts' (a list of strings) or 'vectors' (a list of lists of numbers)")
    _finite(body.metadata, "metadata")
    inputs: Any = body.texts if body.texts is not None else _matrix(body.vectors, col.config.dim)  # type: ignore[arg-type]
    if body.keys is not None and body.on_conflict == "update":
        ids = col.upsert(inputs, keys=body.keys, metadata=body.metadata)
    else:
        ids = col.add(inputs, metadata=body.metadata, keys=body.keys)
    return JSONResponse({"ids": [int(i) for i in ids]})


def delete_items(name: str, body: DeleteRequest, request: Request) -> JSONResponse:
    """Delete by ``ids`` and ``keys``; answers how many existed and which named nothing. Once
    answered, no search returns a deleted item."""
    col = served(request).get(name)
    if not body.ids and not body.keys:
        raise InvalidInputError("name at least one item in 'ids' or 'keys'")
    deleted = col.delete(ids=body.ids, keys=body.keys)
    return JSONResponse(
        {"deleted": int(deleted), "missing_ids": deleted.missing_ids, "missing_keys": deleted.missing_keys}
    )


def get_items(name: str, request: Request, ids: list[int] = Query(..., description="Repeat: ?ids=1&ids=2")) -> JSONResponse:
    """Stored items by id, in the order asked; ids that name no item are left out."""
    state = served(request)
    _check_sizes(state.options, 1, len(ids))
    return JSONResponse({"items": [dataclasses.asdict(i) for i in state.get(name).get(ids)]})


def get_item(name: str, item_id: int, request: Request) -> JSONResponse:
    """One stored item: key, source, modality, text, metadata, document."""
    return JSONResponse(dataclasses.asdict(_item(request, name, item_id)))


def item_file(name: str, item_id: int, request: Request) -> Response:
    """The file an image or text item was indexed from (see :mod:`.files` for what is refused)."""
    f = open_item_file(_item(request, name, item_id))
    headers = {
        "Content-Length": str(f.size),
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(f.name)}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'",
    }
    return StreamingResponse(f.chunks(), media_type=f.media_type, headers=headers)


def item_decoded(name: str, item_id: int, request: Request) -> Response:
    """The item's stored latent decoded by the encoder's decoder (an autoencoder's or a VAE's),
    as a PNG; 400 when the encoder has no decoder."""
    col = served(request).get(name)
    found, vectors = col.searcher.vectors([item_id])
    if not len(found):
        raise ItemNotFoundError(f"no item with id {item_id} in the collection {name!r}")
    image = col.decode(vectors[:1])[0]
    out = io.BytesIO()
    image.save(out, format="PNG")
    return Response(out.getvalue(), media_type="image/png", headers={"X-Content-Type-Options": "nosniff"})


def clusters(name: str, body: ClustersRequest, request: Request) -> JSONResponse:
    """The ``k`` nearest neighbours of ``query`` grouped into labelled clusters."""
    state = served(request)
    col = state.get(name)
    _check_sizes(state.options, body.k, 1)
    _finite(body.where, "where")
    groups = col.clusters(_query(body.query), k=body.k, n_clusters=body.n_clusters, where=body.where)
    return JSONResponse({"clusters": [g.to_dict() for g in groups]})


def collection_map(
    name: str,
    request: Request,
    sample: int = Query(2000, ge=1, le=MAX_MAP_SAMPLE, description="Items on the map at most (a seeded random sample)."),
    seed: int = Query(0, ge=0, le=2**31 - 1, description="Seed of the sample and of the quick k-means."),
    query: Optional[str] = Query(None, max_length=10_000, description="A text query to place on the map."),
    ids: list[int] = Query([], description="Items to place on the map (e.g. a search's hits): ?ids=1&ids=2"),
) -> JSONResponse:
    """The collection projected to 2-D (PCA) for the web UI: the sampled items with their
    cluster (the stored clustering, else a quick k-means) and label, and where a text ``query``
    and the items ``ids`` fall on the same plane. Kept between requests (see :mod:`.maps`)."""
    return _map(request, name, sample, seed, query or None, ids)


def collection_map_post(name: str, body: MapRequest, request: Request) -> JSONResponse:
    """The map of ``GET …/map``, with the query given as in ``/search``: text, ``{"vector": [...]}``
    or ``{"id": n}`` (the web UI places an uploaded image's vector this way)."""
    return _map(request, name, body.sample, body.seed, None if body.query is None else _query(body.query), body.ids)


def _map(request: Request, name: str, sample: int, seed: int, query: Any, ids: list[int]) -> JSONResponse:
    state = served(request)
    col = state.get(name)
    _check_sizes(state.options, 1, len(ids))
    m = state.maps.get(name, col, sample, seed)
    qpoint = m.place(col.searcher.query_vectors([query]).vectors)[0] if query is not None else None
    found, vectors = col.searcher.vectors(list(dict.fromkeys(ids))) if ids else ([], None)
    marked = list(zip([int(i) for i in found], m.place(vectors))) if len(found) else []
    return JSONResponse(map_answer(m, qpoint, marked))


def build_router() -> APIRouter:
    """The API's routes, with their access rules and documented answers (body size limits are
    enforced by :class:`~.app.BodyLimit`, while the body is read)."""
    router = APIRouter()
    add = router.add_api_route
    add("/api/health", health, methods=["GET"], tags=["server"])
    add("/metrics", metrics, methods=["GET"], dependencies=READ, tags=["server"], response_class=PlainTextResponse)
    add("/api/collections", list_collections, methods=["GET"], dependencies=READ, tags=["collections"])
    add(COLLECTION, collection_info, methods=["GET"], dependencies=READ, tags=["collections"], responses=ERRORS)
    add(f"{COLLECTION}/search", search, methods=["POST"], dependencies=READ, tags=["search"],
        responses={200: {"model": SearchResponse}, **ERRORS})
    add(f"{COLLECTION}/search/image", search_image, methods=["POST"], dependencies=READ, tags=["search"],
        responses={200: {"model": SearchResponse}, **ERRORS})
    add(COLLECTION + "/items/{item_id}/decoded", item_decoded, methods=["GET"], dependencies=READ, tags=["items"],
        response_class=Response, responses=ERRORS)
    add(f"{COLLECTION}/clusters", clusters, methods=["POST"], dependencies=READ, tags=["search"], responses=ERRORS)
    add(f"{COLLECTION}/map", collection_map, methods=["GET"], dependencies=READ, tags=["search"], responses=ERRORS)
    add(f"{COLLECTION}/map", collection_map_post, methods=["POST"], dependencies=READ, tags=["search"], responses=ERRORS)
    add(f"{COLLECTION}/items", add_items, methods=["POST"], dependencies=WRITE, tags=["items"],
        responses={200: {"model": IdsResponse}, **ERRORS})
    add(f"{COLLECTION}/items", delete_items, methods=["DELETE"], dependencies=WRITE, tags=["items"],
        responses={200: {"model": DeleteResponse}, **ERRORS})
    add(f"{COLLECTION}/items", get_items, methods=["GET"], dependencies=READ, tags=["items"], responses=ERRORS)
    add(COLLECTION + "/items/{item_id}", get_item, methods=["GET"], dependencies=READ, tags=["items"],
        responses={200: {"model": ItemOut}, **ERRORS})
    add(COLLECTION + "/items/{item_id}/file", item_file, methods=["GET"], dependencies=READ, tags=["items"],
        response_class=StreamingResponse, responses=ERRORS)
    return router


# -- helpers --------------------------------------------------------------------------------------


def _query(q: Any) -> Any:
    """A request's query as :meth:`Collection.search` takes it."""
    if isinstance(q, VectorQuery):
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: refused by the collection
            return np.asarray(q.vector, dtype=np.float32)
    if isinstance(q, IdQuery):
        return int(q.id)
    return q


def _matrix(vectors: list[list[float]], dim: int) -> np.ndarray:
    if not vectors:
        return np.zeros((0, dim), dtype=np.float32)
    for i, v in enumerate(vectors):
        if len(v) != dim:
            raise InvalidInputError(f"vector {i} has {len(v)} values but the collection's vectors have {dim}")
    with np.errstate(over="ignore"):
        return np.asarray(vectors, dtype=np.float32)


MAX_DEPTH = 64  # nesting of metadata and filters; the library's checks recurse


def _finite(value: Any, where: str) -> None:
    """Refuse NaN and infinities (JSON has no such numbers; Python's parser accepts the tokens)
    and nesting deeper than :data:`MAX_DEPTH`. Iterative, so a deep body cannot exhaust the stack."""
    stack = [(value, where, 0)]
    while stack:
        v, at, depth = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise InvalidInputError(f"{at} holds {v!r}; only finite numbers are allowed")
        if isinstance(v, (dict, list)) and depth > MAX_DEPTH:
            raise InvalidInputError(f"{where} nests deeper than {MAX_DEPTH} levels")
        if isinstance(v, dict):
            stack += [(x, f"{at}.{k}", depth + 1) for k, x in v.items()]
        elif isinstance(v, list):
            stack += [(x, f"{at}[{i}]", depth + 1) for i, x in enumerate(v)]


def _check_sizes(options: Any, k: int, n: int) -> None:
    if k > options.max_k:
        raise InvalidInputError(f"k is {k}; this server returns at most {options.max_k} hits per query")
    if n > options.max_queries:
        raise InvalidInputError(f"{n} queries or ids in one request; this server takes at most {options.max_queries}")


def _parse_where(text: str | None) -> dict[str, Any] | None:
    if text is None or not text.strip():
        return None
    try:
        where = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"'where' is not valid JSON: {exc.msg} at character {exc.pos + 1}") from None
    if not isinstance(where, dict):
        raise InvalidInputError('\'where\' must be a JSON object such as {"topic": "space"}')
    return where


def _filter(stats: Any) -> dict[str, Any] | None:
    if stats is None:
        return None
    return {"matches": stats.matches, "strategy": stats.strategy, "explanation": stats.explanation}


def _info(state: Any, name: str) -> dict[str, Any]:
    col = state.get(name)
    encoder = col.encoder  # warm: loaded when the server started
    return {
        "name": name, **col.info(),
        "queries": sorted(encoder.modalities) if encoder is not None else [],
        "decodes": bool(getattr(encoder, "decodes", False)),
    }


def _item(request: Request, name: str, item_id: int) -> Any:
    found = served(request).get(name).get([item_id])
    if not found:
        raise ItemNotFoundError(f"no item with id {item_id} in the collection {name!r}")
    return found[0]
