"""Fast CPU text encoders: MiniLM run by torch, by ONNX Runtime and by ONNX Runtime with int8
weights (``minilm?backend=onnx|onnx-int8``).

    python benchmarks/cpu_encoders.py --docs 1000            # docs/s and SciFact nDCG@10 of each
    python benchmarks/cpu_encoders.py --docs 1000 --no-quality

docs/s: the first --docs SciFact documents (title + " " + text), the same batch size, best of
--repeat timed passes after one warm-up pass (the export, done once and cached, is not timed).
nDCG@10: SciFact's test queries through the project's evaluation (beir_quality), a full index of
the corpus with each backend. Goal: onnx-int8 at least 2x torch's docs/s, at most 0.01 nDCG@10
below it. Writes benchmarks/results/cpu_encoders.json.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_parser, print_table, write_result  # noqa: E402

from latentsearch.encoders import create_encoder  # noqa: E402
from latentsearch.encoders.onnx_export import int8_instruction_set  # noqa: E402
from latentsearch.evaluation.bench import beir_quality  # noqa: E402
from latentsearch.evaluation.datasets import document_text, load_beir  # noqa: E402

BACKENDS = ("torch", "onnx", "onnx-int8")


def main() -> int:
    parser = benchmark_parser(__doc__, "cpu_encoders", "scifact")
    parser.add_argument("--encoder", default="minilm", help="a sentence-transformers spec without backend=")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument("--no-quality", action="store_true", help="docs/s only, no SciFact nDCG@10")
    parser.add_argument("--texts", choices=["documents", "queries"], default="documents",
                        help="what is timed: SciFact's documents (long) or its queries (short texts)")
    args = parser.parse_args()

    dataset = load_beir(args.dataset)
    if args.texts == "queries":
        texts = list(dataset.queries.values())[: args.docs]
    else:
        texts = [document_text(doc) for doc in list(dataset.corpus.values())[: args.docs]]
    join = "&" if "?" in args.encoder else "?"
    isa = int8_instruction_set()
    results: dict[str, dict] = {}
    for backend in BACKENDS:
        spec = args.encoder + (f"{join}backend={backend}" if backend != "torch" else "")
        started = time.perf_counter()
        enc = create_encoder(spec)
        load_seconds = time.perf_counter() - started
        enc.encode_text(texts, batch_size=args.batch_size)  # warm-up
        best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            enc.encode_text(texts, batch_size=args.batch_size)
            best = min(best, time.perf_counter() - started)
        results[backend] = {"spec": enc.spec, "load_seconds": round(load_seconds, 2),
                            "docs_per_second": round(len(texts) / best, 1)}
        del enc
        if not args.no_quality:
            with tempfile.TemporaryDirectory() as tmp:
                quality = beir_quality(args.dataset, Path(tmp) / "c", spec, "Flat", batch_size=args.batch_size)
            results[backend]["ndcg@10"] = round(quality.metrics["ndcg@10"], 5)
            results[backend]["index_seconds"] = round(quality.index_seconds, 1)

    base = results["torch"]
    rows = []
    for backend, r in results.items():
        r["speedup"] = round(r["docs_per_second"] / base["docs_per_second"], 2)
        if "ndcg@10" in r:
            r["ndcg@10_loss"] = round(base["ndcg@10"] - r["ndcg@10"], 5)
        fmt = lambda key, spec: format(r[key], spec) if key in r else "-"  # noqa: E731
        rows.append([backend, f"{r['docs_per_second']:.1f}", f"{r['speedup']:.2f}x",
                     fmt("ndcg@10", ".5f"), fmt("ndcg@10_loss", "+.5f"), f"{r['load_seconds']:.2f}"])
    int8 = results["onnx-int8"]
    goal = int8["speedup"] >= 2 and ("ndcg@10_loss" not in int8 or int8["ndcg@10_loss"] <= 0.01)
    print_table(
        f"{args.encoder} on {len(texts)} SciFact {args.texts}, batch {args.batch_size}, best of {args.repeat}; "
        f"int8 instructions: {isa}",
        ["backend", "docs/s", "vs torch", "nDCG@10", "loss vs torch", "load s"],
        rows,
    )
    print(f"goal (onnx-int8 >= 2x torch at <= 0.01 nDCG@10 loss"
          f"{', quality not measured' if args.no_quality else ''}): {'met' if goal else 'NOT met'}")
    if isa in ("avx2", "none"):
        print(f"note: this CPU has no VNNI int8 instructions ({isa}); int8 gains less here")
    path = write_result("cpu_encoders", {
        "dataset": str(args.dataset), "encoder": args.encoder, "docs": len(texts), "batch_size": args.batch_size,
        "repeat": args.repeat, "int8_instruction_set": isa, "results": results, "goal_met": goal,
        "quality_measured": not args.no_quality,
    }, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
