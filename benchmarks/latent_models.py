"""Latent models trained here, searched and decoded: a convolutional autoencoder and a VAE on CIFAR-10.

    python benchmarks/latent_models.py                      # about 8 minutes on 2 quiet CPU cores
    python benchmarks/latent_models.py --epochs 2 --train-per-class 100 --held-out 20 --layers layer4   # a quick check

The CIFAR-10 test images (``../shared/datasets/cifar10-test``, 10 classes × 1,000) are split by
file name: the first ``--held-out`` images of each class are searched, the next
``--train-per-class`` train the models. Both models map a 32 × 32 image (RGB scaled to [0, 1],
then normalised with mean 0.5 and std 0.5) through three strided convolutions to a
``--latent``-dimensional vector and back through three transposed convolutions; the VAE's
encoder gives a mean and a log-variance (its latent is the mean, μ) and is trained with a KL
term. Both are exported to TorchScript with ``encode`` and ``decode`` methods and used as
latentsearch encoders (``torchscript:FILE``), as a user's own models would be.

Then, on the held-out images, each image queries all the others (by item id; a hit is relevant
when it has the query's class; see latentsearch.evaluation.images): class precision@10 and mAP
for the AE latents, the VAE's μ, raw pixels (``hashing:256``, a fixed random projection of
16 × 16 pixels), a random-weight ResNet-18 (no pretrained weights can be fetched here) and each
of its feature stages (``?layer=``). Also the reconstruction error of both models (mean squared
error per pixel on the [0, 1] scale, against predicting the mean training image), and a PNG of
each model's decoded interpolation between two held-out images of different classes, with the
nearest real image under each step. Prints a table and writes benchmarks/results/latent_models.json;
the models and PNGs go to benchmarks/results/latent_models/.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import benchmark_parser, print_table, settings, write_result  # noqa: E402

import latentsearch  # noqa: E402
from latentsearch.evaluation.images import first_per_class, image_quality, labelled_images  # noqa: E402
from latentsearch.query import decoding  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MEAN, STD, SIZE = 0.5, 0.5, 32


def build_models(latent: int) -> tuple[Any, Any]:
    """The autoencoder and the VAE (torch modules with ``encode`` and ``decode``)."""
    import torch
    from torch import nn

    def trunk() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(3, 32, 4, 2, 1), nn.ReLU(),      # 16 × 16
            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),     # 8 × 8
            nn.Conv2d(64, 128, 4, 2, 1), nn.ReLU(),    # 4 × 4
            nn.Flatten(),
        )

    def head() -> nn.Module:
        return nn.Sequential(
            nn.Linear(latent, 128 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (128, 4, 4)),
            nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(32, 3, 4, 2, 1), nn.Tanh(),  # the normalised scale, [-1, 1]
        )

    class Autoencoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.to_latent, self.decoder = trunk(), nn.Linear(128 * 4 * 4, latent), head()

        @torch.jit.export
        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return self.to_latent(self.encoder(x))

        @torch.jit.export
        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return self.decoder(z)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decode(self.encode(x))

    class VAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.decoder = trunk(), head()
            self.mu, self.logvar = nn.Linear(128 * 4 * 4, latent), nn.Linear(128 * 4 * 4, latent)

        @torch.jit.export
        def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.encoder(x)
            return self.mu(h), self.logvar(h)

        @torch.jit.export
        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return self.decoder(z)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mu, logvar = self.encode(x)
            return self.decode(mu)

    return Autoencoder(), VAE()


def load_pixels(paths: list[Path]) -> np.ndarray:
    """``(n, 3, 32, 32)`` float32 in the models' normalised scale."""
    from PIL import Image

    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((SIZE, SIZE)), np.float32) / 255.0 for p in paths])
    return ((x - MEAN) / STD).transpose(0, 3, 1, 2).copy()


