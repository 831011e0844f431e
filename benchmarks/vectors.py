"""Adding precomputed vectors with metadata through the Python API, against raw FAISS, in one run.

    python benchmarks/vectors.py                      # 1,000,000 x 384 into SQLite, IVF1024,Flat
    python benchmarks/vectors.py --n 100000 --index HNSW32

The vectors are generated (seeded) into a float32 file first, outside the timings; both sides then
read it a chunk at a time, as a user loads precomputed vectors, so the benchmark holds one chunk at
a time. The raw side trains and fills a bare FAISS index of the same spec with the same vectors;
the latentsearch side also builds each vector's metadata, writes every vector and its metadata to
the store (in transactions) and keeps the change log. Reports vectors/s, the ratio and peak memory
(RSS).
Prints a table and writes benchmarks/results/vectors.json.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_parser, print_table, write_result  # noqa: E402

import latentsearch  # noqa: E402


def write_vectors(path: Path, n: int, dim: int, size: int) -> None:
    rng = np.random.default_rng(0)
    with open(path, "wb") as fh:
        for start in range(0, n, size):
            rng.standard_normal((min(size, n - start), dim), dtype=np.float32).tofile(fh)


def chunks(path: Path, n: int, dim: int, size: int):
    with open(path, "rb") as fh:
        for start in range(0, n, size):
            m = min(size, n - start)
            yield start, np.fromfile(fh, dtype=np.float32, count=m * dim).reshape(m, dim)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = benchmark_parser(__doc__, "vectors")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--index", default="IVF1024,Flat")
    parser.add_argument("--chunk", type=int, default=50_000, help="vectors per add() call")
    parser.add_argument("--vector-dtype", default="float32", choices=["float32", "float16"],
                        help="how the store keeps the vectors (the index holds float32 either way)")
    args = parser.parse_args()

    import faiss

    from latentsearch.indexes.faiss_index import FaissIndex

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "vectors.f32"
        write_vectors(data, args.n, args.dim, args.chunk)

        t0 = time.perf_counter()
        raw = FaissIndex(args.index, args.dim, "l2")  # the same training rule, without the store
        for start, x in chunks(data, args.n, args.dim, args.chunk):
            raw.add(np.arange(start, start + len(x), dtype=np.int64), x)
        raw_seconds = time.perf_counter() - t0
        del raw
        rss_after_raw = peak_rss_mib()

        col = latentsearch.create(Path(tmp) / "col", encoder=None, dim=args.dim, index=args.index, metric="l2",
                                  vector_dtype=args.vector_dtype)
        t0 = time.perf_counter()
        for start, x in chunks(data, args.n, args.dim, args.chunk):
            meta = [{"n": start + i, "group": (start + i) % 100} for i in range(len(x))]
            col.add(x, metadata=meta, batch_size=1000)
        assert col.index().ntotal == args.n  # waits for the index thread: every vector committed and searchable
        searchable = time.perf_counter() - t0
        col.flush()
        ours = time.perf_counter() - t0
        info = col.info()
        col.close()
    rows = [
        [f"raw FAISS {args.index} (train + add)", f"{raw_seconds:.1f}", f"{args.n / raw_seconds:,.0f}", "1.00"],
        ["latentsearch add(): committed and searchable (store, change log, index)", f"{searchable:.1f}",
         f"{args.n / searchable:,.0f}", f"{searchable / raw_seconds:.2f}"],
        ["latentsearch add() + flush (the same, and the index snapshot written)", f"{ours:.1f}",
         f"{args.n / ours:,.0f}", f"{ours / raw_seconds:.2f}"],
    ]
    print_table(f"{args.n:,} vectors of dimension {args.dim} with metadata (SQLite, {args.vector_dtype} rows); "
                "goal ≥ 50,000 vectors/s",
                ["path", "seconds", "vectors/s", "time ratio"], rows)
    print(f"peak RSS: {peak_rss_mib():,.0f} MiB (after the raw side: {rss_after_raw:,.0f} MiB); "
          f"store {info['store_bytes'] / 2**20:,.0f} MiB, index {info['index_bytes'] / 2**20:,.0f} MiB; faiss {faiss.__version__}")
    path = write_result("vectors", {
        "n": args.n, "dim": args.dim, "index": args.index, "vector_dtype": args.vector_dtype,
        "raw_seconds": round(raw_seconds, 2), "searchable_seconds": round(searchable, 2),
        "latentsearch_seconds": round(ours, 2), "vectors_per_second": round(args.n / ours),
        "peak_rss_mib": round(peak_rss_mib()), "store_bytes": info["store_bytes"], "index_bytes": info["index_bytes"],
    }, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
