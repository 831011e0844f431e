"""Encoding on Ray against the single-process pipeline, on the same SciFact documents.

    python benchmarks/ray_encoding.py --docs 2000                  # MiniLM, a local Ray cluster
    python benchmarks/ray_encoding.py --docs 2000 --actors 1,2,4,8 # on a machine with more cores
    python benchmarks/ray_encoding.py --address head:6379          # an existing cluster

Each row indexes the first --docs SciFact documents (title + text, one JSONL file) into a fresh
collection (Flat index, SQLite): ``local`` is ``index_paths`` in one process, ``ray N`` the same
with ``engine="ray", actors=N`` (the driver writes, N actors read and encode). Reported: wall time,
documents/s (inputs; long documents become several passages, all added), the ratio to the local run, and the seconds until the first batch was committed (for
Ray: the pool's start-up, each actor loading its model). The cluster's own start is timed apart.
The collections must come out equal: the same keys, vectors within float rounding (checked).
Writes benchmarks/results/ray_encoding.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_parser, print_table, write_result  # noqa: E402

from latentsearch.collection import Collection  # noqa: E402
from latentsearch.distributed.cluster import connect  # noqa: E402
from latentsearch.evaluation.datasets import document_text, load_beir  # noqa: E402


def run(folder: Path, corpus: Path, encoder: str, batch_size: int, actors: int | None) -> tuple[dict, Collection]:
    col = Collection.create(folder, encoder=encoder, index="Flat")
    first: list[float] = []
    started = time.perf_counter()

    def progress(_: int) -> None:
        if not first:
            first.append(time.perf_counter() - started)

    engine = {"engine": "ray", "actors": actors} if actors else {}
    report = col.index_paths([corpus], batch_size=batch_size, progress=progress, **engine)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "docs_per_second": round(report.inputs / seconds, 1),
            "first_batch_seconds": round(first[0], 2), "added": report.added}, col


def vectors_by_key(col: Collection) -> dict[str, np.ndarray]:
    items = col.get(col.store.ids().tolist())
    _, vectors = col.store.vectors([i.id for i in items])
    return {i.key: v for i, v in zip(items, vectors)}


def main() -> int:
    parser = benchmark_parser(__doc__, "ray_encoding", "scifact")
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--actors", default="1,2", help="comma-separated actor counts, one row each")
    parser.add_argument("--address", default="local", help="the Ray cluster: 'local' starts one here")
    args = parser.parse_args()

    dataset = load_beir(args.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        with open(corpus, "w") as fh:
            for doc_id, doc in list(dataset.corpus.items())[: args.docs]:
                fh.write(json.dumps({"_id": doc_id, "text": document_text(doc)}) + "\n")
        results: dict[str, dict] = {}
        local, reference = run(Path(tmp) / "local", corpus, args.encoder, args.batch_size, None)
        results["local"] = local
        expected = vectors_by_key(reference)
        reference.close()
        started = time.perf_counter()
        ray = connect(args.address)
        cluster = {"start_seconds": round(time.perf_counter() - started, 2), "resources": ray.cluster_resources()}
        for n in [int(a) for a in args.actors.split(",")]:
            row, col = run(Path(tmp) / f"ray{n}", corpus, args.encoder, args.batch_size, n)
            got = vectors_by_key(col)
            col.close()
            assert got.keys() == expected.keys(), "the Ray run stored other items"
            row["min_cosine_vs_local"] = round(min(float(got[k] @ expected[k]) for k in got), 6)
            results[f"ray {n}"] = row
    rows = []
    for name, r in results.items():
        r["vs_local"] = round(r["docs_per_second"] / local["docs_per_second"], 2)
        rows.append([name, f"{r['seconds']:.1f}", f"{r['docs_per_second']:.1f}", f"{r['vs_local']:.2f}x",
                     f"{r['first_batch_seconds']:.1f}", str(r.get("min_cosine_vs_local", "-"))])
    print_table(
        f"{args.encoder} on {args.docs} SciFact documents, batch {args.batch_size}; "
        f"Ray cluster start {cluster['start_seconds']:.1f} s, {cluster['resources'].get('CPU', 0):g} CPUs",
        ["engine", "wall s", "docs/s", "vs local", "first batch s", "min cosine vs local"],
        rows,
    )
    path = write_result("ray_encoding", {"docs": args.docs, "encoder": args.encoder, "batch_size": args.batch_size,
                                         "cluster": cluster, "results": results}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
