"""Image retrieval quality on CIFAR-10 test images: precision@k and mAP per class, two encoders side by side.

    python benchmarks/image_quality.py                                  # 200 images per class
    python benchmarks/image_quality.py --encoder timm:resnet18 --limit-per-class 0   # all 10,000

Every image queries all the others (by item id); a hit is relevant when it has the query's
class. precision@k comes from the index (--index, default Flat); mAP is exact over the full
ranking (see latentsearch.evaluation.images).

The default encoder is ``timm:resnet18?pretrained=false``: no weights can be downloaded here, so
the network has random (seeded) weights. Its numbers measure the harness, not the model; the
``hashing:256`` baseline (a fixed random projection of 16x16 pixels) runs in the same
invocation, so the two columns are comparable, and chance level is about 0.1 (ten balanced
classes). With pretrained weights (``--encoder timm:resnet18`` where they can be fetched) the
same command measures the model. Prints a table and writes
benchmarks/results/image_quality.json.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_parser, print_table, write_result  # noqa: E402

from latentsearch.evaluation.images import image_quality  # noqa: E402

SHOWN_KS = (1, 10, 100)


def main() -> int:
    parser = benchmark_parser(__doc__, "image_quality", "cifar10-test")
    parser.add_argument("--encoder", default="timm:resnet18?pretrained=false")
    parser.add_argument("--baseline", default="hashing:256", help="pixel baseline run alongside ('' to skip)")
    parser.add_argument("--index", default="Flat")
    parser.add_argument("--limit-per-class", type=int, default=200, help="first N images of each class (0: all)")
    args = parser.parse_args()

    encoders = [e for e in (args.encoder, args.baseline) if e]
    results = []
    for spec in encoders:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = image_quality(
                args.dataset, Path(tmp) / "col", encoder=spec, index=args.index, ks=(1, 5, 10, 100),
                limit_per_class=args.limit_per_class or None, batch_size=args.batch_size,
                progress=lambda message, spec=spec: print(f"[{spec}] {message}", file=sys.stderr),
            )
            total = time.perf_counter() - t0
        results.append((result, total))

    first = results[0][0]
    header = ["class", "images"]
    for result, _ in results:
        short = result.encoder.split("?")[0]
        header += [f"{short} P@{k}" for k in SHOWN_KS if k in result.ks] + [f"{short} mAP"]
    rows = []
    for label in [*first.classes, "overall"]:
        row: list[object] = [label, (first.per_class.get(label) or first.overall)["images"]]
        for result, _ in results:
            values = result.overall if label == "overall" else result.per_class[label]
            row += [f"{values[f'precision@{k}']:.4f}" for k in SHOWN_KS if k in result.ks] + [f"{values['map']:.4f}"]
        rows.append(row)
    title = (f"{args.dataset.name}: {first.images:,} images in {len(first.classes)} classes, index {args.index} "
             f"(chance ≈ {1 / len(first.classes):.2f})")
    print_table(title, header, rows)
    print_table(
        "timings", ["encoder", "dim", "encode + store s", "search s", "exact mAP s", "total s"],
        [[r.encoder, r.collection.get("dim"), f"{r.index_seconds:.1f}", f"{r.search_seconds:.1f}",
          f"{r.map_seconds:.1f}", f"{total:.1f}"] for r, total in results],
    )
    path = write_result("image_quality", {
        "dataset": {"name": args.dataset.name, "classes": first.classes, "images": first.images,
                    "limit_per_class": args.limit_per_class or None, "fingerprint": first.fingerprint},
        "index": args.index,
        "note": "random-weight timm encoders measure the harness, not the model; hashing is a pixel baseline",
        "results": [{**r.to_dict(), "total_seconds": round(total, 2)} for r, total in results],
    }, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
