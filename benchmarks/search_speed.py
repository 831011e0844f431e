"""Search speed through latentsearch against raw FAISS on the same index, in one run.

    python benchmarks/search_speed.py                       # 100,000 x 384, Flat, 1,000 queries, k=10
    python benchmarks/search_speed.py --index HNSW32
    python benchmarks/search_speed.py --n 2000 --queries 50 --skip-text   # a quick check

Batch throughput: random vectors (seeded) in a collection without an encoder; the same query
matrix goes to ``Collection.search_batch`` (queries checked and normalised, hits materialised
with their metadata, one store query per batch) and to ``index.search`` of the very FAISS
index object the collection holds (``col.index.index``, given already-normalised queries and
the search parameters the collection uses, e.g. efSearch for HNSW).
Queries/s of each, best of ``--repeat`` runs, and their ratio (goal ≥ 0.5 at HNSW32 efSearch 16).

Single-query latency: ``col.search(text)`` on a small MiniLM collection of SciFact abstracts,
p50/p99 over SciFact claims, next to the bare ``encoder.encode_text([text])`` time.
Prints a table and writes benchmarks/results/search_speed.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, benchmark_parser, print_table, write_result  # noqa: E402

import latentsearch  # noqa: E402
from latentsearch.vectors import prepare  # noqa: E402


def best_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def batch_throughput(args: argparse.Namespace, folder: Path) -> dict:
    rng = np.random.default_rng(0)
    col = latentsearch.create(folder / "vectors", encoder=None, dim=args.dim, index=args.index)
    t0 = time.perf_counter()
    for start in range(0, args.n, 50_000):
        x = rng.standard_normal((min(50_000, args.n - start), args.dim), dtype=np.float32)
        col.add(x, metadata=[{"n": start + i, "group": (start + i) % 100} for i in range(len(x))], batch_size=5000)
    col.flush()
    build_seconds = time.perf_counter() - t0
    xq = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    index = col.index()
    raw = index.index  # the FAISS object the collection searches
    xq_ready = prepare(xq, args.dim, col.config.metric)
    batches = [slice(s, s + args.batch) for s in range(0, args.queries, args.batch)]

    def ours() -> None:
        for b in batches:
            rows = col.search_batch(xq[b], k=args.k)
            assert sum(len(r) for r in rows) == len(xq[b]) * min(args.k, args.n)

    # The search parameters the collection uses (efSearch for HNSW, nprobe for IVF), so both
    # sides do the same work.
    params, keep = index._params(None)
    opts = {"params": params} if params is not None else {}

    def bare() -> None:
        for b in batches:
            raw.search(xq_ready[b], args.k, **opts)

    ours(), bare()  # warm: page cache, FAISS threads, the store's connection
    raw_s, ours_s = best_time(bare, args.repeat), best_time(ours, args.repeat)
    # Same answers: the collection returns the ids raw FAISS finds.
    _, I = raw.search(xq_ready[:20], args.k, **opts)
    got = [[h.id for h in row] for row in col.search_batch(xq[:20], k=args.k)]
    agree = float(np.mean([len(set(g) & set(i.tolist())) / args.k for g, i in zip(got, I)]))
    del keep
    col.close()
    return {
        "index_in_use": index.describe(),
        "build_seconds": build_seconds,
        "raw_qps": args.queries / raw_s,
        "latentsearch_qps": args.queries / ours_s,
        "ratio": raw_s / ours_s,
        "same_ids": agree,
    }


def text_latency(args: argparse.Namespace, folder: Path) -> dict:
    corpus = DATASETS / "scifact" / "corpus.jsonl"
    queries = DATASETS / "scifact" / "queries.jsonl"
    docs, claims = [], []
    with corpus.open() as fh:
        for line in fh:
            d = json.loads(line)
            docs.append(f"{d.get('title', '')}. {d.get('text', '')}")
            if len(docs) >= args.docs:
                break
    with queries.open() as fh:
        claims = [json.loads(line)["text"] for line in fh][: args.text_queries]
    col = latentsearch.create(folder / "texts", encoder=args.encoder, index="Flat")
    t0 = time.perf_counter()
    col.add(docs, batch_size=64)
    col.flush()
    index_seconds = time.perf_counter() - t0
    encoder = col.encoder
    for q in claims[:5]:  # warm
        col.search(q, k=args.k)
        encoder.encode_text([q])
    search_ms, encode_ms = [], []
    for q in claims:
        t0 = time.perf_counter()
        col.search(q, k=args.k)
        search_ms.append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        encoder.encode_text([q])
        encode_ms.append(1000 * (time.perf_counter() - t0))
    col.close()
    s, e = np.array(search_ms), np.array(encode_ms)
    return {
        "encoder": col.config.encoder,
        "documents": len(docs),
        "queries": len(claims),
        "index_seconds": index_seconds,
        "search_p50_ms": float(np.percentile(s, 50)),
        "search_p99_ms": float(np.percentile(s, 99)),
        "encode_p50_ms": float(np.percentile(e, 50)),
        "encode_p99_ms": float(np.percentile(e, 99)),
        "overhead_p50_ms": float(np.percentile(s - e, 50)),
    }


def main() -> int:
    parser = benchmark_parser(__doc__, "search_speed")
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the collection")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--index", default="Flat", help="FAISS index spec, e.g. Flat or HNSW32")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=None, help="queries per search_batch call [default: all]")
    parser.add_argument("-k", "--k", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each side; the best counts")
    parser.add_argument("--skip-text", action="store_true", help="leave out the MiniLM latency part")
    parser.add_argument("--encoder", default="minilm", help="encoder of the text latency part")
    parser.add_argument("--docs", type=int, default=2000, help="SciFact abstracts in the text collection")
    parser.add_argument("--text-queries", type=int, default=200, help="SciFact claims timed one by one")
    args = parser.parse_args()
    args.batch = args.batch or args.queries

    import faiss

    from latentsearch.devices import faiss_gpu_count

    with tempfile.TemporaryDirectory() as tmp:
        batch = batch_throughput(args, Path(tmp))
        text = None
        if not args.skip_text:
            if not (DATASETS / "scifact").is_dir():
                print(f"no SciFact data under {DATASETS}; leaving out the text latency part", file=sys.stderr)
            else:
                text = text_latency(args, Path(tmp))

    rows = [
        [f"raw FAISS {batch['index_in_use']} index.search", f"{batch['raw_qps']:,.0f}", "1.00"],
        ["latentsearch search_batch (hits + metadata)", f"{batch['latentsearch_qps']:,.0f}", f"{batch['ratio']:.2f}"],
    ]
    print_table(
        f"{args.n:,} vectors of dimension {args.dim}, {args.queries:,} queries in batches of {args.batch:,}, "
        f"k={args.k}; goal ratio ≥ 0.5",
        ["path", "queries/s", "ratio"],
        rows,
    )
    print(f"ids agree with raw FAISS: {batch['same_ids']:.3f}; build {batch['build_seconds']:.1f} s; "
          f"faiss {faiss.__version__}, GPUs used by FAISS: {faiss_gpu_count()}")
    if text:
        print_table(
            f"single text query, {text['encoder']} over {text['documents']:,} SciFact abstracts, "
            f"{text['queries']} claims, k={args.k}",
            ["step", "p50 ms", "p99 ms"],
            [
                ["encoder.encode_text (one query) alone", f"{text['encode_p50_ms']:.2f}", f"{text['encode_p99_ms']:.2f}"],
                ["col.search(q) (encode + search + hits)", f"{text['search_p50_ms']:.2f}", f"{text['search_p99_ms']:.2f}"],
            ],
        )
        print(f"search minus encode, p50: {text['overhead_p50_ms']:.2f} ms")
    out = write_result(
        "search_speed",
        {
            "n": args.n,
            "dim": args.dim,
            "index": args.index,
            "queries": args.queries,
            "batch": args.batch,
            "k": args.k,
            "repeat": args.repeat,
            "faiss_gpus": faiss_gpu_count(),
            **batch,
            "text": text,
        },
        args.out,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
