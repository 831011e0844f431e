"""The Ray cluster a process works on: joined (or started) on the first distributed call.

``address``: ``"local"`` (or None) starts a cluster on this machine, or uses the one this process
started before; ``"auto"`` joins the cluster ``ray start`` runs on this machine; anything else is
the address of a running cluster (``host:6379``, ``ray://host:10001``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..errors import InvalidInputError

LOCAL = "local"


def ray_module() -> Any:
    """``ray``, or a clear error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise InvalidInputError(
            "distributed work needs Ray, which is not installed: pip install 'latentsearch[distributed]'"
        ) from None
    return ray


def connect(address: str | None = LOCAL, num_cpus: int | None = None) -> Any:
    """Join the Ray cluster at ``address`` (see the module) and return ``ray``. A process
    connected already keeps its cluster; ``num_cpus`` sizes a local one (default: all cores)."""
    ray = ray_module()
    if ray.is_initialized():
        return ray
    # Ray's own lines (its C++ core's too) would drown the progress; failures reach the caller as
    # exceptions. RAY_BACKEND_LOG_LEVEL=info (or error) set by the user shows them again.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address not in (None, LOCAL):
        _check_reachable(address)  # Ray itself would retry an unreachable address for minutes
    try:
        if address in (None, LOCAL):
            os.environ.pop("RAY_ADDRESS", None)  # local means this machine, not a cluster named elsewhere
            ray.init(num_cpus=num_cpus, include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = "a local cluster" if address in (None, LOCAL) else f"the Ray cluster at {address!r}"
        raise InvalidInputError(f"cannot reach {where}: {exc}") from exc
    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its per-dataset INFO lines drown the progress
    context = DataContext.get_current()
    context.enable_progress_bars = False  # latentsearch shows its own progress
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """An error naming ``address`` when nothing listens there (``auto`` is Ray's to resolve)."""
    import socket
    from urllib.parse import urlsplit

    if address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"ray-gcs://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise InvalidInputError(
            f"{address!r} is not a Ray cluster address: give host:port (the head's GCS, e.g. head:6379), "
            "ray://host:10001, 'auto' or 'local'"
        )
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise InvalidInputError(f"cannot reach the Ray cluster at {address!r}: {exc}") from None
