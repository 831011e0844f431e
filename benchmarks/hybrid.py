"""SciFact (BEIR) nDCG@10 of dense, lexical and hybrid search side by side, against published scores.

    python benchmarks/hybrid.py                                  # index into a temporary collection
    python benchmarks/hybrid.py --collection /tmp/scifact        # create once, reuse afterwards

The corpus is encoded once (minilm, Flat); the three modes search the same collection. Dense is
compared with MTEB's all-MiniLM-L6-v2 score (0.645), lexical with BM25 in the BEIR paper
(Thakur et al., 2021: 0.665; Elasticsearch's BM25, not SQLite's FTS5 ``bm25()`` with the porter
stemmer, so only roughly comparable). Writes benchmarks/results/hybrid.json.
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
BM25_SCIFACT = 0.665  # BEIR (Thakur et al., 2021), Table 2, BM25 nDCG@10 on SciFact
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def main() -> int:
    parser = benchmark_parser(__doc__, "hybrid", "scifact")
    parser.add_argument("--collection", type=Path, help="collection folder to create or reuse")
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--index", default="Flat")
    args = parser.parse_args()

    minilm = json.loads(REFERENCE.read_text())["tasks"]["SciFact"]["ndcg_at_10"] if REFERENCE.exists() else 0.645
    published = {"dense": minilm, "lexical": BM25_SCIFACT, "hybrid": None}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        where = args.collection or Path(tmp) / "scifact"
        for mode in ("dense", "lexical", "hybrid"):
            results[mode] = beir_quality(
                args.dataset, where, args.encoder, args.index, batch_size=args.batch_size, mode=mode
            )
    first = results["dense"]
    rows = []
    for mode, result in results.items():
        ref = published[mode]
        ndcg = result.metrics["ndcg@10"]
        rows.append(
            [mode, *(result.metrics[m] for m in METRICS),
             "" if ref is None else f"{ref:.3f}", "" if ref is None else f"{ndcg - ref:+.4f}",
             f"{result.search_seconds:.2f}"]
        )
    print_table(
        f"SciFact test: {first.queries} queries over {first.documents} documents "
        f"({args.encoder}, {args.index}; indexed in {first.index_seconds:.1f} s)",
        ["mode", *METRICS, "published nDCG@10", "difference", "search s"],
        rows,
    )
    path = write_result("hybrid", {
        "dataset": str(args.dataset), "encoder": args.encoder, "index": args.index,
        "queries": first.queries, "documents": first.documents,
        "index_seconds": round(first.index_seconds, 2),
        "modes": {
            mode: {"metrics": r.metrics, "search_seconds": round(r.search_seconds, 3), "published_ndcg@10": published[mode]}
            for mode, r in results.items()
        },
        "published_sources": {
            "dense": "MTEB all-MiniLM-L6-v2 SciFact ndcg_at_10",
            "lexical": "BEIR (Thakur et al., 2021) BM25, Elasticsearch",
        },
    }, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
