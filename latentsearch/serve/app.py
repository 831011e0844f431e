"""The FastAPI application: ``create_app(paths, options)``.

Startup (the lifespan) opens every collection and warms its encoder in a background thread;
shutdown waits for requests in flight (uvicorn drains them first) and closes the collections.
Two ASGI middlewares wrap the routes: :class:`RequestMetrics` (counts and times every request
by route template, and turns an unexpected exception into a JSON 500 whose details stay in the
server's log) and :class:`BodyLimit` (refuses bodies over the limit with 413 while they are
read, whatever ``Content-Length`` claims). Every error answer is JSON ``{"error": ...}``.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import InvalidInputError, LatentSearchError
from .errors import TokenRequiredError, status_for
from .metrics import UNMATCHED, Metrics
from .routes import build_router
from .state import ServedCollections, ServeOptions
from .ui import build_ui_router

log = logging.getLogger("latentsearch.serve")
IMAGE_ROUTE_SUFFIX = "/search/image"
MULTIPART_SLACK = 64 * 1024  # form fields and part headers around an uploaded image


def collection_names(paths: Sequence[str | Path]) -> dict[str, Path]:
    """``{folder name: path}``; two collections with the same folder name are an error."""
    out: dict[str, Path] = {}
    for p in paths:
        path = Path(p).expanduser().resolve()
        name = path.name
        if not name:
            raise InvalidInputError(f"{p} has no folder name to serve it under")
        if name in out:
            raise InvalidInputError(
                f"two collections named {name!r}: {out[name]} and {path}; each is served under its folder's "
                "name, so rename one folder"
            )
        out[name] = path
    return out


def create_app(collections: Mapping[str, str | Path] | Sequence[str | Path], options: ServeOptions | None = None) -> FastAPI:
    """An application serving ``collections`` (a list of folders, each served under its name,
    or a ``{name: folder}`` mapping) with ``options``. Run it with uvicorn, or use it with
    Starlette's ``TestClient`` as a context manager (that runs the lifespan)."""
    options = options or ServeOptions()
    paths = dict(collections) if isinstance(collections, Mapping) else collection_names(collections)
    state = ServedCollections({n: Path(p) for n, p in paths.items()}, options)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # the thread pool that runs the (sync) endpoints: this many requests encode and search at once
        anyio.to_thread.current_default_thread_limiter().total_tokens = options.workers
        state.start()
        try:
            yield
        finally:
            await run_in_threadpool(state.close)

    app = FastAPI(
        title="latentsearch",
        version=__version__,
        description="Search collections of texts, images and vectors by meaning. Writes need "
        "`Authorization: Bearer TOKEN`; every error is JSON `{\"error\": ...}`.",
        lifespan=lifespan,
    )
    app.state.collections = state
    app.state.metrics = Metrics()
    app.include_router(build_router())
    app.include_router(build_ui_router())
    app.add_exception_handler(LatentSearchError, _library_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(BodyLimit, json_limit=options.max_body_bytes, image_limit=options.max_image_bytes + MULTIPART_SLACK)
    if options.allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=options.allowed_hosts)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)  # added last: outermost
    return app


# -- error answers ------------------------------------------------------------------------------


def _error(status: int, message: str, kind: str | None, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, "type": kind, **extra}, status_code=status, headers=headers)


async def _library_error(request: Request, exc: Exception) -> JSONResponse:
    status = status_for(exc)  # type: ignore[arg-type]
    if status >= 500:
        log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, TokenRequiredError) else None
    return _error(status, str(exc), type(exc).__name__, headers)


_HTTP_KINDS = {401: "TokenRequiredError", 403: "AccessDeniedError", 413: "PayloadTooLargeError", 404: None, 405: None}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"nothing at {request.url.path}; the API is described at /docs"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}; the API is described at /docs"
    default = "InvalidInputError" if exc.status_code < 500 else "ServerError"
    kind = _HTTP_KINDS.get(exc.status_code, default)
    return _error(exc.status_code, message, kind, dict(exc.headers) if exc.headers else None)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]  # never echo a 32 MiB body
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', '')}" for e in details[:5]]
    more = f" (and {len(details) - 5} more)" if len(details) > 5 else ""
    content_type = request.headers.get("content-type", "")
    hint = ""
    if any(tuple(e.get("loc", ())) == ("body",) for e in details) and "json" not in content_type:
        hint = f" (the body must be JSON sent with 'Content-Type: application/json', not {content_type or 'no type'!r})"
    return _error(422, "invalid request: " + "; ".join(parts) + more + hint, "InvalidInputError",
                  details=jsonable_encoder(details))


# -- middleware -----------------------------------------------------------------------------------


class RequestMetrics:
    """Counts and times each HTTP request under its route template; an exception no handler
    answered becomes a JSON 500 naming an error id, with the traceback in the log only."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, responded = time.perf_counter(), 500, False

        async def send_noting_status(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except Exception:
            error_id = secrets.token_hex(4)
            log.exception("error %s answering %s %s", error_id, scope.get("method"), scope.get("path"))
            if responded:  # the answer is under way: nothing to do but drop the connection
                raise
            await _error(500, f"internal server error (id {error_id}; details in the server's log)", "ServerError")(
                scope, receive, send_noting_status
            )
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.observe(scope.get("method", ""), route, status, time.perf_counter() - started)


class HostCheck:
    """Answers 421 to a request whose ``Host`` header names none of ``allowed`` (any port): a
    server on 127.0.0.1 then cannot be read by a web page through DNS rebinding (a hostile
    name resolved to 127.0.0.1 makes the page "same-origin" with the server)."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str]):
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            name = name.strip("[]").lower()
            if name not in self.allowed:
                message = f"the Host {host!r} is not one this server answers to; start it with --allowed-host {name or 'NAME'}"
                await _error(421, message, "AccessDeniedError")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses a request body over ``json_limit`` bytes (``image_limit`` for image uploads)
    with 413: at once when ``Content-Length`` says so, else as soon as the bytes read pass the
    limit. Raised while FastAPI reads the body, so the error handlers answer it."""

    def __init__(self, app: ASGIApp, json_limit: int, image_limit: int):
        self.app, self.json_limit, self.image_limit = app, json_limit, image_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        image = scope.get("path", "").endswith(IMAGE_ROUTE_SUFFIX)
        limit = self.image_limit if image else self.json_limit
        what = "image upload" if image else "request body"
        declared = _content_length(scope)
        seen = 0

        def too_large(size: int) -> HTTPException:
            shown = "" if size < 0 else f" is {size:,} bytes;"
            return HTTPException(413, f"the {what}{shown} this server takes at most {limit:,} bytes")

        async def limited_receive() -> Message:
            nonlocal seen
            if declared is not None and declared > limit:
                raise too_large(declared)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_large(-1)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
