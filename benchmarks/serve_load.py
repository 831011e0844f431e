"""Search over HTTP (``latentsearch serve``) under concurrent clients, with and without a writer,
against in-process search in the same run.

    python benchmarks/serve_load.py      # both workloads, 1/16/64 clients, 13 rows of 60 s: about 17 min
    python benchmarks/serve_load.py --workloads vector --vectors 2000 --clients 1,4 --duration 2 --warmup 0.5
    python benchmarks/serve_load.py --workloads text --encoder hashing:384 --texts 500 --clients 1,4 --duration 2 --warmup 0.5

Two workloads (``--workloads vector,text``):

* ``vector``: ``--vectors`` random float32 vectors (seeded, ``--dim``) in a collection without an
  encoder, queried by vector (``{"query": {"vector": [...]}}``);
* ``text``: ``--texts`` synthetic sentences (seeded) encoded with ``--encoder`` (MiniLM by
  default), queried by text.

Both use ``--index`` (default ``Flat``: exact search, so HTTP and in-process do the same work
with no recall question; ``auto`` would pick HNSW32 at 100,000 vectors); the index in use is
printed. For each workload, in this order:

1. In process (``latentsearch.open``, as the server opens it): ``search_batch`` over the
   ``--queries`` query set in batches of ``--batch`` (queries/s, best of three), then ``search``
   one query at a time by one caller (queries/s, p50/p95/p99); for text also the encoder alone,
   ``col.encoder.encode_text([query])`` (p50), for the goal "warm text query p50 ≤ encoder
   time + 10 ms at concurrency 1".
2. Cold start: a ``latentsearch serve`` subprocess on a free port (with a write token, given in
   ``LATENTSEARCH_TOKEN``); seconds from starting the process to the first ``GET /api/health``
   answering 200 ``{"status": "ok"}`` (the collection's files were just written, so they are in
   the page cache).
3. HTTP load, one row per level of ``--clients``, each ``--duration`` seconds after
   ``--warmup`` seconds not counted: closed-loop clients, each on its own keep-alive connection,
   send one search and wait for the answer before sending the next. First without a writer,
   then with one extra client that keeps adding ``--write-batch`` items per request
   (``POST …/items``, with the write token) for the whole row; what it added is deleted after
   the row (not timed), so every row starts from the collection the in-process baseline
   searched (each row records the size it started at and the items added). For ``vector``
   also rows of ``--batch`` queries per request (``{"queries": [...]}``) at
   ``--batch-clients``: batch over HTTP against ``search_batch``.
   Each row gives requests, errors (any answer but 200, or a failed request), queries/s over the
   row's wall time, the p50/p95/p99 latency a client saw (HTTP and JSON included), the ratio to
   in-process ``search`` (one caller, one query at a time) and to in-process ``search_batch``,
   writes/s, and the CPU used by the load generator and by the server (100 % = one core).

The load generator is one asyncio loop (in this script's process) with a minimal HTTP/1.1
client on asyncio streams rather than httpx: each request's bytes are built before the clock
starts and an answer is read by its Content-Length, so a request costs the generator under
0.1 ms of CPU, about a tenth of what ``httpx.AsyncClient`` with ``json=`` bodies costs (both
measured on a busy 2-core machine); its CPU share is printed per row, so it can be seen not to
be the limit. It runs on the same
machine as the server and takes CPU from it: on few cores, read the HTTP rows as a lower bound.

A final table says, with the numbers, whether each goal of the issue is met: vector queries over
HTTP ≥ 0.5× in-process throughput (single queries at 16 and 64 clients against one-by-one
``search``; batches against ``search_batch``), warm text p50 at one client ≤ encoder p50 +
10 ms, and 0 errors; cold start is reported. Prints tables and writes
benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_parser, print_table, write_result  # noqa: E402

import latentsearch  # noqa: E402

HOST = "127.0.0.1"
NAME = "load"  # the collection's folder name, so its name on the server

WORDS = (
    "ship sea salt star bread yeast whale song code sort hash vaccine sleep train plane river "
    "mountain protein cell orbit galaxy market price engine rain forest city music paint law"
).split()


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) for _ in range(n)]


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    ms = np.asarray(seconds) * 1000.0
    return {f"p{p}_ms": float(np.percentile(ms, p)) for p in (50, 95, 99)}


def int_list(text: str) -> list[int]:
    values = [int(v) for v in text.replace(" ", "").split(",") if v]
    if not values or min(values) < 1:
        raise ValueError(text)
    return values


# -- the workloads --------------------------------------------------------------------------------


class Workload:
    """A collection to build, its queries (as the collection takes them and as JSON), and what
    the writer sends."""

    def __init__(self, kind: str, args: Any):
        self.kind, self.args = kind, args
        if kind == "vector":
            rng = np.random.default_rng(1)
            self.queries: Any = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
            self.json_queries: list[Any] = [{"vector": q.tolist()} for q in self.queries]
            writes = rng.standard_normal((100 * args.write_batch, args.dim), dtype=np.float32)
            self.write_bodies = [
                {"vectors": writes[s : s + args.write_batch].tolist(), "metadata": [{"n": -1}] * args.write_batch}
                for s in range(0, len(writes), args.write_batch)
            ]
        else:
            self.queries = sentences(args.queries, seed=1)
            self.json_queries = list(self.queries)
            writes = sentences(100 * args.write_batch, seed=2)
            self.write_bodies = [
                {"texts": writes[s : s + args.write_batch], "metadata": [{"n": -1}] * args.write_batch}
                for s in range(0, len(writes), args.write_batch)
            ]

    @property
    def items(self) -> int:
        return self.args.vectors if self.kind == "vector" else self.args.texts

    @property
    def encoder(self) -> str:
        return "none (vectors)" if self.kind == "vector" else self.args.encoder

    def build(self, path: Path) -> float:
        args, t0 = self.args, time.perf_counter()
        if self.kind == "vector":
            rng = np.random.default_rng(0)
            with latentsearch.create(path, encoder=None, dim=args.dim, index=args.index) as col:
                for start in range(0, args.vectors, 50_000):
                    x = rng.standard_normal((min(50_000, args.vectors - start), args.dim), dtype=np.float32)
                    col.add(x, metadata=[{"n": start + i} for i in range(len(x))], batch_size=5000)
        else:
            with latentsearch.create(path, encoder=args.encoder, index=args.index) as col:
                col.add(sentences(args.texts, seed=0), metadata=[{"n": i} for i in range(args.texts)], batch_size=256)
        return time.perf_counter() - t0  # closing saved the index snapshot the server loads


def best_of(fn: Any, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def in_process(path: Path, work: Workload, k: int, batch: int) -> dict[str, Any]:
    """``search_batch`` queries/s (best of three), one-by-one ``search`` queries/s and latency,
    and for text the encoder's time for one query."""
    queries = work.queries
    n = len(queries)
    with latentsearch.open(path) as col:
        info = col.info()
        col.search_batch(queries[:batch], k=k)  # warm: index loaded, store connection, model
        for q in queries[:5]:
            col.search(q, k=k)

        def batches() -> None:
            for s in range(0, n, batch):
                col.search_batch(queries[s : s + batch], k=k)

        batch_s = best_of(batches)
        times = []
        for q in queries:
            t0 = time.perf_counter()
            col.search(q, k=k)
            times.append(time.perf_counter() - t0)
        out: dict[str, Any] = {
            "index": info["index"],
            "index_in_use": info["index_in_use"],
            "metric": info["metric"],
            "dim": info["dim"],
            "search_batch_qps": n / batch_s,
            "search_qps": n / sum(times),
            **{f"search_{p}": v for p, v in percentiles(times).items()},
        }
        if work.kind == "text":
            encoder = col.encoder
            assert encoder is not None
            encode = []
            for q in queries:
                t0 = time.perf_counter()
                encoder.encode_text([q])
                encode.append(time.perf_counter() - t0)
            out["encode_p50_ms"] = percentiles(encode)["p50_ms"]
    return out


