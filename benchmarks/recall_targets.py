"""Recall targets: index specs with ``?recall=R`` against their defaults, on fresh queries.

    python benchmarks/recall_targets.py                         # 100,000 uniform unit vectors, d = 64
    python benchmarks/recall_targets.py --data clustered        # the same on clustered vectors
    python benchmarks/recall_targets.py --n 20000 --spec 'HNSW16?recall=0.95'    # a quick check

Each spec builds a collection of ``--n`` vectors (``--data uniform``: random unit vectors, the
hard case; ``clustered``: 100 Gaussian clusters, like real embeddings), which tunes itself at
the end of the write that built the index (held-out vectors of its own). ``--queries`` fresh
vectors from the same distribution, not in the collection, are searched with the index's default
parameter and with the tuned one; recall@10 is against exact search, queries/s are one batch,
best of three. ``auto`` is measured at the size where it leaves Flat (its Flat limit is lowered to
``--n`` when ``--n`` is below it). Prints a table and writes benchmarks/results/recall_targets.json.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_parser, print_table, settings, write_result  # noqa: E402

import latentsearch  # noqa: E402
from latentsearch.evaluation.metrics import recall_against_exact  # noqa: E402
from latentsearch.indexes import selection  # noqa: E402
from latentsearch.vectors import knn, normalize  # noqa: E402

SPECS = ["HNSW32?recall=0.95", "IVF1024,Flat?recall=0.95", "auto"]


def data(kind: str, n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return normalize(rng.standard_normal((n, dim)).astype(np.float32))
    centres = rng.standard_normal((100, dim)).astype(np.float32)
    return normalize(centres[rng.integers(0, 100, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32))


def qps(index: object, q: np.ndarray, options: dict | None) -> tuple[np.ndarray, float]:
    best, I = float("inf"), None
    for _ in range(3):
        t0 = time.perf_counter()
        _, I = index.search(q, 10, options=options)  # type: ignore[attr-defined]
        best = min(best, time.perf_counter() - t0)
    return I, len(q) / best


def main() -> int:
    parser = benchmark_parser(__doc__, "recall_targets")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--data", choices=["uniform", "clustered"], default="uniform")
    parser.add_argument("--spec", dest="specs", action="append", help=f"an index spec (repeatable) [default: {', '.join(SPECS)}]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    x = data(args.data, args.n + args.queries, args.dim, args.seed)
    base, q = x[: args.n], x[args.n:]
    _, gt = knn(q, base, 10, "ip")
    selection.AUTO_FLAT_LIMIT = min(selection.AUTO_FLAT_LIMIT, args.n)
    rows, results = [], []
    for spec in args.specs or SPECS:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            with latentsearch.create(Path(tmp) / "c", encoder=None, dim=args.dim, index=spec) as col:
                col.add(base)
                seconds = time.perf_counter() - t0
                index = col.index()
                tuned = dict(index.search_options)
                I0, q0 = qps(index, q, {})  # no options: the index type's defaults (efSearch 128, nprobe nlist/8)
                I1, q1 = qps(index, q, None)  # the index's own: tuned
                r0, r1 = recall_against_exact(I0 - 1, gt, 10), recall_against_exact(I1 - 1, gt, 10)
                info = col.info()
        results.append({"spec": spec, "index": index.factory, "tuned": tuned, "default_recall": r0,
                        "tuned_recall": r1, "default_qps": q0, "tuned_qps": q1, "build_s": seconds,
                        "tuning": info.get("index_tuning")})
        rows.append([spec, index.factory, f"{r0:.3f}", f"{q0:,.0f}", str(tuned or "-"),
                     f"{r1:.3f}", f"{q1:,.0f}", f"{seconds:.0f}"])
        print(f"[{spec}] done", file=sys.stderr)
    print_table(
        f"recall@10 on {args.queries} fresh queries, {args.n:,} {args.data} vectors of dimension {args.dim}",
        ["spec", "index", "default recall", "q/s", "tuned", "recall", "q/s", "build s"], rows,
    )
    path = write_result("recall_targets", {"settings": settings(args),
                                           "results": results}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
