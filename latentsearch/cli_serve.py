"""``latentsearch serve``: collections over HTTP with uvicorn. FastAPI and uvicorn are imported
when the command runs, so ``latentsearch --help`` stays instant and they stay optional (the
``server`` extra)."""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click

LOOPBACK = "127.0.0.1"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default=LOOPBACK, show_default=True, help="Address to bind; 0.0.0.0 listens on every interface.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--token", envvar="LATENTSEARCH_TOKEN", default=None, metavar="TOKEN",
              help="Bearer token that allows writes (env LATENTSEARCH_TOKEN, which `ps` does not show). "
                   "Without one the server is read-only.")
@click.option("--read-token", envvar="LATENTSEARCH_READ_TOKEN", default=None, metavar="TOKEN",
              help="Bearer token needed for reads too (env LATENTSEARCH_READ_TOKEN) [default: reads are open].")
@click.option("--max-body-mib", default=32.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest JSON request body.")
@click.option("--max-image-mib", default=20.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Largest uploaded query image.")
@click.option("--read-consistency", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds between checks for other processes' writes before a search (0: every search).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Also answer requests whose Host header is NAME (repeatable); on a loopback address only "
                   "localhost, 127.0.0.1 and ::1 are answered, so web pages cannot reach the server by DNS rebinding.")
@click.option("--workers", default=40, show_default=True, type=click.IntRange(1, 1024),
              help="Threads that serve requests at once (they share the warm models and indexes; more requests wait). "
                   "One process serves the collections, since each has one writer.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
def serve(
    paths: tuple[Path, ...],
    host: str,
    port: int,
    token: str | None,
    read_token: str | None,
    max_body_mib: float,
    max_image_mib: float,
    read_consistency: float,
    allowed_hosts: tuple[str, ...],
    workers: int,
    log_level: str,
) -> None:
    """Serve the collections at PATHS over HTTP, each under its folder's name.

    Collections are opened and encoders warmed at startup; GET /api/health answers 200 once all
    are ready (503 before). Writes need --token (sent as 'Authorization: Bearer TOKEN'); reads
    are open unless --read-token is set. The API is described at /docs. SIGTERM or Ctrl-C
    finishes the requests in flight, then closes the collections.

    \b
    Example:
      LATENTSEARCH_TOKEN=$(openssl rand -hex 16) latentsearch serve papers photos --port 8000
      curl -s localhost:8000/api/collections/papers/search -H 'content-type: application/json' \\
           -d '{"query": "protein folding", "k": 5}'
    """
    try:
        import uvicorn

        from .serve.app import collection_names, create_app
        from .serve.state import ServeOptions
    except ImportError as exc:
        raise click.ClickException(f"serving needs the server extra: pip install 'latentsearch[server]' ({exc})") from None
    from .config import manifest_path

    names = collection_names(paths)  # two folders with one name fail here
    for name, path in names.items():
        if not manifest_path(path).exists():
            raise click.ClickException(f"no collection at {path}; create one with `latentsearch index {path} FILES...`")
    if token is not None and read_token is not None and token == read_token:
        raise click.ClickException("--token and --read-token are the same: give the read token to readers only")
    url = f"http://{_url_host(host)}:{port}"
    failure: list[str] = []
    server: Any = None

    def stop(reason: str) -> None:  # a collection failed to open or warm: exit non-zero
        failure.append(reason)
        if server is not None:
            server.should_exit = True

    options = ServeOptions(
        token=token,
        read_token=read_token,
        max_body_bytes=int(max_body_mib * 1024 * 1024),
        max_image_bytes=int(max_image_mib * 1024 * 1024),
        read_consistency_interval=read_consistency,
        workers=workers,
        allowed_hosts=[*LOOPBACK_NAMES, *allowed_hosts] if _is_loopback(host) else None,
        url=url,
        on_failure=stop,
    )
    app = create_app(names, options)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, log_config=_log_config(), lifespan="on")
    server = uvicorn.Server(config)
    log = logging.getLogger("latentsearch.serve")
    if not _is_loopback(host) and read_token is None:
        log.warning("listening on %s with open reads: anyone who can reach it can search; set --read-token", host)
    if token is None:
        log.info("no --token: the server is read-only")
    # uvicorn re-raises the signal that stopped it once it has shut down; these handlers make
    # that a clean exit (status 0) after the drain, instead of death by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    if failure:
        sys.exit(1)
    if not server.started:
        raise click.ClickException(f"could not start the server on {host}:{port} (see the log above)")


def _log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, with latentsearch's loggers on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = {**LOGGING_CONFIG, "loggers": dict(LOGGING_CONFIG["loggers"])}
    config["loggers"]["latentsearch"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
