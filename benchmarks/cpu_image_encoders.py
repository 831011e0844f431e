"""Image encoders on the CPU: a timm model run by torch and by ONNX Runtime (``backend=onnx``).

    python benchmarks/cpu_image_encoders.py                                  # resnet18 and resnet50
    python benchmarks/cpu_image_encoders.py --model convnext_tiny --images 256

images/s: the first --images CIFAR-10 test pictures (../shared/datasets/cifar10-test), decoded and
preprocessed once (timm's own transform, 224 × 224), then encoded in batches of --batch-size, best
of --repeat passes after a warm-up; the export (done once, cached) is not timed. Weights are random
(``pretrained=false``): the speed and the agreement between backends do not depend on them. The
largest difference between the two backends' vectors is reported. Writes
benchmarks/results/cpu_image_encoders.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATASETS, benchmark_parser, print_table, settings, write_result  # noqa: E402

from latentsearch.encoders import create_encoder  # noqa: E402


def main() -> int:
    parser = benchmark_parser(__doc__, "cpu_image_encoders")
    parser.add_argument("--dataset", type=Path, default=DATASETS / "cifar10-test")
    parser.add_argument("--model", dest="models", action="append", help="a timm model name (repeatable) [default: resnet18, resnet50]")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from PIL import Image

    files = sorted(p for p in args.dataset.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.images]
    if not files:
        raise SystemExit(f"no images under {args.dataset}")
    pictures = [Image.open(p).convert("RGB") for p in files]
    results: dict[str, dict] = {}
    rows = []
    for model in args.models or ["resnet18", "resnet50"]:
        vectors = {}
        for backend in ("torch", "onnx"):
            spec = f"timm:{model}?pretrained=false" + ("&backend=onnx" if backend == "onnx" else "")
            enc = create_encoder(spec)
            inputs = [enc.preprocess_image(p) for p in pictures]  # decoding and resizing are not timed
            vectors[backend] = enc.encode_image(inputs[: args.batch_size], args.batch_size)  # warm-up
            best = float("inf")
            for _ in range(args.repeat):
                started = time.perf_counter()
                out = enc.encode_image(inputs, args.batch_size)
                best = min(best, time.perf_counter() - started)
            vectors[backend] = out
            results[f"{model} {backend}"] = {"spec": enc.spec, "images_per_second": round(len(inputs) / best, 1)}
        speedup = results[f"{model} onnx"]["images_per_second"] / results[f"{model} torch"]["images_per_second"]
        diff = float(np.abs(vectors["torch"] - vectors["onnx"]).max())
        results[f"{model} onnx"].update(speedup=round(speedup, 2), max_abs_difference=diff)
        rows += [[model, "torch", f"{results[f'{model} torch']['images_per_second']:.1f}", "1.00x", "-"],
                 [model, "onnx", f"{results[f'{model} onnx']['images_per_second']:.1f}", f"{speedup:.2f}x", f"{diff:.1e}"]]
    print_table(f"timm on {len(pictures)} CIFAR-10 images (224 x 224), batch {args.batch_size}, best of {args.repeat}",
                ["model", "backend", "images/s", "vs torch", "max |difference|"], rows)
    path = write_result("cpu_image_encoders", {"settings": settings(args), "results": results}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
