"""``latentsearch bench``: ANN recall/speed sweeps and BEIR retrieval quality.

A thin shell over :mod:`latentsearch.evaluation`: parse, call, render. Nothing heavy is
imported at module level, so ``latentsearch --help`` stays instant. Library errors propagate to
the top-level group, which prints them as one line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .errors import InvalidInputError

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
BEIR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _output_option(name: str, what: str) -> Callable[..., Any]:
    return click.option(
        f"--{name}", f"{name}_path", metavar="FILE", default=None,
        type=click.Path(dir_okay=False, writable=True, allow_dash=True, path_type=Path),
        help=f"Write {what} to FILE ('-': stdout, instead of the table).",
    )


def _specs_option(default: tuple[str, ...]) -> Callable[..., Any]:
    return click.option(
        "--index", "specs", multiple=True, default=default, show_default=True, metavar="SPEC",
        help="FAISS factory, with comma lists to sweep a search option: "
        "'HNSW32?efSearch=16,64' or 'IVF256,Flat?nprobe=1,4,16' (repeatable).",
    )


@click.group()
def bench() -> None:
    """Benchmark indexes: recall against speed, and retrieval quality on BEIR.

    \b
    Example:
      latentsearch bench ann --base base.fvecs --queries query.fvecs --index 'HNSW32?efSearch=16,64'
      latentsearch bench quality --dataset datasets/scifact --encoder minilm
      latentsearch bench images --dataset datasets/cifar10-test --limit-per-class 100
      latentsearch bench layers --dataset datasets/cifar10-test --layers layer1,layer2,layer3,layer4
    """


@bench.command("ann")
@click.option("--base", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Base vectors (.fvecs or .npy).")
@click.option("--queries", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Query vectors (.fvecs or .npy).")
@click.option(
    "--groundtruth", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Exact neighbours of each query as row numbers of --base (.ivecs or .npy) [default: computed by brute force].",
)
@click.option(
    "--collection", type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Benchmark the vectors stored in this collection instead of --base/--queries.",
)
@click.option("--sample", default=100, show_default=True, type=click.IntRange(min=1),
              help="With --collection: how many stored vectors become queries (left out of the base).")
@click.option("--seed", default=0, show_default=True, type=int, help="With --collection: the seed of the query sample.")
@_specs_option(("Flat",))
@click.option("--metric", type=click.Choice(["l2", "ip", "cosine"]), default=None,
              help="[default: l2 for files; the collection's metric for --collection]")
@click.option("-k", "k_values", multiple=True, type=click.IntRange(min=1), help="Recall cutoff (repeatable) [default: 1, 10, 100].")
@_output_option("json", "the results as JSON")
@_output_option("markdown", "a Markdown table")
@click.option("--plot", "plot_path", metavar="FILE.png", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write a PNG of recall@10 against queries per second, Pareto front marked.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages on stderr.")
def ann(
    base: Path | None,
    queries: Path | None,
    groundtruth: Path | None,
    collection: Path | None,
    sample: int,
    seed: int,
    specs: tuple[str, ...],
    metric: str | None,
    k_values: tuple[int, ...],
    json_path: Path | None,
    markdown_path: Path | None,
    plot_path: Path | None,
    quiet: bool,
) -> None:
    """Sweep FAISS indexes: recall@k, QPS, latency percentiles, build time, size, memory.

    Each factory is built once and searched at every value of its sweep. Recall is measured
    against the ground truth (computed exactly when not given). Latency times each query alone;
    QPS searches all queries in one call. Peak memory is approximate (growth of the process's
    peak RSS).

    \b
    Example:
      latentsearch bench ann --base sift_base.fvecs --queries sift_query.fvecs \\
          --groundtruth sift_groundtruth.ivecs --index Flat --index 'HNSW32?efSearch=16,32,64' \\
          --index 'IVF256,Flat?nprobe=1,4,16' --json ann.json --plot ann.png
      latentsearch bench ann --collection papers --sample 200 --index 'HNSW32?efSearch=16,64'
    """
    from .evaluation import ann as bench_ann
    from .evaluation import report
    from .evaluation.vecfiles import read_vectors

    if collection is not None:
        if base is not None or queries is not None or groundtruth is not None:
            raise click.UsageError("give --collection, or --base and --queries, not both")
        stored, stored_metric = bench_ann.collection_vectors(collection)
        xb, xq = bench_ann.split_queries(stored, sample, seed)
        gt, metric = None, metric or stored_metric
        name, fingerprint = str(collection), report.fingerprint_arrays(xb, xq)
    elif base is not None and queries is not None:
        xb, xq = read_vectors(base), read_vectors(queries)
        gt = read_vectors(groundtruth) if groundtruth is not None else None
        metric = metric or "l2"
        name = base.name
        fingerprint = report.fingerprint_files([p for p in (base, queries, groundtruth) if p is not None])
    else:
        raise click.UsageError("give --base FILE and --queries FILE, or --collection DIR")
    ks = k_values or bench_ann.DEFAULT_K_VALUES
    progress = None if quiet else (lambda message: click.echo(message, err=True))
    points = bench_ann.sweep(xb, xq, gt, specs, metric, ks, progress=progress)

    dataset = report.ann_dataset(
        name, len(xb), len(xq), xb.shape[1], metric,
        groundtruth.name if groundtruth is not None else "exact (FAISS Flat)", fingerprint,
    )
    title = f"{name}: {len(xb):,} base × {len(xq):,} queries, dim {xb.shape[1]}, {metric}"
    to_stdout = _write(json_path, lambda: json.dumps(report.ann_json(points, dataset, ks), indent=2) + "\n")
    to_stdout |= _write(markdown_path, lambda: report.ann_markdown(points, title))
    if plot_path is not None:
        report.plot_ann(points, plot_path, title)
    if not to_stdout:
        report.print_table(report.ann_table(points, title))
        for line in report.tuned_lines(points):
            click.echo(line)


@bench.command("quality")
@click.option("--dataset", required=True, metavar="DIR|NAME",
              help="A BEIR folder, or the name of a BEIR dataset (e.g. scifact) to download.")
@click.option("--encoder", default=None, help="Encoder spec [default: minilm; an existing --collection keeps its own].")
@_specs_option(("Flat",))
@click.option("--split", default="test", show_default=True, help="Which qrels/<split>.tsv to score.")
@click.option(
    "--collection", type=click.Path(file_okay=False, path_type=Path),
    help="Collection to create or reuse, so the corpus is encoded once across runs [default: a temporary one].",
)
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@_output_option("json", "the results as JSON")
@_output_option("markdown", "a Markdown table")
def quality(
    dataset: str,
    encoder: str | None,
    specs: tuple[str, ...],
    split: str,
    collection: Path | None,
    batch_size: int,
    json_path: Path | None,
    markdown_path: Path | None,
) -> None:
    """Score retrieval on a BEIR dataset: nDCG, MRR, MAP, recall and precision at 1, 3, 5, 10, 100.

    The corpus is encoded once; every --index (and every point of a sweep) is built from the
    same stored vectors. Metrics follow trec_eval.

    \b
    Example:
      latentsearch bench quality --dataset datasets/scifact --index Flat --index 'HNSW32?efSearch=16,64'
      latentsearch bench quality --dataset scifact --collection /tmp/scifact --json scifact.json
    """
    import tempfile

    from .config import manifest_path
    from .evaluation import report
    from .evaluation.ann import expand_specs
    from .evaluation.bench import beir_quality
    from .evaluation.metrics import DEFAULT_KS

    points = expand_specs(specs)  # a bad spec fails before anything is encoded
    folder = beir_folder(dataset)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="latentsearch-bench-") as tmp:
        where = collection if collection is not None else Path(tmp) / "collection"
        if encoder is not None and manifest_path(where).exists():
            import latentsearch

            latentsearch.open(where, encoder=encoder).close()  # refuses another encoder's collection
        for spec in points:
            result = beir_quality(folder, where, encoder or "minilm", spec, split, DEFAULT_KS, batch_size)
            results.append({
                "index": spec,
                "index_in_use": result.collection.get("index_in_use"),
                "metrics": result.metrics,
                "queries": result.queries,
                "documents": result.documents,
                "index_seconds": round(result.index_seconds, 3),
                "search_seconds": round(result.search_seconds, 3),
                "encoder": result.collection.get("encoder"),
            })
    used = results[0]["encoder"] or encoder or "minilm"
    files = [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"]
    document = report.quality_json(str(dataset), split, used, results, report.fingerprint_files(files))
    first = results[0]
    encoded = f"encoded in {first['index_seconds']:.1f} s" if first["index_seconds"] else "reused collection"
    title = (f"{folder.name} {split}: {first['queries']} queries over {first['documents']} documents "
             f"({used}; {encoded})")
    to_stdout = _write(json_path, lambda: json.dumps(document, indent=2) + "\n")
    to_stdout |= _write(markdown_path, lambda: report.quality_markdown(results, title))
    if not to_stdout:
        report.print_table(report.quality_table(results, title))


@bench.command("images")
@click.option("--dataset", required=True, metavar="DIR",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder of images with one subfolder per class (DIR/<class>/<image>).")
@click.option("--encoder", default=None, metavar="SPEC",
              help="Encoder spec [default: timm:resnet18; an existing --collection keeps its own].")
@click.option("--index", "spec", default="Flat", show_default=True, metavar="SPEC",
              help="FAISS factory the images are searched with, e.g. 'HNSW32' or 'IVF64,Flat?nprobe=4'.")
@click.option(
    "--collection", type=click.Path(file_okay=False, path_type=Path),
    help="Collection to create or reuse, so the images are encoded once across runs [default: a temporary one].",
)
@click.option("--limit-per-class", type=click.IntRange(min=2), default=None, metavar="N",
              help="Only the first N images (by file name) of each class [default: all].")
@click.option("-k", "k_values", multiple=True, type=click.IntRange(min=1),
              help="Precision cutoff (repeatable) [default: 1, 5, 10, 100].")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@_output_option("json", "the results as JSON")
@_output_option("markdown", "a Markdown table")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages on stderr.")
def images(
    dataset: Path,
    encoder: str | None,
    spec: str,
    collection: Path | None,
    limit_per_class: int | None,
    k_values: tuple[int, ...],
    batch_size: int,
    json_path: Path | None,
    markdown_path: Path | None,
    quiet: bool,
) -> None:
    """Score image retrieval on a labelled folder: precision@k and mAP, per class and overall.

    Every image is indexed, then queries all the others; a hit is relevant when it has the
    query's class (its folder). precision@k comes from the index under test; mAP is exact,
    computed from the stored vectors over the full ranking of the other images.

    \b
    Example:
      latentsearch bench images --dataset datasets/cifar10-test --limit-per-class 100
      latentsearch bench images --dataset photos --encoder 'timm:resnet50' --index HNSW32 \\
          --collection /tmp/photos --json photos.json
    """
    import tempfile

    from .evaluation import report
    from .evaluation.images import (
        DEFAULT_IMAGE_KS,
        image_quality,
        image_quality_json,
        image_quality_markdown,
        image_quality_table,
    )

    progress = None if quiet else (lambda message: click.echo(message, err=True))
    with tempfile.TemporaryDirectory(prefix="latentsearch-bench-") as tmp:
        where = collection if collection is not None else Path(tmp) / "collection"
        result = image_quality(dataset, where, encoder, spec, k_values or DEFAULT_IMAGE_KS,
                               limit_per_class, batch_size, progress)
    for skipped in result.skipped:
        click.echo(f"skipped {skipped['source']}: {skipped['reason']}", err=True)
    encoded = f"encoded {result.added:,} in {result.index_seconds:.1f} s" if result.added else "reused collection"
    title = (f"{dataset.name}: {result.images:,} images in {len(result.classes)} classes "
             f"({result.encoder}, {result.collection.get('index_in_use') or result.index}; {encoded})")
    to_stdout = _write(json_path, lambda: json.dumps(image_quality_json(result), indent=2) + "\n")
    to_stdout |= _write(markdown_path, lambda: image_quality_markdown(result, title))
    if not to_stdout:
        report.print_table(image_quality_table(result, title))


@bench.command("layers")
@click.option("--dataset", required=True, metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A labelled image folder (DIR/<class>/<image>) or a BEIR folder (corpus.jsonl, queries.jsonl, qrels/).")
@click.option("--encoder", default=None, metavar="SPEC",
              help="Encoder spec, without layer= [default: timm:resnet18 for images, minilm for BEIR].")
@click.option("--layers", "layer_list", required=True, metavar="A,B,...",
              help="Layers to score, comma-separated: timm feature stages (layer1,layer2 or indices), "
              "or transformer hidden layers (0 = embeddings, 1..N).")
@click.option("--split", default="test", show_default=True, help="BEIR: which qrels/<split>.tsv to score.")
@click.option("--limit-per-class", type=click.IntRange(min=2), default=None, metavar="N",
              help="Images: only the first N images (by file name) of each class [default: all].")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@_output_option("json", "the results as JSON")
@click.option("--plot", "plot_path", metavar="FILE.png", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write a PNG of quality by layer.")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages on stderr.")
def layers(
    dataset: Path,
    encoder: str | None,
    layer_list: str,
    split: str,
    limit_per_class: int | None,
    batch_size: int,
    json_path: Path | None,
    plot_path: Path | None,
    quiet: bool,
) -> None:
    """Which layer carries the meaning? Score each layer's latents of one encoder.

    Each layer (layer= added to the encoder spec; pooled as its pool= says, mean by default) is
    encoded into its own temporary collection and scored as `bench images` (P@k, mAP) or `bench
    quality` (nDCG, MRR, MAP, recall at 10 and 100) score it: one row per layer.

    \b
    Example:
      latentsearch bench layers --dataset datasets/cifar10-test --limit-per-class 50 \\
          --encoder 'timm:resnet18?pretrained=false' --layers layer1,layer2,layer3,layer4 --plot layers.png
      latentsearch bench layers --dataset datasets/scifact --encoder minilm --layers 0,2,4,6 --json layers.json
    """
    import tempfile

    from .evaluation import report
    from .evaluation.layers import layer_quality, layers_json, layers_table, layers_title, plot_layers

    progress = None if quiet else (lambda message: click.echo(message, err=True))
    with tempfile.TemporaryDirectory(prefix="latentsearch-bench-") as tmp:
        result = layer_quality(dataset, encoder, [layer_list], tmp, split=split,
                               limit_per_class=limit_per_class, batch_size=batch_size, progress=progress)
    for skipped in result.skipped:
        click.echo(f"skipped {skipped['source']}: {skipped['reason']}", err=True)
    title = layers_title(result)
    to_stdout = _write(json_path, lambda: json.dumps(layers_json(result), indent=2) + "\n")
    if plot_path is not None:
        plot_layers(result, plot_path, title)
    if not to_stdout:
        report.print_table(layers_table(result, title))


def _write(path: Path | None, render: Callable[[], str]) -> bool:
    """Write ``render()`` to ``path``; True when that went to stdout (``-``)."""
    if path is None:
        return False
    if str(path) == "-":
        click.echo(render(), nl=False)
        return True
    path.write_text(render(), encoding="utf-8")
    return False


# -- BEIR datasets by name ----------------------------------------------------------------------


def beir_folder(value: str) -> Path:
    """``value`` as a BEIR folder: an existing folder, else a BEIR name fetched into the cache."""
    path = Path(value).expanduser()
    if path.is_dir():
        return path
    if path.exists() or not BEIR_NAME.fullmatch(value):
        raise InvalidInputError(f"no BEIR dataset folder at {path}")
    cache = Path(os.environ.get("LATENTSEARCH_CACHE", "~/.cache/latentsearch")).expanduser() / "beir"
    return download_beir(value, cache)


def download_beir(name: str, cache: Path) -> Path:
    """``cache/name``, downloading and unpacking the public BEIR archive on first use."""
    import shutil
    import tempfile
    import urllib.error
    import urllib.request
    import zipfile

    target = cache / name
    if (target / "corpus.jsonl").is_file():
        return target
    url = BEIR_URL.format(name=name)
    click.echo(f"downloading {url}", err=True)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=f".{name}-") as tmp:
            archive = Path(tmp) / f"{name}.zip"
            with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)  # zipfile drops absolute paths and '..' from member names
            unpacked = Path(tmp) / name
            if not (unpacked / "corpus.jsonl").is_file():
                raise InvalidInputError(f"the archive at {url} has no {name}/corpus.jsonl; is {name!r} a BEIR dataset?")
            shutil.rmtree(target, ignore_errors=True)  # a partial earlier attempt
            os.replace(unpacked, target)
    except (urllib.error.URLError, OSError, zipfile.BadZipFile) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise InvalidInputError(
            f"{name!r} is not a folder, and downloading the BEIR dataset from {url} failed "
            f"({' '.join(str(reason).split())}); check the name and the network, or pass --dataset DIR"
        ) from None
    return target
