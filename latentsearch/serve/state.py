"""The collections a server serves: opened and warmed in a background thread at startup, shared
by every request thread, closed at shutdown.

Warming happens off the event loop so the server answers ``GET /api/health`` (503, then 200)
while a large model loads; requests to a collection wait for nothing: they get 503 until every
collection is ready. A failure to open or warm one is logged as one line, kept for
``/api/health``, and reported to ``on_failure`` (the command line stops the server).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CollectionNotFoundError, LatentSearchError
from .errors import ServiceUnavailableError
from .maps import MapCache

log = logging.getLogger("latentsearch.serve")


@dataclass
class ServeOptions:
    """How a server behaves. ``token`` allows writes (no token: the server is read-only);
    ``read_token``, when set, is needed for reads too (the write token also allows them).
    ``read_consistency_interval`` and ``lock_timeout`` are passed to each collection.
    ``allowed_hosts``: the names the ``Host`` header may give (None: any), see
    :class:`~latentsearch.serve.app.HostCheck`."""

    token: str | None = None
    read_token: str | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024
    max_k: int = 10_000
    max_queries: int = 1_024
    read_consistency_interval: float | None = 0.0
    lock_timeout: float = 10.0
    allowed_hosts: list[str] | None = None
    workers: int = 40  # threads that run requests at once (anyio's default); more requests queue
    url: str | None = None  # for the log line ("serving http://...")
    on_failure: Callable[[str], None] | None = field(default=None, repr=False)


@dataclass
class Served:
    """One served collection and what the startup log line says about it."""

    name: str
    path: Path
    collection: Any = None
    encoder: str = ""
    device: str = ""
    items: int = 0
    index: str = ""


class ServedCollections:
    """Name → open collection. Names are the folders' names and are only ever looked up in this
    mapping: a request can name nothing but a collection the command line was given."""

    def __init__(self, paths: Mapping[str, Path], options: ServeOptions):
        self.served = {name: Served(name, Path(p)) for name, p in paths.items()}
        self.options = options
        self.ready = threading.Event()
        self.failed: str | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self.maps = MapCache()

    # -- startup and shutdown -------------------------------------------------------------------

    def start(self) -> None:
        """Open and warm every collection in a background thread."""
        self._thread = threading.Thread(target=self._open_all, name="latentsearch-warm", daemon=True)
        self._thread.start()

    def _open_all(self) -> None:
        started = time.perf_counter()
        name = ""
        try:
            for name, served in self.served.items():
                if self._closing.is_set():
                    return
                self._open(served)
        except Exception as exc:  # one clear line; the traceback only for what is not ours
            self.failed = f"cannot serve the collection {name!r}: {exc}"
            if isinstance(exc, LatentSearchError):
                log.error(self.failed)
            else:
                log.exception(self.failed)
            if self.options.on_failure is not None:
                self.options.on_failure(self.failed)
            return
        self.ready.set()
        parts = [f"{s.name} ({s.items:,} items; encoder {s.encoder} on {s.device}; index {s.index})"
                 for s in self.served.values()]
        where = f" at {self.options.url}" if self.options.url else ""
        log.info("serving%s in %.1f s: %s", where, time.perf_counter() - started, ", ".join(parts))

    def _open(self, served: Served) -> None:
        from ..collection import Collection

        col = Collection.open(served.path, read_consistency_interval=self.options.read_consistency_interval)
        served.collection = col
        col.lock_timeout = self.options.lock_timeout
        index = col.index()  # loaded (or rebuilt) and caught up now, not by the first search
        served.items, served.index = len(col), index.describe()
        encoder = col.encoder  # loads the model
        served.encoder, served.device = col.config.encoder, _device(encoder)
        if encoder is not None:
            _warm(encoder)

    def close(self, timeout: float = 60.0) -> None:
        """Wait for the warm-up thread (it stops between collections), then close each
        collection: the index snapshot is saved, the index thread stopped, the store closed."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for served in self.served.values():
            if served.collection is not None:
                try:
                    served.collection.close()
                    log.info("closed the collection %s", served.name)
                except Exception:
                    log.exception("closing the collection %s failed", served.name)
                served.collection = None

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Block until every collection is open and warm (False on timeout or failure)."""
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.failed is not None or time.monotonic() > deadline:
                return False
        return True

    # -- lookups --------------------------------------------------------------------------------

    def get(self, name: str) -> Any:
        """The open collection called ``name``."""
        served = self.served.get(name)
        if served is None:
            raise CollectionNotFoundError(f"no collection named {name!r} here; see GET /api/collections")
        if not self.ready.is_set():
            raise ServiceUnavailableError(self.failed or "the server is still opening its collections; retry shortly")
        return served.collection

    def names(self) -> list[str]:
        return list(self.served)

    def item_counts(self) -> list[tuple[str, int]]:
        """``(name, items)`` of each open collection, read from the stores now."""
        return [(s.name, len(s.collection)) for s in self.served.values() if s.collection is not None]


def _device(encoder: Any) -> str:
    """Where the encoder runs, as torch names it ("cuda:0", "cpu"); "none" without a model."""
    if encoder is None:
        return "none (vectors only)"
    for holder in (encoder, getattr(encoder, "model", None)):
        device = getattr(holder, "device", None)
        if device is not None:
            return str(device)
    return "cpu"


def _warm(encoder: Any) -> None:
    """Run the model once so the first request does not pay for lazy initialisation (CUDA
    context, kernels, tokenizer caches)."""
    if "text" in encoder.modalities:
        encoder.encode_text(["warm up"])
    elif "image" in encoder.modalities:
        from PIL import Image

        encoder.encode_image([Image.new("RGB", (64, 64), (128, 128, 128))])