def train(model: Any, x: np.ndarray, epochs: int, vae: bool, seed: int, beta: float) -> list[float]:
    import torch

    torch.manual_seed(seed)
    data = torch.from_numpy(x)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(data))
        total = 0.0
        for start in range(0, len(data), 128):
            batch = data[order[start:start + 128]]
            if vae:
                mu, logvar = model.encode(batch)
                z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
                recon = model.decode(z)
                kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1))
                loss = torch.nn.functional.mse_loss(recon, batch, reduction="sum") / len(batch) + beta * kl
            else:
                loss = torch.nn.functional.mse_loss(model(batch), batch, reduction="sum") / len(batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        losses.append(total / len(data))
        print(f"  epoch {epoch + 1}/{epochs}: loss {losses[-1]:.2f}", file=sys.stderr)
    model.eval()
    return losses


def reconstruction_mse(model: Any, x: np.ndarray, vae: bool) -> float:
    """Mean squared error per pixel on the [0, 1] scale."""
    import torch

    with torch.inference_mode():
        data = torch.from_numpy(x)
        z = model.encode(data)[0] if vae else model.encode(data)
        recon = model.decode(z).numpy()
    return float((((recon - x) * STD) ** 2).mean())


def export(model: Any, path: Path) -> str:
    """TorchScript with ``encode``/``decode``, and the spec that uses it."""
    import torch

    torch.jit.save(torch.jit.script(model), str(path))
    return f"torchscript:{path}?size={SIZE}&mean={MEAN},{MEAN},{MEAN}&std={STD},{STD},{STD}"


def interpolation_png(spec: str, paths: list[Path], labels: list[str], out: Path, steps: int) -> tuple[str, str]:
    """A decoded walk between the first held-out images of two classes, in an l2 collection (so
    the stored latents are the model's own); the nearest real image under each step."""
    a = next(i for i, label in enumerate(labels) if label == labels[0])
    b = next(i for i, label in enumerate(labels) if label != labels[0])
    with tempfile.TemporaryDirectory() as tmp, latentsearch.create(Path(tmp) / "c", encoder=spec, metric="l2", index="Flat") as col:
        ids = col.add(list(paths))
        walk = decoding.walk(col.searcher, col.encoder, int(ids[a]), int(ids[b]), steps)
        decoding.decoded_grid(walk, col.searcher, col.encoder, out)
    return labels[a], labels[b]


def main() -> int:
    parser = benchmark_parser(__doc__, "latent_models", "cifar10-test")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--latent", type=int, default=128)
    parser.add_argument("--held-out", type=int, default=100, help="images per class searched (the first by file name)")
    parser.add_argument("--train-per-class", type=int, default=900, help="images per class that train the models (the next ones)")
    parser.add_argument("--beta", type=float, default=1.0, help="weight of the VAE's KL term")
    parser.add_argument("--layers", default="layer1,layer2,layer3,layer4", help="ResNet-18 stages to score ('' for none)")
    parser.add_argument("--steps", type=int, default=8, help="steps of the decoded interpolation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=Path, default=RESULTS / "latent_models", help="folder for the models and PNGs")
    args = parser.parse_args()

    out = args.models
    out.mkdir(parents=True, exist_ok=True)
    paths, labels = labelled_images(args.dataset)
    held_paths, held_labels = first_per_class(paths, labels, args.held_out)
    held = {str(p) for p in held_paths}
    rest = [(p, label) for p, label in zip(paths, labels) if str(p) not in held]
    train_paths, _ = first_per_class([p for p, _ in rest], [label for _, label in rest], args.train_per_class)
    print(f"training on {len(train_paths):,} images, searching {len(held_paths):,}", file=sys.stderr)

    x_train, x_held = load_pixels(train_paths), load_pixels(held_paths)
    ae, vae = build_models(args.latent)
    models: dict[str, dict[str, Any]] = {}
    for name, model, is_vae in (("autoencoder", ae, False), ("VAE", vae, True)):
        print(f"[{name}] training {args.epochs} epochs", file=sys.stderr)
        t0 = time.perf_counter()
        losses = train(model, x_train, args.epochs, is_vae, args.seed, args.beta)
        seconds = time.perf_counter() - t0
        spec = export(model, out / f"{name.lower()}.pt")
        models[name] = {
            "spec": spec, "train_seconds": seconds, "losses": losses,
            "mse": reconstruction_mse(model, x_held, is_vae),
        }
    mean_image = x_train.mean(axis=0, keepdims=True)
    mean_mse = float((((x_held - mean_image) * STD) ** 2).mean())

    encoders = [
        (f"autoencoder latent ({args.latent})", models["autoencoder"]["spec"]),
        (f"VAE μ ({args.latent})", models["VAE"]["spec"]),
        ("raw pixels (hashing:256)", "hashing:256"),
        ("ResNet-18, random weights (pooled)", "timm:resnet18?pretrained=false"),
    ] + [(f"ResNet-18, random weights, {layer}", f"timm:resnet18?pretrained=false&layer={layer}")
         for layer in filter(None, args.layers.split(","))]
    rows, scored = [], []
    for label, spec in encoders:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = image_quality(
                args.dataset, Path(tmp) / "col", encoder=spec, index="Flat", ks=(1, 10),
                limit_per_class=args.held_out, batch_size=args.batch_size,
                progress=lambda message, label=label: print(f"[{label}] {message}", file=sys.stderr),
            )
            seconds = time.perf_counter() - t0
        p10, m = result.overall["precision@10"], result.overall["map"]
        dim = result.collection.get("dim", "")
        rows.append([label, dim, f"{p10:.4f}", f"{m:.4f}", f"{seconds:.1f}"])
        scored.append({"encoder": label, "spec": spec, "dim": dim, "precision@10": p10, "map": m, "seconds": seconds})

    pngs = {}
    for name in ("autoencoder", "VAE"):
        png = out / f"{name.lower()}_interpolation.png"
        a, b = interpolation_png(models[name]["spec"], held_paths, held_labels, png, args.steps)
        pngs[name] = {"png": str(png), "from": a, "to": b}

    print_table(
        f"class retrieval on {len(held_paths):,} held-out images (each queries the rest; chance ≈ 1/{len(set(held_labels))})",
        ["latents", "dim", "P@10", "mAP", "seconds"], rows,
    )
    print_table(
        "reconstruction of the held-out images (MSE per pixel, [0, 1] scale)",
        ["model", "MSE", "train s"],
        [[n, f"{m['mse']:.5f}", f"{m['train_seconds']:.0f}"] for n, m in models.items()]
        + [["the mean training image", f"{mean_mse:.5f}", ""]],
    )
    for name, p in pngs.items():
        print(f"{name}: decoded interpolation {p['from']} → {p['to']}: {p['png']}")
    path = write_result("latent_models", {
        "settings": settings(args),
        "retrieval": scored,
        "reconstruction": {n: {k: v for k, v in m.items()} for n, m in models.items()} | {"mean_image_mse": mean_mse},
        "interpolations": pngs,
    }, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
