"""Errors of the HTTP layer, shared by the server and the client (no web library imported).

The server answers every error as JSON ``{"error": message, "type": class name}``; the status
comes from :func:`status_for`. The client turns the answer back into the class the server
named (any :class:`~latentsearch.errors.LatentSearchError` subclass of ``latentsearch.errors``
or of this module), so ``except InvalidInputError`` works the same against an embedded
collection and a remote one.
"""

from __future__ import annotations

from .. import errors as core
from ..errors import LatentSearchError


class ServerError(LatentSearchError):
    """An error the server reported that has no more specific class (a 500, a proxy's 502)."""

    status: int = 500


class AccessDeniedError(LatentSearchError, PermissionError):
    """No token (401), or a token that does not allow the request (403)."""


class TokenRequiredError(AccessDeniedError):
    """A request that needs a token came without one (401)."""


class ItemNotFoundError(LatentSearchError, LookupError):
    """No item with the given id, or an item without a file to send."""


class PayloadTooLargeError(core.InvalidInputError):
    """A request body or an uploaded image over the server's size limit."""


class ServiceUnavailableError(LatentSearchError):
    """The server is still opening its collections or warming its encoders, or it failed to."""


def status_for(exc: LatentSearchError) -> int:
    """The HTTP status that answers a library error raised while serving a request."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 400  # any other LatentSearchError is something the request asked for


_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (TokenRequiredError, 401),
    (AccessDeniedError, 403),
    (PayloadTooLargeError, 413),
    (core.InvalidInputError, 400),
    (core.UnknownSpecError, 400),
    (ItemNotFoundError, 404),
    (core.CollectionNotFoundError, 404),
    (core.CollectionLockedError, 409),
    (core.CollectionExistsError, 409),
    (core.EncoderMismatchError, 409),
    (core.ModelUnavailableError, 503),
    (ServiceUnavailableError, 503),
    (core.CorruptCollectionError, 500),
    (ServerError, 500),
)


def error_class(name: str | None, status: int) -> type[LatentSearchError]:
    """The class to raise for a server's error answer: the one it named when that is a
    latentsearch error, else one chosen by the status."""
    cls = getattr(core, name or "", None) or globals().get(name or "")
    if isinstance(cls, type) and issubclass(cls, LatentSearchError):
        return cls
    if status == 401:
        return TokenRequiredError
    if status == 403:
        return AccessDeniedError
    if status == 404:
        return ItemNotFoundError
    if status == 413:
        return PayloadTooLargeError
    if status in (400, 405, 415, 422):
        return core.InvalidInputError
    if status == 409:
        return core.CollectionLockedError
    if status == 503:
        return ServiceUnavailableError
    return ServerError


def make_error(name: str | None, status: int, message: str) -> LatentSearchError:
    """An instance of :func:`error_class` carrying ``message`` and ``.status``; classes with
    their own constructor arguments (``DimensionMismatchError``) are built around the message."""
    cls = error_class(name, status)
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.status = status  # type: ignore[attr-defined]
    return exc
