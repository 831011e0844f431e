"""ANN recall against speed on SIFT10K (siftsmall): Flat, HNSW, IVF-Flat and IVF-PQ sweeps.

    python benchmarks/ann.py                   # the default specs on siftsmall
    python benchmarks/ann.py --index 'HNSW16?efSearch=8,16,32' --out-dir /tmp/ann

Prints a table and writes benchmarks/results/ann.json, ann.md and ann.png. Exits 1 when Flat,
which is exact, misses any ground-truth neighbour.

latentsearch turns FAISS's polysemous training off for PQ indexes (it costs most of the training
time and only serves a search mode latentsearch does not use), so ``IVF100,PQ16`` builds fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, RESULTS  # noqa: E402

from latentsearch.evaluation import ann, report, vecfiles  # noqa: E402

SPECS = (
    "Flat",
    "HNSW32?efSearch=16,32,64,128,256",
    "IVF100,Flat?nprobe=1,2,4,8,16,32",
    "IVF100,PQ16?nprobe=1,4,16,64",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATASETS / "siftsmall")
    parser.add_argument("--index", action="append", help=f"spec to sweep (repeatable) [default: {', '.join(SPECS)}]")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()

    files = [args.data / f"siftsmall_{name}" for name in ("base.fvecs", "query.fvecs", "groundtruth_recomputed.ivecs")]
    xb, xq, gt = (vecfiles.read_vectors(path) for path in files)
    ks = ann.DEFAULT_K_VALUES
    points = ann.sweep(xb, xq, gt, args.index or SPECS, "l2", ks, progress=lambda m: print(m, file=sys.stderr))

    dataset = report.ann_dataset("siftsmall", len(xb), len(xq), xb.shape[1], "l2", files[2].name,
                                 report.fingerprint_files(files))
    title = f"siftsmall: {len(xb):,} base × {len(xq)} queries, dim {xb.shape[1]}, L2"
    report.print_table(report.ann_table(points, f"{title} (* = Pareto front of recall@10 against QPS)"))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "ann.json").write_text(json.dumps(report.ann_json(points, dataset, ks), indent=2) + "\n")
    (args.out_dir / "ann.md").write_text(report.ann_markdown(points, title))
    report.plot_ann(points, args.out_dir / "ann.png", title)
    print(f"wrote {args.out_dir / 'ann.json'}, ann.md and ann.png")

    flat = [p for p in points if p.index == "Flat"]
    inexact = [p.spec for p in flat if min(p.recall.values()) < 1.0]
    if inexact:
        print(f"Flat is exact but its recall is below 1.0: {', '.join(inexact)}", file=sys.stderr)
    return 1 if inexact else 0


if __name__ == "__main__":
    sys.exit(main())