# -- the server -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def get_json(port: int, path: str, timeout: float = 5.0) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, None
    finally:
        conn.close()


class Server:
    """``latentsearch serve PATH`` in a subprocess; stopped (SIGTERM, then kill) on leaving the block."""

    def __init__(self, path: Path, log: Path, token: str):
        self.path, self.log, self.token = path, log, token
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.listening_s = self.ready_s = float("nan")

    def __enter__(self) -> Server:
        here = Path(latentsearch.__file__).resolve().parents[1]  # the server runs the latentsearch imported here
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(here), os.environ.get("PYTHONPATH")])),
            "LATENTSEARCH_TOKEN": self.token,
        }
        cmd = [sys.executable, "-m", "latentsearch.cli", "serve", str(self.path), "--host", HOST,
               "--port", str(self.port), "--log-level", "warning"]
        with open(self.log, "wb") as out:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, t0: float, limit: float = 600.0) -> None:
        assert self.proc is not None
        while time.perf_counter() - t0 < limit:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, body = get_json(self.port, "/api/health", timeout=2.0)
            except OSError:
                status, body = 0, None
            now = time.perf_counter() - t0
            if status and self.listening_s != self.listening_s:  # first answer of any kind
                self.listening_s = now
            if status == 200 and isinstance(body, dict) and body.get("status") == "ok":
                self.ready_s = now
                return
            time.sleep(0.02)
        raise RuntimeError(f"the server was not ready within {limit:.0f} s:\n{self.log_tail()}")

    def items(self) -> int:
        status, body = get_json(self.port, f"/api/collections/{NAME}", timeout=60.0)
        return int(body["items"]) if status == 200 else -1

    def delete(self, ids: list[int], chunk: int = 5000) -> None:
        """Delete ``ids`` (what a writer added), so that every row starts from the same collection."""
        for s in range(0, len(ids), chunk):
            body = json.dumps({"ids": ids[s : s + chunk]}).encode()
            conn = http.client.HTTPConnection(HOST, self.port, timeout=600)
            try:
                conn.request("DELETE", f"/api/collections/{NAME}/items", body=body, headers={
                    "Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
                r = conn.getresponse()
                answer = r.read()
            finally:
                conn.close()
            if r.status != 200:
                raise RuntimeError(f"deleting the writer's items failed: HTTP {r.status} {answer[:300]!r}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux; NaN elsewhere)."""
        try:
            assert self.proc is not None
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, AssertionError):
            return float("nan")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # finishes requests in flight, closes the collection
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# -- the load generator ---------------------------------------------------------------------------


def request_bytes(port: int, path: str, body: Any, token: str | None = None) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{auth}\r\n")
    return head.encode() + data


class Connection:
    """One keep-alive HTTP/1.1 connection: send prepared request bytes, read the status and the
    body (by Content-Length, or chunked); reopened after an error or ``Connection: close``."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port, limit=1 << 20)
        assert self.reader is not None
        try:
            self.writer.write(data)
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, chunked, close = None, False, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    close = b"close" in value.lower()
            if chunked:
                parts = []
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    parts.append(await self.reader.readexactly(size + 2))
                    if size == 0:
                        break
                body = b"".join(p[:-2] for p in parts)
            elif length is not None:
                body = await self.reader.readexactly(length)
            else:
                body, close = await self.reader.read(), True
            if close:
                self.close()
            return status, body
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Tally:
    def __init__(self, keep: bool = False) -> None:
        self.latencies: list[float] = []
        self.ok = self.errors = 0
        self.first_error: str | None = None
        self.bodies: list[bytes] | None = [] if keep else None  # the writer's answers: the ids it added

    def error(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what


def check_answer(body: bytes, per_request: int, hits: int) -> bool:
    """A search answer holds ``hits`` hits for each of its ``per_request`` queries."""
    try:
        data = json.loads(body)
        rows = data["results"] if per_request > 1 else [data["hits"]]
        return len(rows) == per_request and all(len(r) == hits for r in rows)
    except (ValueError, KeyError, TypeError):
        return False


async def loop(conn: Connection, requests: list[bytes], start: int, deadline: float, tally: Tally,
               prefix: bytes, check: tuple[int, int] | None) -> None:
    """Send ``requests`` in turn (from ``start``) until ``deadline``, one at a time."""
    i, n, clock = start, len(requests), time.perf_counter
    while clock() < deadline:
        t0 = clock()
        try:
            status, body = await conn.request(requests[i % n])
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            tally.error(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.01)
            i += 1
            continue
        tally.latencies.append(clock() - t0)
        if status != 200 or not body.startswith(prefix):
            tally.error(f"HTTP {status}: {body[:300]!r}")
        elif check is not None and not check_answer(body, *check):
            tally.error(f"unexpected answer: {body[:300]!r}")
        else:
            tally.ok += 1
            if tally.bodies is not None:
                tally.bodies.append(body)
        check = None  # the first answer of each client is read in full; the others by their start
        i += 1


async def together(coros: list[Any], limit: float) -> None:
    """Run ``coros`` concurrently; a server that stops answering fails the row rather than hanging it."""
    done = asyncio.gather(*coros)
    done.add_done_callback(lambda f: f.cancelled() or f.exception())  # an interrupted run: no "never retrieved"
    await asyncio.wait_for(done, limit)


async def load(server: Server, searches: list[bytes], per_request: int, hits: int, clients: int, duration: float,
               warmup: float, writes: list[bytes] | None) -> dict[str, Any]:
    """``clients`` closed-loop clients (and a writer when ``writes``) for ``duration`` seconds."""
    conns = [Connection(server.port) for _ in range(clients)]
    n = len(searches)
    prefix = b'{"results":' if per_request > 1 else b'{"hits":'
    if warmup > 0:  # connections opened, server threads and caches warm; not counted
        end = time.perf_counter() + warmup
        await together([loop(c, searches, j * n // clients, end, Tally(), prefix, None)
                        for j, c in enumerate(conns)], warmup + 300)
    reads, written = Tally(), Tally(keep=True)
    cpu0, server0 = time.process_time(), server.cpu_seconds()
    t0 = time.perf_counter()
    deadline = t0 + duration
    tasks = [loop(c, searches, (j * n // clients + 7919 * j) % n, deadline, reads, prefix, (per_request, hits))
             for j, c in enumerate(conns)]
    if writes is not None:
        tasks.append(loop(Connection(server.port), writes, 0, deadline, written, b'{"ids":', None))
    await together(tasks, duration + 300)
    wall = time.perf_counter() - t0
    cpu, server_cpu = time.process_time() - cpu0, server.cpu_seconds() - server0
    for c in conns:
        c.close()
    row: dict[str, Any] = {
        "requests": reads.ok + reads.errors,
        "errors": reads.errors + written.errors,
        "seconds": wall,
        "queries_per_s": reads.ok * per_request / wall,
        **percentiles(reads.latencies),
        "loadgen_cpu_pct": 100 * cpu / wall,
        "server_cpu_pct": 100 * server_cpu / wall,
    }
    if writes is not None:
        added = [int(i) for b in written.bodies or [] for i in json.loads(b)["ids"]]
        row.update(write_requests=written.ok + written.errors, write_errors=written.errors,
                   writes_per_s=written.ok / wall, items_added=len(added),
                   **{f"write_{p}": v for p, v in percentiles(written.latencies).items()})
        row["_added_ids"] = added
    first = reads.first_error or written.first_error
    if first:
        row["first_error"] = first
    return row


# -- one workload ---------------------------------------------------------------------------------


def run_workload(work: Workload, args: Any, tmp: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    path = tmp / work.kind / NAME
    path.parent.mkdir(parents=True)
    print(f"[{work.kind}] building {work.items:,} items ({work.encoder}, {args.index})", flush=True)
    build = work.build(path)
    print(f"[{work.kind}] in process: search_batch, search{', encoder' if work.kind == 'text' else ''}", flush=True)
    base = {"workload": work.kind, "encoder": work.encoder, "items": work.items, "build_seconds": build,
            **in_process(path, work, args.k, args.batch)}
    token = secrets.token_hex(16)
    rows: list[dict[str, Any]] = []
    with Server(path, tmp / f"{work.kind}-server.log", token) as server:
        base["cold_start_s"] = server.ready_s
        base["listening_s"] = server.listening_s
        print(f"[{work.kind}] server ready in {server.ready_s:.2f} s; HTTP rows of {args.duration:g} s", flush=True)
        search_path = f"/api/collections/{NAME}/search"
        single = [request_bytes(server.port, search_path, {"query": q, "k": args.k}) for q in work.json_queries]
        qs = work.json_queries
        batched = [request_bytes(server.port, search_path, {"queries": qs[s : s + args.batch], "k": args.k})
                   for s in range(0, len(qs) - args.batch + 1, args.batch)] or [
                   request_bytes(server.port, search_path, {"queries": qs[: args.batch], "k": args.k})]
        writes = [request_bytes(server.port, f"/api/collections/{NAME}/items", b, token) for b in work.write_bodies]
        plan = [("single", c, False) for c in args.clients]
        if work.kind == "vector":
            plan += [("batch", c, False) for c in args.batch_clients]
        plan += [("single", c, True) for c in args.clients]
        for form, clients, writer in plan:
            per_request = args.batch if form == "batch" else 1
            if form == "batch" and len(qs) < args.batch:
                per_request = len(qs)
            items = server.items()
            row = asyncio.run(load(server, batched if form == "batch" else single, per_request,
                                   min(args.k, work.items), clients, args.duration, args.warmup,
                                   writes if writer else None))
            ref = base["search_batch_qps"] if form == "batch" else base["search_qps"]
            added = row.pop("_added_ids", [])
            if added:  # the next row starts from the collection the in-process baseline searched
                server.delete(added)
            row = {"workload": work.kind, "form": form, "queries_per_request": per_request, "clients": clients,
                   "writer": writer, "items_before": items, **row,
                   "vs_search": row["queries_per_s"] / base["search_qps"],
                   "vs_search_batch": row["queries_per_s"] / base["search_batch_qps"],
                   "vs_like_for_like": row["queries_per_s"] / ref}  # single against search, batch against search_batch
            rows.append(row)
            print(f"[{work.kind}] {form} clients={clients} writer={'yes' if writer else 'no'}: "
                  f"{row['queries_per_s']:,.0f} queries/s, p50 {row['p50_ms']:.2f} ms, {row['errors']} errors", flush=True)
            if not server.alive():
                raise RuntimeError(f"the server died during the load:\n{server.log_tail()}")
        base["items_after"] = server.items()
    return base, rows


# -- goals ----------------------------------------------------------------------------------------


def goals(bases: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(goal: str, met: bool | None, numbers: str) -> None:
        out.append({"goal": goal, "met": met, "numbers": numbers})

    vec = [r for r in rows if r["workload"] == "vector" and not r["writer"]]
    single = [r for r in vec if r["form"] == "single"]
    chosen = [r for r in single if r["clients"] >= 16] or single
    if chosen:
        add("vector, single queries over HTTP ≥ 0.5× in-process search (one by one)",
            all(r["vs_search"] >= 0.5 for r in chosen),
            ", ".join(f"{r['clients']} client{'s' * (r['clients'] > 1)}: {r['queries_per_s']:,.0f}/s = {r['vs_search']:.2f}×" for r in chosen)
            + f" (in process {bases['vector']['search_qps']:,.0f}/s)")
        add("vector, single queries over HTTP ≥ 0.5× in-process search_batch (the strict reading)",
            all(r["vs_search_batch"] >= 0.5 for r in chosen),
            ", ".join(f"{r['clients']} client{'s' * (r['clients'] > 1)}: {r['vs_search_batch']:.2f}×" for r in chosen)
            + f" (search_batch {bases['vector']['search_batch_qps']:,.0f}/s)")
    else:
        add("vector queries over HTTP ≥ 0.5× in-process search", None, "vector workload not run")
    batch = [r for r in vec if r["form"] == "batch"]
    if batch:
        add("vector, batches over HTTP ≥ 0.5× in-process search_batch",
            all(r["vs_search_batch"] >= 0.5 for r in batch),
            ", ".join(f"{r['clients']} client{'s' * (r['clients'] > 1)} × {r['queries_per_request']}: {r['queries_per_s']:,.0f}/s = "
                      f"{r['vs_search_batch']:.2f}×" for r in batch)
            + f" (search_batch {bases['vector']['search_batch_qps']:,.0f}/s)")
    one = [r for r in rows if r["workload"] == "text" and r["form"] == "single" and not r["writer"] and r["clients"] == 1]
    if one:
        enc = bases["text"]["encode_p50_ms"]
        p50 = one[0]["p50_ms"]
        add("text, warm p50 at 1 client ≤ encoder p50 + 10 ms", p50 <= enc + 10,
            f"p50 {p50:.2f} ms vs encoder {enc:.2f} + 10 = {enc + 10:.2f} ms (in process search p50 "
            f"{bases['text']['search_p50_ms']:.2f} ms)")
    else:
        add("text, warm p50 at 1 client ≤ encoder p50 + 10 ms", None, "needs the text workload and 1 in --clients")
    errors = sum(r["errors"] for r in rows)
    add("0 errors", errors == 0, f"{errors} errors in {sum(r['requests'] + r.get('write_requests', 0) for r in rows):,} requests")
    for kind, b in bases.items():
        add(f"cold start ({kind}): serve → /api/health ok", None,
            f"{b['cold_start_s']:.2f} s (first answer of any kind at {b['listening_s']:.2f} s)")
    return out


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = benchmark_parser(__doc__, "serve_load")
    parser.add_argument("--workloads", default="vector,text", help="Comma-separated: vector, text.")
    parser.add_argument("--vectors", type=int, default=100_000, help="Vectors in the vector collection.")
    parser.add_argument("--dim", type=int, default=128, help="Their dimension.")
    parser.add_argument("--texts", type=int, default=20_000, help="Sentences in the text collection.")
    parser.add_argument("--encoder", default="minilm", help="The text collection's encoder.")
    parser.add_argument("--index", default="Flat", help="Index spec of both collections (Flat: exact).")
    parser.add_argument("--queries", type=int, default=1_000, help="Distinct queries of each workload.")
    parser.add_argument("--batch", type=int, default=64, help="Queries per search_batch call and per batch request.")
    parser.add_argument("--clients", type=int_list, default=[1, 16, 64], help="Concurrency levels, e.g. 1,16,64.")
    parser.add_argument("--batch-clients", type=int_list, default=[1], help="Concurrency of the vector batch rows.")
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of each HTTP row.")
    parser.add_argument("--warmup", type=float, default=3.0, help="Seconds of load before each row, not counted.")
    parser.add_argument("--write-batch", type=int, default=10, help="Items per write request of the writer.")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()
    kinds = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not kinds or set(kinds) - {"vector", "text"}:
        parser.error(f"--workloads takes vector and/or text, not {args.workloads!r}")
    if args.batch > 1024:
        parser.error("--batch is at most 1024, the server's limit of queries per request")

    # SIGTERM as Ctrl-C: the run ends through the with blocks, which stop the server and remove the folder.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bases: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
            for kind in kinds:
                base, more = run_workload(Workload(kind, args), args, Path(tmp))
                bases[kind] = base
                rows += more
    except KeyboardInterrupt:
        print("interrupted: the server was stopped and the temporary folder removed", file=sys.stderr)
        sys.exit(130)

    print_table(
        "in process (one caller) and cold start",
        ["workload", "items", "encoder", "index in use", "build s", "search_batch q/s", "search q/s",
         "p50 ms", "p95 ms", "p99 ms", "encode p50 ms", "cold start s"],
        [[b["workload"], f"{b['items']:,}", b["encoder"], b["index_in_use"], f"{b['build_seconds']:.1f}",
          f"{b['search_batch_qps']:,.0f}", f"{b['search_qps']:,.0f}", f"{b['search_p50_ms']:.2f}",
          f"{b['search_p95_ms']:.2f}", f"{b['search_p99_ms']:.2f}",
          f"{b['encode_p50_ms']:.2f}" if "encode_p50_ms" in b else "", f"{b['cold_start_s']:.2f}"]
         for b in bases.values()],
    )
    print_table(
        f"over HTTP: {args.duration:g} s a row, k={args.k}, batches of {args.batch}, "
        f"the writer adds {args.write_batch} items a request",
        ["workload", "request", "clients", "writer", "items", "requests", "errors", "queries/s", "p50 ms",
         "p95 ms", "p99 ms", "× search", "× search_batch", "writes/s", "items added", "loadgen CPU %",
         "server CPU %"],
        [[r["workload"], "1 query" if r["form"] == "single" else f"{r['queries_per_request']} queries", r["clients"],
          "yes" if r["writer"] else "no", f"{r['items_before']:,}", f"{r['requests']:,}", r["errors"],
          f"{r['queries_per_s']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}", f"{r['p99_ms']:.2f}",
          f"{r['vs_search']:.2f}", f"{r['vs_search_batch']:.2f}",
          f"{r['writes_per_s']:,.1f}" if r["writer"] else "", f"{r['items_added']:,}" if r["writer"] else "",
          f"{r['loadgen_cpu_pct']:.0f}",
          f"{r['server_cpu_pct']:.0f}"] for r in rows],
    )
    results = goals(bases, rows)
    print_table("goals", ["goal", "met", "numbers"],
                [[g["goal"], {True: "met", False: "NOT MET", None: "—"}[g["met"]], g["numbers"]] for g in results])
    for r in rows:
        if "first_error" in r:
            print(f"first error ({r['workload']}, {r['clients']} client{'s' * (r['clients'] > 1)}): {r['first_error']}")
    out = write_result("serve_load", {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "load_generator": "one asyncio loop, minimal HTTP/1.1 keep-alive client on asyncio streams, one connection a client",
        "in_process": list(bases.values()), "http": rows, "goals": results,
    }, args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
