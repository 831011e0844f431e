"""Hooks that let tests stop a process at exact points of its work (no cost when unused).

``LATENTSEARCH_KILL_AFTER_COMMITS=N`` (a positive integer) makes the process kill itself with
SIGKILL right after its N-th committed write transaction of the store: the crash tests use it to
kill ``latentsearch index`` at deterministic points, not only at random moments. The store calls
:func:`after_commit` after each commit; unset (the normal case), a call is one comparison.
"""

from __future__ import annotations

import os
import signal
import threading

KILL_AFTER_COMMITS = "LATENTSEARCH_KILL_AFTER_COMMITS"

_UNREAD = -1
_kill_after = _UNREAD  # read from the environment at the first call; 0 when unset
_commits = 0
_lock = threading.Lock()


def _read_kill_after() -> int:
    value = os.environ.get(KILL_AFTER_COMMITS, "").strip()
    if not value:
        return 0
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{KILL_AFTER_COMMITS} must be a positive integer, not {value!r}")
    return n


def after_commit() -> None:
    """Count a committed write transaction; SIGKILL this process at the N-th when
    ``LATENTSEARCH_KILL_AFTER_COMMITS=N`` is set (the environment is read once, at the first call)."""
    global _kill_after, _commits
    if _kill_after == 0:
        return
    with _lock:  # commits may come from more than one thread
        if _kill_after == _UNREAD:
            _kill_after = _read_kill_after()
            if _kill_after == 0:
                return
        _commits += 1
        if _commits >= _kill_after:
            # No cleanup, no flush, no atexit: exactly what a `kill -9` from outside does.
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


KILL_WORKER_ONCE = "LATENTSEARCH_KILL_WORKER_ONCE"
"""``PATH:N``: the first distributed encoding worker to reach its N-th batch creates the file
``PATH`` and kills its own process (SIGKILL); the file makes it happen once in the whole cluster,
however often Ray restarts the worker. Read by the driver, which hands it to its workers."""


def kill_worker_once(setting: str | None, batches: int) -> None:
    """In a worker, at its ``batches``-th batch: die once per cluster as ``setting`` says."""
    if not setting:
        return
    path, _, n = setting.rpartition(":")
    if batches < int(n):
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
