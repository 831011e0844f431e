"""Ingest overhead: the whole `latentsearch index` pipeline against a bare encode, in one run.

    python benchmarks/ingest.py                 # the SciFact corpus, all 5,183 documents
    python benchmarks/ingest.py --limit 1000    # quicker

Both sides use the same model, batch size and texts (title + " " + text). The bare side is
`SentenceTransformer.encode` over the list; the pipeline side writes the corpus as JSONL and runs
`Collection.index_paths` (read, chunk check, encode, store, index; Flat index, SQLite) on it.
The model is loaded before either clock starts. Prints a table, writes benchmarks/results/ingest.json.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_parser, print_table, write_result  # noqa: E402

import latentsearch  # noqa: E402
from latentsearch.evaluation.datasets import document_text, load_beir  # noqa: E402
from latentsearch.ingest.sources import RecordFields  # noqa: E402


def main() -> int:
    parser = benchmark_parser(__doc__, "ingest", "scifact")
    parser.add_argument("--encoder", default="minilm")
    parser.add_argument("--limit", type=int, default=0, help="first N documents only (0: all)")
    args = parser.parse_args()

    corpus = load_beir(args.dataset).corpus
    ids = list(corpus)[: args.limit or None]
    texts = [document_text(corpus[i]) for i in ids]
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "corpus.jsonl"
        with open(jsonl, "w") as fh:
            for i, t in zip(ids, texts):
                fh.write(json.dumps({"_id": i, "text": t}) + "\n")
        col = latentsearch.create(Path(tmp) / "col", encoder=args.encoder, index="Flat")
        encoder = col.encoder  # loaded outside both clocks
        encoder.encode_text(texts[:8], args.batch_size)  # warm up

        t0 = time.perf_counter()
        if hasattr(encoder, "model"):
            encoder.model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False)
        else:
            encoder.encode_text(texts, args.batch_size)
        bare = time.perf_counter() - t0

        t0 = time.perf_counter()
        report = col.index_paths([jsonl], RecordFields(), batch_size=args.batch_size, chunking=None)
        col.flush()
        pipeline = time.perf_counter() - t0
        col.close()
    assert report.added == len(texts), report.to_dict()
    ratio = pipeline / bare
    rows = [
        ["bare SentenceTransformer.encode", f"{bare:.1f}", f"{len(texts) / bare:.1f}", "1.00"],
        ["latentsearch index (read, encode, store, index)", f"{pipeline:.1f}", f"{len(texts) / pipeline:.1f}", f"{ratio:.2f}"],
    ]
    print_table(f"Ingest of {len(texts)} documents ({args.encoder}, batch {args.batch_size}); goal: ratio ≤ 1.10",
                ["path", "seconds", "docs/s", "ratio"], rows)
    stages = {k: round(v, 2) for k, v in report.stages.items()}
    print(f"pipeline stages, busy seconds (overlapping): {stages}")
    path = write_result("ingest", {
        "documents": len(texts), "encoder": args.encoder, "batch_size": args.batch_size,
        "bare_seconds": round(bare, 2), "pipeline_seconds": round(pipeline, 2), "ratio": round(ratio, 3),
        "stages": stages,
    }, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
