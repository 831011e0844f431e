"""Search over HTTP (``latentsearch serve``) under concurrent clients, against in-process search.

    python benchmarks/serve_load.py                                  # MiniLM, 20,000 texts, 16 and 64 clients
    python benchmarks/serve_load.py --encoder hashing:384 --n 5000 --requests 500   # a quick check, no model

A collection of ``--n`` synthetic sentences (seeded) is built with ``--encoder``. In process,
``Collection.search_batch`` answers the query set in batches of ``--batch`` (queries/s, best of
three), and ``Collection.search`` answers queries one by one (latency p50/p95/p99). Then the same
collection is served by a ``latentsearch serve`` subprocess on a free port, and ``--clients``
concurrent clients (one asyncio loop, one httpx connection each) send ``--requests`` single-text
searches in all (``POST /api/collections/{name}/search``); each row gives queries/s over the
wall time and the p50/p95/p99 latency a client saw, including HTTP and JSON. The load generator
runs on the same machine as the server and takes CPU from it: on few cores, read the HTTP rows
as a lower bound. Prints a table and writes benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import asyncio
import os
import random
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

WORDS = (
    "ship sea salt star bread yeast whale song code sort hash vaccine sleep train plane river "
    "mountain protein cell orbit galaxy market price engine rain forest city music paint law"
).split()


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) for _ in range(n)]


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {f"p{p}_ms": float(np.percentile(ms, p)) for p in (50, 95, 99)}


def in_process(path: Path, queries: list[str], k: int, batch: int, singles: int) -> list[dict[str, Any]]:
    with latentsearch.open(path) as col:
        col.search_batch(queries[:batch], k=k)  # warm
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for s in range(0, len(queries), batch):
                col.search_batch(queries[s : s + batch], k=k)
            best = min(best, time.perf_counter() - t0)
        times = []
        for q in queries[:singles]:
            t0 = time.perf_counter()
            col.search(q, k=k)
            times.append(time.perf_counter() - t0)
    return [
        {"setup": f"in process, search_batch of {batch}", "clients": 1, "queries_per_s": len(queries) / best},
        {"setup": "in process, search", "clients": 1, "queries_per_s": len(times) / sum(times), **percentiles(times)},
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(path: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    here = Path(latentsearch.__file__).resolve().parents[1]  # the server runs the latentsearch this script imported
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(here), os.environ.get("PYTHONPATH")]))}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "latentsearch.cli", "serve", str(path), "--port", str(port), "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server was not ready within 300 s:\n{log.read_text()}")


async def load(url: str, name: str, queries: list[str], k: int, clients: int, requests: int) -> dict[str, Any]:
    """``clients`` concurrent loops sending ``requests`` searches in all; latencies per request."""
    import httpx

    latencies: list[float] = []
    errors = 0
    counter = iter(range(min(4 * clients, requests)))  # the warm-up's share
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:

        async def client() -> None:
            nonlocal errors
            for i in counter:
                t0 = time.perf_counter()
                r = await http.post(f"/api/collections/{name}/search", json={"query": queries[i % len(queries)], "k": k})
                latencies.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        await asyncio.gather(*(client() for _ in range(min(clients, 8))))  # warm the connections
        latencies.clear()
        counter = iter(range(requests))
        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {"setup": "HTTP, POST …/search", "clients": clients, "queries_per_s": requests / wall,
            **percentiles(latencies), "errors": errors}


def main() -> None:
    parser = benchmark_parser(__doc__, "serve_load")
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--index", default="Flat")
    parser.add_argument("--n", type=int, default=20_000, help="Items in the collection.")
    parser.add_argument("--queries", type=int, default=1_000, help="Distinct query texts.")
    parser.add_argument("--requests", type=int, default=2_000, help="HTTP searches per concurrency level.")
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--batch", type=int, default=64, help="Batch size of the in-process search_batch.")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        path = Path(tmp) / "load"
        t0 = time.perf_counter()
        with latentsearch.create(path, encoder=args.encoder, index=args.index) as col:
            col.add(sentences(args.n, seed=0), metadata=[{"n": i} for i in range(args.n)], batch_size=256)
        build = time.perf_counter() - t0
        queries = sentences(args.queries, seed=1)
        rows = in_process(path, queries, args.k, args.batch, singles=min(300, len(queries)))
        proc, url = start_server(path, Path(tmp) / "server.log")
        try:
            for clients in args.clients:
                rows.append(asyncio.run(load(url, "load", queries, args.k, clients, args.requests)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    table = [[r["setup"], r["clients"], f"{r['queries_per_s']:,.1f}", *(f"{r[p]:.2f}" if p in r else "" for p in
             ("p50_ms", "p95_ms", "p99_ms")), r.get("errors", "")] for r in rows]
    print_table(f"search over HTTP vs in process: {args.n:,} items, {args.encoder}, {args.index}, k={args.k}",
                ["setup", "clients", "queries/s", "p50 ms", "p95 ms", "p99 ms", "errors"], table)
    out = write_result("serve_load", {
        "encoder": args.encoder, "index": args.index, "items": args.n, "k": args.k, "build_seconds": round(build, 1),
        "requests_per_level": args.requests, "rows": rows,
    }, args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
