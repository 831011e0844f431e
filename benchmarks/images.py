"""Image ingest: `latentsearch index` on CIFAR-10 test images against a bare timm loop, in one run.

    python benchmarks/images.py                       # 10,000 images, mobilenetv3_small_100
    python benchmarks/images.py --model resnet18 --limit 2000

The model is created with random (seeded) weights: speed does not depend on the weights, and no
download is needed. Both sides use the same files, transform and batch size; the bare loop reads,
decodes, transforms and runs the model batch by batch in one thread (forward-only time reported
too). Prints a table and writes benchmarks/results/images.json.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_parser, print_table, write_result  # noqa: E402

import latentsearch  # noqa: E402


def main() -> int:
    parser = benchmark_parser(__doc__, "images", "cifar10-test")
    parser.add_argument("--model", default="mobilenetv3_small_100")
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    args = parser.parse_args()

    import torch
    from PIL import Image

    files = sorted(args.dataset.glob("*/*.jpg"))[: args.limit or None]
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "files.txt"
        listing.write_text("\n".join(map(str, files)) + "\n")
        col = latentsearch.create(Path(tmp) / "col", encoder=f"timm:{args.model}?pretrained=false", index="Flat")
        encoder = col.encoder
        model, transform = encoder.model, encoder.transform

        forward = 0.0
        t0 = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(files), args.batch_size):
                batch = torch.stack([transform(Image.open(f).convert("RGB")) for f in files[start : start + args.batch_size]])
                t1 = time.perf_counter()
                model(batch)
                forward += time.perf_counter() - t1
        bare = time.perf_counter() - t0

        t0 = time.perf_counter()
        report = col.index_paths(files, batch_size=args.batch_size)
        col.flush()
        ours = time.perf_counter() - t0
        col.close()
    assert report.added == len(files), report.to_dict()
    n = len(files)
    rows = [
        ["model forward only", f"{forward:.1f}", f"{n / forward:.1f}", f"{forward / bare:.2f}"],
        ["bare loop: read, decode, transform, forward", f"{bare:.1f}", f"{n / bare:.1f}", "1.00"],
        ["latentsearch index (+ hash, store, index)", f"{ours:.1f}", f"{n / ours:.1f}", f"{ours / bare:.2f}"],
    ]
    print_table(f"{n} CIFAR-10 images, timm {args.model}, batch {args.batch_size}", ["path", "seconds", "images/s", "time ratio"], rows)
    stages = {k: round(v, 2) for k, v in report.stages.items()}
    print(f"pipeline stages, busy seconds (overlapping): {stages}")
    path = write_result("images", {
        "images": n, "model": args.model, "batch_size": args.batch_size, "forward_seconds": round(forward, 2),
        "bare_seconds": round(bare, 2), "latentsearch_seconds": round(ours, 2), "ratio": round(ours / bare, 3),
        "stages": stages,
    }, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
