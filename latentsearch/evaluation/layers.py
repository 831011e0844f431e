"""Which layer carries the meaning? One encoder's latents of several layers, each scored.

For every layer the encoder spec gets ``layer=`` added (``timm:resnet18?layer=layer2``,
``minilm?layer=3``), a fresh collection is built with it, and the harness of the dataset's kind
scores it, unchanged: :func:`~latentsearch.evaluation.images.image_quality` for a labelled image
folder (precision@k from a Flat index, exact mAP), :func:`~latentsearch.evaluation.bench.beir_quality`
for a BEIR folder (nDCG, MRR, MAP, recall, precision at 1, 3, 5, 10, 100). The result is one row
per layer (its dimension, its metrics, the time to encode the dataset), rendered as a table, JSON,
and a plot of quality by layer.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..registry import Spec
from .report import fingerprint_files, machine_info

BEIR_ENCODER = "minilm"
BEIR_HEADLINE = ("ndcg@10", "mrr@10", "map@10", "recall@100")
SHORT = {"precision@": "P@", "ndcg@": "nDCG@", "mrr@": "MRR@", "recall@": "R@", "map@": "MAP@"}


@dataclass
class LayerScore:
    """One layer's row: ``layer`` as asked, ``spec`` the encoder's canonical spec (the stage's
    name for a timm index), ``metrics`` every metric the harness gave."""

    layer: str
    spec: str
    dim: int
    metrics: dict[str, float]
    encode_seconds: float  # encoding and storing the whole dataset with this layer
    search_seconds: float  # every query (and, for images, the exact mAP)


@dataclass
class LayersResult:
    kind: str  # "images" or "beir"
    dataset: str
    encoder: str  # the spec the layers were added to
    items: int  # images, or documents
    queries: int
    headline: list[str]  # the metrics of the table and the plot
    layers: list[LayerScore] = field(default_factory=list)
    split: str | None = None  # BEIR only
    classes: int | None = None  # images only
    fingerprint: str = ""
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable images, not scored


def dataset_kind(folder: str | Path) -> str:
    """``beir`` for a folder with ``corpus.jsonl``, else ``images`` (one subfolder per class)."""
    return "beir" if (Path(folder) / "corpus.jsonl").is_file() else "images"


def parse_layers(text: str | Sequence[str]) -> list[str]:
    """``"layer1,layer2"`` (or a list of such) as layer names, in order, each once."""
    parts = [text] if isinstance(text, str) else list(text)
    layers = [name.strip() for part in parts for name in part.split(",") if name.strip()]
    if not layers:
        raise InvalidInputError("no layers given; e.g. --layers layer1,layer2,layer3,layer4 or --layers 0,3,6")
    repeated = sorted({name for name in layers if layers.count(name) > 1})
    if repeated:
        raise InvalidInputError(f"the layer {repeated[0]!r} is given twice")
    return layers


def layer_spec(encoder: str, layer: str) -> str:
    """``encoder`` (a spec or an alias, with its own options) with ``layer=`` added."""
    from ..encoders import ENCODERS

    spec = ENCODERS.resolve(encoder)
    if "layer" in spec.options:
        raise InvalidInputError(f"the encoder {encoder!r} names a layer already; give it without layer= (the layers come from --layers)")
    return str(Spec(spec.kind, spec.name, {**spec.options, "layer": layer}))


def layer_quality(
    folder: str | Path,
    encoder: str | None,
    layers: Sequence[str],
    workdir: str | Path,
    split: str = "test",
    limit_per_class: int | None = None,
    ks: Sequence[int] | None = None,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> LayersResult:
    """Score the latents of each of ``layers`` of ``encoder`` on ``folder`` (a labelled image
    folder or a BEIR folder). Each layer's collection is built under ``workdir`` and removed
    once scored. ``encoder`` defaults to the harness's own (``timm:resnet18``, ``minilm``);
    ``limit_per_class`` and ``ks`` are for image folders."""
    from .bench import beir_quality
    from .images import DEFAULT_IMAGE_ENCODER, DEFAULT_IMAGE_KS, image_quality, metric_names
    from .metrics import DEFAULT_KS

    kind = dataset_kind(folder)
    if kind == "beir" and (limit_per_class is not None or ks):
        raise InvalidInputError(f"{folder} is a BEIR folder; a limit per class and -k are for labelled image folders")
    encoder = encoder or (DEFAULT_IMAGE_ENCODER if kind == "images" else BEIR_ENCODER)
    layers = parse_layers(layers)
    specs = [layer_spec(encoder, layer) for layer in layers]  # bad input fails before any encoding
    say = progress or (lambda _message: None)
    result = LayersResult(kind=kind, dataset=str(folder), encoder=encoder, items=0, queries=0, headline=[],
                          split=split if kind == "beir" else None)
    for n, (layer, spec) in enumerate(zip(layers, specs)):
        say(f"layer {layer} ({n + 1}/{len(specs)}): {spec}")
        where = Path(workdir) / f"layer-{n}"
        if kind == "images":
            scored = image_quality(folder, where, spec, "Flat", ks or DEFAULT_IMAGE_KS, limit_per_class, batch_size, progress)
            metrics = {k: v for k, v in scored.overall.items() if k != "images"}
            result.items = result.queries = scored.images
            result.classes, result.fingerprint = len(scored.classes), scored.fingerprint
            result.headline = metric_names(scored)
            result.skipped = result.skipped or scored.skipped
            search_seconds = scored.search_seconds + scored.map_seconds
        else:
            scored = beir_quality(folder, where, spec, "Flat", split, DEFAULT_KS, batch_size)
            metrics = dict(scored.metrics)
            result.items, result.queries = scored.documents, scored.queries
            result.headline = [m for m in BEIR_HEADLINE if m in metrics]
            search_seconds = scored.search_seconds
        result.layers.append(LayerScore(
            layer=layer, spec=scored.collection["encoder"], dim=int(scored.collection["dim"]), metrics=metrics,
            encode_seconds=scored.index_seconds, search_seconds=search_seconds,
        ))
        shutil.rmtree(where, ignore_errors=True)  # a flattened layer's vectors can be large
    if kind == "beir":
        root = Path(folder)
        result.fingerprint = fingerprint_files([root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"])
    return result


# -- rendering ----------------------------------------------------------------------------------


def short_name(metric: str) -> str:
    for long, short in SHORT.items():
        if metric.startswith(long):
            return short + metric[len(long):]
    return "mAP" if metric == "map" else metric


def best_layers(result: LayersResult) -> dict[str, str]:
    """For each headline metric, the layer that scores highest (the first of equals)."""
    return {m: max(result.layers, key=lambda s: s.metrics[m]).layer for m in result.headline if result.layers}


def layers_title(result: LayersResult) -> str:
    name = Path(result.dataset).name
    if result.kind == "images":
        what = f"{result.items:,} images in {result.classes} classes, each querying the rest"
    else:
        what = f"{result.split}: {result.queries:,} queries over {result.items:,} documents"
    return f"{name} {what} ({result.encoder})"


def layers_table(result: LayersResult, title: str | None = None) -> Any:
    """A rich ``Table``: one row per layer; the best value of each metric in bold."""
    from rich.table import Table

    best = best_layers(result)
    table = Table(title=title)
    table.add_column("layer", no_wrap=True)
    table.add_column("dim", justify="right")
    for metric in result.headline:
        table.add_column(short_name(metric), justify="right")
    table.add_column("encode s", justify="right")
    for score in result.layers:
        cells = [
            f"[bold]{score.metrics[m]:.4f}[/bold]" if best.get(m) == score.layer else f"{score.metrics[m]:.4f}"
            for m in result.headline
        ]
        table.add_row(score.layer, f"{score.dim:,}", *cells, f"{score.encode_seconds:.1f}")
    return table


def layers_json(result: LayersResult) -> dict[str, Any]:
    """The JSON document of a layers run; every row has the same keys."""
    dataset = {"name": result.dataset, "kind": result.kind, "items": result.items, "queries": result.queries,
               "fingerprint": result.fingerprint}
    if result.kind == "images":
        dataset["classes"] = result.classes
    else:
        dataset["split"] = result.split
    return {
        "benchmark": "layers",
        "dataset": dataset,
        "encoder": result.encoder,
        "machine": machine_info(),
        "headline": list(result.headline),
        "best": best_layers(result),
        "results": [
            {**asdict(score), "encode_seconds": round(score.encode_seconds, 3),
             "search_seconds": round(score.search_seconds, 3)}
            for score in result.layers
        ],
        "skipped": result.skipped,
    }


def plot_layers(result: LayersResult, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of each headline metric by layer, in the order the layers were given (each
    tick names the layer and its dimension)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(max(6.0, 1.1 * len(result.layers) + 2), 4.8), layout="constrained")
    ax = fig.subplots()
    x = list(range(len(result.layers)))
    for metric in result.headline:
        ax.plot(x, [s.metrics[metric] for s in result.layers], marker="o", label=short_name(metric))
    ax.set_xticks(x, [f"{s.layer}\n{s.dim:,}" for s in result.layers])
    ax.set_xlabel("layer (dimension)")
    ax.set_ylabel("retrieval quality")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(textwrap.fill(title, 90), fontsize=9)
    path = Path(path)
    fig.savefig(path, format="png", dpi=120)
    return path
