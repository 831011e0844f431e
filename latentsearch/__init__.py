"""latentsearch: vector similarity search over latent representations.

    import latentsearch
    with latentsearch.create("notes", encoder="minilm") as col:
        col.add(["a note about cats", "a note about ships"])
        print(col.search("boats", k=1))

Importing this package loads no model library and no FAISS; they load when first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import LatentSearchError
from .types import Hit, IndexReport, Item

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .collection import Collection
    from .serve.client import Client


def create(path: Any, **options: Any) -> Collection:
    """Create a collection: ``create(path, encoder="minilm", index="auto", metric="cosine",
    store=None, dim=None, vector_dtype="float32")``; see :meth:`Collection.create`."""
    from .collection import Collection

    return Collection.create(path, **options)


def open(  # noqa: A001 - the natural name
    path: Any,
    encoder: str | None = None,
    read_consistency_interval: float | None = 0.0,
    trust_remote_code: bool = False,
) -> Collection:
    """Open the collection at ``path``; ``read_consistency_interval`` (seconds; ``None``: never)
    is how often a search first checks for other processes' writes; ``trust_remote_code``
    allows an encoder whose manifest asks to run the model folder's code. See
    :meth:`Collection.open`."""
    from .collection import Collection

    return Collection.open(
        path, encoder=encoder, read_consistency_interval=read_consistency_interval, trust_remote_code=trust_remote_code
    )


def connect(url: str, token: str | None = None, timeout: float = 60.0) -> Client:
    """A client of a ``latentsearch serve`` server at ``url`` (``token``: sent as ``Authorization:
    Bearer``); ``.collection(name)`` searches and writes as an embedded collection does. Needs
    httpx (the ``server`` extra). See :mod:`latentsearch.serve.client`."""
    from .serve.client import Client

    return Client(url, token, timeout)


def __getattr__(name: str) -> Any:
    if name == "Collection":
        from .collection import Collection

        return Collection
    raise AttributeError(f"module 'latentsearch' has no attribute {name!r}")


__all__ = ["Collection", "Hit", "IndexReport", "Item", "LatentSearchError", "connect", "create", "open", "__version__"]
