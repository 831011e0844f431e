"""An IVF index built in memory versus on disk (in-process shards, and Ray tasks): build time,
recall@10 against exact search at equal nprobe, and the resident memory of a process serving it.

    python benchmarks/ondisk_ivf.py                       # 1,000,000 × 384, IVF1024,PQ32, nprobe 16
    python benchmarks/ondisk_ivf.py --ray local           # also the shards as Ray tasks
    python benchmarks/ondisk_ivf.py --n 10000000 --ray auto   # a bigger machine, a cluster

Synthetic clustered vectors (``--clusters`` Gaussian blobs in a 32-dimensional space, mapped
linearly to ``--dim`` dimensions with a little noise; cosine) go into one collection of
precomputed vectors; the index is then rebuilt from the store as ``--index`` in memory, on disk
with in-process shards, and (``--ray``) on disk with Ray tasks. Each index is served by a fresh
process that opens the collection, loads the index and searches ``--queries`` held-out queries
(the numbers come from it, not from the process that built the index): its resident memory
(``VmRSS``, split into anonymous memory and mapped file pages) after loading and after searching,
and recall@10 against exact search. The lists file of an on-disk index is read through the page
cache; pages that the build left in the cache are not dropped (the machine is shared), so the
searches are warm. Prints a table and writes benchmarks/results/ondisk_ivf.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_parser, print_table, settings, write_result  # noqa: E402

LATENT = 32  # the data's own dimensions
SPREAD = 0.5  # of a blob around its centre, per latent dimension (centres: unit normal)
NOISE = 0.05  # added in the full dimension

CHILD = r"""
import json, sys, time, resource
import numpy as np

def status():
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields

import faiss  # before the first measurement: the library's own memory is not the index's
import latentsearch
col = latentsearch.open(sys.argv[1])
xq = np.load(sys.argv[2])
before = status()
index = col.index()
loaded = status()
t0 = time.perf_counter()
D, I = index.search(xq, 10)
seconds = time.perf_counter() - t0
searched = status()
np.save(sys.argv[3], I)
info = index.on_disk_info()
print(json.dumps({"before": before, "loaded": loaded, "searched": searched, "search_seconds": seconds,
                  "index_ram_bytes": index.memory_bytes(), "lists_bytes": info.get("index_lists_bytes"),
                  "lists_resident_bytes": info.get("index_lists_resident_bytes"), "describe": index.describe()}))
col.close()
"""


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """``n`` unit vectors of dimension ``dim``: Gaussian blobs around ``clusters`` centres in a
    :data:`LATENT`-dimensional space, mapped to ``dim`` dimensions by one random linear map,
    plus a little noise (embeddings have far fewer degrees of freedom than dimensions; isotropic
    384-d noise would leave no neighbours for any index to find)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, LATENT)).astype(np.float32)
    lift = rng.standard_normal((LATENT, dim)).astype(np.float32) / np.sqrt(LATENT)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        latent = centers[rng.integers(0, clusters, m)] + SPREAD * rng.standard_normal((m, LATENT)).astype(np.float32)
        out[start : start + m] = latent @ lift + NOISE * rng.standard_normal((m, dim)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def serve(path: Path, queries: Path, found: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(queries), str(found)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the serving process failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist())]))


def mib(n: float | None) -> str:
    return "—" if n is None else f"{n / 2**20:,.1f}"


def main() -> int:
    parser = benchmark_parser(__doc__, "ondisk_ivf")
    parser.add_argument("--n", type=int, default=1_000_000, help="stored vectors")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--index", default="IVF1024,PQ32", help="an IVF spec")
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=None, help="shards of the on-disk builds [default: by size]")
    parser.add_argument("--ray", default=None, metavar="ADDRESS", help="also build the shards on Ray ('local', 'auto', an address)")
    parser.add_argument("--folder", type=Path, default=None, help="where the collection goes [default: a temporary folder]")
    args = parser.parse_args()

    import latentsearch
    from latentsearch.vectors import exact_search

    spec = f"{args.index}?nprobe={args.nprobe}"
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        path, queries, found = Path(tmp) / "col", Path(tmp) / "queries.npy", Path(tmp) / "found.npy"
        t0 = time.perf_counter()
        vectors = clustered(args.n + args.queries, args.dim, args.clusters, seed=0)
        vectors, xq = vectors[: args.n], vectors[args.n :]  # queries: new points of the same clusters
        np.save(queries, xq)
        with latentsearch.create(path, encoder=None, dim=args.dim, index="Flat") as col:
            col.add(vectors)
        print(f"stored {args.n:,} vectors in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        t0 = time.perf_counter()
        ids = np.arange(1, args.n + 1, dtype=np.int64)  # the store's ids, in the order added
        blocks = ((ids[s : s + 50_000], vectors[s : s + 50_000]) for s in range(0, args.n, 50_000))
        _, truth = exact_search(xq, blocks, 10, "cosine")
        print(f"exact neighbours in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        del vectors

        builds = [("in memory", {}), ("on disk, in-process shards", {"on_disk": True, "shards": args.shards})]
        if args.ray:
            builds.append((f"on disk, Ray tasks ({args.ray})", {"on_disk": True, "ray": args.ray, "shards": args.shards}))
        for label, options in builds:
            with latentsearch.open(path) as col:
                t0 = time.perf_counter()
                col.reindex(spec, **options)
                build = time.perf_counter() - t0
            served = serve(path, queries, found)
            served["build_seconds"] = build
            served["recall@10"] = recall_at_10(np.load(found), truth)
            results[label] = served
            print(f"[{label}] built in {build:.1f} s, recall@10 {served['recall@10']:.4f}", file=sys.stderr)

    base = results["in memory"]
    rows = []
    for label, r in results.items():
        index_rss = r["loaded"]["VmRSS"] - r["before"]["VmRSS"]
        rows.append([
            label, f"{r['build_seconds']:.1f}", f"{r['build_seconds'] / base['build_seconds']:.2f}×",
            f"{r['recall@10']:.4f}", mib(index_rss), mib(r["searched"]["VmRSS"]),
            mib(r["searched"]["RssAnon"]), mib(r["searched"]["RssFile"]),
            f"{r['searched']['RssAnon'] / base['searched']['RssAnon']:.2f}×",
            mib(r["lists_bytes"]), mib(r["lists_resident_bytes"]),
            f"{1000 * r['search_seconds'] / args.queries:.2f}",
        ])
    print_table(
        f"{args.index}, nprobe {args.nprobe}: {args.n:,} × {args.dim} clustered vectors, {args.queries} queries",
        ["build", "build s", "vs memory", "recall@10", "RSS of the load MiB", "RSS after search MiB", "anon MiB",
         "file MiB", "anon vs memory", "lists file MiB", "lists resident MiB", "ms/query"],
        rows,
    )
    out = write_result("ondisk_ivf", {"settings": settings(args),
                                      "results": results}, args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
