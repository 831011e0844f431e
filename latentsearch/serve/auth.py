"""Bearer tokens: writes need the write token; reads need the read token (or the write token)
when one is set, and are open otherwise. Without a write token the server is read-only.

Tokens are compared in constant time. A missing token is a 401 (with ``WWW-Authenticate:
Bearer``), a wrong one a 403; neither message repeats what was sent.
"""

from __future__ import annotations

import secrets

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import AccessDeniedError, TokenRequiredError
from .state import ServedCollections

bearer = HTTPBearer(auto_error=False, description="The server's --token (writes) or --read-token (reads).")


def served(request: Request) -> ServedCollections:
    """The server's collections (``app.state.collections``)."""
    return request.app.state.collections  # type: ignore[no-any-return]


def require_read(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    options = served(request).options
    if options.read_token is not None:
        _check(credentials, (options.read_token, options.token), "reading")


def require_write(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    options = served(request).options
    if options.token is None:
        raise AccessDeniedError(
            "this server is read-only: start it with --token (or LATENTSEARCH_TOKEN) to allow writes"
        )
    _check(credentials, (options.token,), "writing")


def _check(credentials: HTTPAuthorizationCredentials | None, accepted: tuple[str | None, ...], what: str) -> None:
    if credentials is None:
        raise TokenRequiredError(f"{what} needs a token: send the header 'Authorization: Bearer TOKEN'")
    given = credentials.credentials.encode()
    if not any(t is not None and secrets.compare_digest(given, t.encode()) for t in accepted):
        raise AccessDeniedError(f"the token does not allow {what}")
