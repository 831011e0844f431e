"""SciFact (BEIR) retrieval quality with the default encoder, against MTEB's published scores.

    python benchmarks/scifact.py                # index into a temporary collection, score, compare
    python benchmarks/scifact.py --collection /tmp/scifact --index HNSW32   # reuse an encoding

Prints a table (ours, published, difference) and writes benchmarks/results/scifact.json.
Exits 1 when a metric is further than --tolerance from the published value.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, benchmark_parser, print_table, write_result  # noqa: E402

from latentsearch.evaluation.bench import beir_quality  # noqa: E402

REFERENCE = DATASETS / "reference" / "all-MiniLM-L6-v2_reference_scores.json"
COMPARED = {"ndcg@10": "ndcg_at_10", "map@10": "map_at_10", "mrr@10": "mrr_at_10",
            "recall@10": "recall_at_10", "recall@100": "recall_at_100", "ndcg@100": "ndcg_at_100",
            "ndcg@1": "ndcg_at_1", "precision@10": "precision_at_10"}


def main() -> int:
    parser = benchmark_parser(__doc__, "scifact", "scifact")
    parser.add_argument("--collection", type=Path, help="collection folder to create or reuse")
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--index", default="Flat")
    parser.add_argument("--tolerance", type=float, default=0.005)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        where = args.collection or Path(tmp) / "scifact"
        result = beir_quality(args.dataset, where, args.encoder, args.index, batch_size=args.batch_size)
    published = json.loads(REFERENCE.read_text())["tasks"]["SciFact"]
    rows, failed = [], []
    for ours_key, ref_key in COMPARED.items():
        ours, ref = result.metrics[ours_key], published[ref_key]
        rows.append([ours_key, ours, ref, ours - ref])
        if args.encoder == "minilm" and args.index == "Flat" and abs(ours - ref) > args.tolerance:
            failed.append(ours_key)
    print_table(
        f"SciFact test: {result.queries} queries over {result.documents} documents "
        f"({args.encoder}, {args.index}; indexed in {result.index_seconds:.1f} s, "
        f"searched in {result.search_seconds:.2f} s)",
        ["metric", "latentsearch", "published (MTEB)", "difference"],
        rows,
    )
    path = write_result("scifact", {
        "dataset": str(args.dataset), "encoder": args.encoder, "index": args.index,
        "queries": result.queries, "documents": result.documents,
        "index_seconds": round(result.index_seconds, 2), "search_seconds": round(result.search_seconds, 3),
        "metrics": result.metrics, "published": {k: published[v] for k, v in COMPARED.items()},
        "within_tolerance": not failed, "tolerance": args.tolerance,
    }, args.out)
    print(f"wrote {path}")
    if failed:
        print(f"outside ±{args.tolerance} of the published scores: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
