"""Peak memory of indexing huge images that pass the decompression-bomb check.

    python benchmarks/image_memory.py                 # 12 PNGs of 9000 × 9000 (about 250 KiB each)
    python benchmarks/image_memory.py --images 4 --side 6000    # quicker

Writes ``--images`` valid gradient PNGs of ``--side`` × ``--side`` pixels (each decodes to
``side² × 3`` bytes: 243 MB at 9000) into a temporary folder, indexes the folder with a timm
image encoder (random weights, nothing downloaded) and reports the process's peak resident memory
before and after indexing, with every skipped image and its reason. The same run with small
images of the same count gives the baseline (torch, the model, FAISS), so the difference is what
the huge images cost. Prints a table and writes benchmarks/results/image_memory.json.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_parser, print_table, write_result  # noqa: E402

CHILD = r"""
import resource, sys, time, json
from pathlib import Path
import latentsearch
folder, col = Path(sys.argv[1]), Path(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
with latentsearch.create(col, encoder=sys.argv[3], index="Flat") as c:
    report = c.index_paths([folder])
print(json.dumps({"added": report.added, "skipped": [[Path(s.source).name, s.reason] for s in report.skipped],
                  "seconds": time.perf_counter() - t0, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_pngs(folder: Path, n: int, side: int) -> int:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(n):
        x = np.linspace(0, 255, side, dtype=np.float32)
        row = np.stack([x, x[::-1], np.full_like(x, 20 * i % 256)], axis=-1).astype(np.uint8)
        Image.fromarray(np.broadcast_to(row, (side, side, 3)).copy()).save(folder / f"img{i:02d}.png")
    return sum(p.stat().st_size for p in folder.iterdir())


def run(folder: Path, col: Path, encoder: str) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(col), encoder], capture_output=True, text=True)
    if out.returncode:
        return {"added": 0, "skipped": [], "seconds": 0.0, "peak_mib": None, "exit": out.returncode, "error": out.stderr[-500:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = benchmark_parser(__doc__, "image_memory")
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--side", type=int, default=9000)
    parser.add_argument("--encoder", default="timm:resnet18?pretrained=false")
    args = parser.parse_args()
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, side in (("small (64 × 64)", 64), (f"huge ({args.side} × {args.side})", args.side)):
            folder = Path(tmp) / f"images{side}"
            t0 = time.perf_counter()
            size = write_pngs(folder, args.images, side)
            print(f"[{label}] wrote {args.images} PNGs ({size / 1024:.0f} KiB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            result = run(folder, Path(tmp) / f"col{side}", args.encoder)
            results[label] = result
            skipped = "; ".join(f"{n}: {r}" for n, r in result["skipped"]) or "none"
            peak = "killed" if result["peak_mib"] is None else f"{result['peak_mib']:,.0f}"
            rows.append([label, args.images, f"{side * side * 3 / 1e6:,.0f}", result["added"], skipped, peak, f"{result['seconds']:.1f}"])
    print_table("indexing huge images: peak resident memory of the indexing process",
                ["images", "count", "decoded MB each", "added", "skipped (reason)", "peak MiB", "seconds"], rows)
    path = write_result("image_memory", {"settings": vars(args) | {"out": str(args.out)}, "results": results}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
