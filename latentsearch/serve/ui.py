"""The web UI: three static files (``static/index.html``, ``app.js``, ``style.css``) served at
``/`` and ``/ui/…`` by the same app, with no build step and nothing fetched from elsewhere.

Only the files named in :data:`FILES` are ever served (a request names a key of that mapping,
never a path). Each answer carries a Content-Security-Policy that allows this server's own
scripts, styles and API, and images from blobs (thumbnails are fetched with the token, then
shown), and nothing else: no inline script, no other origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from .errors import ItemNotFoundError

STATIC = Path(__file__).with_name("static")
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def index() -> FileResponse:
    """The web UI: search, filters, clusters and the collection's map."""
    return _file("index.html")


def asset(name: str) -> FileResponse:
    """A file of the web UI (``app.js``, ``style.css``)."""
    return _file(name)


def _file(name: str) -> FileResponse:
    if name not in FILES:
        raise ItemNotFoundError(f"no file {name!r} in the web UI")
    return FileResponse(STATIC / name, media_type=FILES[name], headers=HEADERS)


def build_ui_router() -> APIRouter:
    router = APIRouter()
    router.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    router.add_api_route("/ui/{name}", asset, methods=["GET"], include_in_schema=False)
    return router
