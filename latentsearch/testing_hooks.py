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
    if batches >= int(n) and _first_time(path):
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _first_time(marker: str) -> bool:
    """True for the first caller anywhere (any process) to ask with this ``marker`` file path:
    it creates the file; later callers find it."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


# -- on-disk index builds (latentsearch.distributed.shards, latentsearch.indexes.ondisk) -------------

SHARD_FAIL_ONCE = "LATENTSEARCH_TEST_SHARD_FAIL_ONCE"
ONDISK_CRASH = "LATENTSEARCH_TEST_ONDISK_CRASH"


def shard_failure() -> str | None:
    """``LATENTSEARCH_TEST_SHARD_FAIL_ONCE=MODE:DIR`` (MODE ``raise`` or ``exit``), read on the
    driver and handed to the shard tasks (Ray workers started earlier do not see the driver's
    environment): the first attempt at shard 0 then fails, and a retry succeeds."""
    return os.environ.get(SHARD_FAIL_ONCE) or None


def fail_shard_once(hook: str | None, shard: int) -> None:
    """In a shard task: fail (raise, or end the worker process) the first time shard 0 runs
    under ``hook`` (see :func:`shard_failure`); a marker file in DIR remembers the attempt."""
    if not hook or shard != 0:
        return
    mode, _, folder = hook.partition(":")
    if not _first_time(os.path.join(folder, f"shard-{shard}.failed")):
        return  # failed once already: this is the retry
    if mode == "exit":
        os._exit(1)
    raise RuntimeError(f"{SHARD_FAIL_ONCE}: shard {shard} fails on its first attempt")


def crash_point(name: str) -> None:
    """SIGKILL this process at the named point of an on-disk build when
    ``LATENTSEARCH_TEST_ONDISK_CRASH=name`` (``before_swap``: every file written, none committed)."""
    if os.environ.get(ONDISK_CRASH) == name:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
