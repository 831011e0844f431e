"""``latentsearch serve`` as a real process for the tests: on a free port, with its output in a
log file, yielded once ``/api/health`` says ok, stopped at the end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

TOKEN_VARIABLES = ("LATENTSEARCH_TOKEN", "LATENTSEARCH_READ_TOKEN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running(paths: list[Path], log: Path, *args: str, env: Mapping[str, str] | None = None, wait: float = 90) -> Iterator[Server]:
    """``latentsearch serve PATHS ARGS`` on a free port, with the token variables of this
    process's environment replaced by ``env``'s. Its output goes to ``log`` (a pipe could fill and
    stall it). At the end it is sent SIGTERM, and killed if it has not stopped 15 s later."""
    import httpx

    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k not in TOKEN_VARIABLES}
    environ.update(env or {})
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "latentsearch.cli", "serve", *map(str, paths), "--port", str(port), *args],
            stdout=out, stderr=subprocess.STDOUT, env=environ,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + wait
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{server.output()}")
            try:
                if httpx.get(server.url + "/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not healthy within {wait:.0f} s:\n{server.output()}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)
