"""``latentsearch clusters``, ``explore``, ``cluster`` and ``map``: the commands that look at the
shape of a collection rather than fetch results. Heavy libraries are imported inside them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .cli_common import collection_argument, echo_json, json_option, parse_where, source_label, stdout_console

@click.command()
@collection_argument
@click.argument("query")
@click.option("-k", default=100, show_default=True, type=click.IntRange(min=2), help="Neighbours to group.")
@click.option("-n", "--clusters", "n_clusters", type=click.IntRange(min=1), default=None, help="How many clusters [default: chosen from the data].")
@click.option("--where", "where_json", default=None, metavar="JSON", help="Only items this metadata filter matches.")
@click.option("--members", default=3, show_default=True, type=click.IntRange(min=0), help="Members shown per cluster.")
@json_option
def clusters(
    collection: Path, query: str, k: int, n_clusters: int | None, where_json: str | None, members: int, as_json: bool
) -> None:
    """Group the K nearest neighbours of QUERY in COLLECTION into labelled clusters.

    \b
    Example:
      latentsearch clusters papers "protein folding" -k 200
      latentsearch clusters notes "travel" -n 4 --json
    """
    from .collection import Collection

    where = parse_where(where_json) if where_json else None
    with Collection.open(collection) as col:
        groups = col.clusters(query, k=k, n_clusters=n_clusters, where=where)
    if as_json:
        echo_json([g.to_dict() for g in groups])
        return
    for g in groups:
        click.echo(f"cluster {g.id}: {g.label}  ({g.size} items, mean score {g.score:.4f})")
        click.echo(f"  representative: {source_label(g.representative)}  {g.representative.snippet(60)}")
        for m in g.members[:members]:
            click.echo(f"  {m.score:.4f}  {source_label(m)}  {m.snippet(60)}")
    if not groups:
        click.echo("no results")


@click.command()
@collection_argument
@click.argument("expression", required=False)
@click.option("-k", default=None, type=click.IntRange(min=1), help="How many results [default: 10; with --between, 1 per step].")
@click.option("--between", nargs=2, metavar="A B", default=None, help="Walk from A to B (each a text, #ID or image path) instead of EXPRESSION.")
@click.option("--steps", default=5, show_default=True, type=click.IntRange(min=2), help="Points from A to B, both ends included.")
@click.option("--around", "around", default=None, metavar="X", help="Sample latents around X (a text, #ID or image path) instead of EXPRESSION.")
@click.option("--samples", default=16, show_default=True, type=click.IntRange(1, 256), help="Latents drawn by --around (the first is X itself).")
@click.option("--radius", default=0.5, show_default=True, type=click.FloatRange(0, 100), help="Spread of --around's samples, times the collection's per-dimension standard deviation.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed of --around's samples.")
@click.option("--decode", "decode_to", default=None, type=click.Path(dir_okay=False, path_type=Path), metavar="PNG",
              help="Decode the latents with the encoder's decoder (autoencoders, VAEs) into an image grid, the nearest real items under them.")
@click.option("--mmr", "lambda_", type=click.FloatRange(0.0, 1.0), default=None, metavar="LAMBDA", help="Diversify the results by maximal marginal relevance (1: plain order, 0: most varied).")
@click.option("--fetch-k", default=50, show_default=True, type=click.IntRange(min=1), help="Candidates --mmr chooses from.")
@json_option
def explore(
    collection: Path,
    expression: str | None,
    k: int | None,
    between: tuple[str, str] | None,
    steps: int,
    around: str | None,
    samples: int,
    radius: float,
    seed: int,
    decode_to: Path | None,
    lambda_: float | None,
    fetch_k: int,
    as_json: bool,
) -> None:
    """Query COLLECTION in its latent space: arithmetic, interpolation, sampling, diversified results.

    EXPRESSION adds and subtracts quoted texts and #ID items, optionally weighted: the items
    nearest the combined vector come back, leaving out the items named. With --mmr it must be
    one term. --between A B lists the items nearest each point on the way from A to B.
    --around X draws latents near X. With a model that decodes (an autoencoder or a VAE),
    --decode PNG draws the latents decoded, with the nearest real item under each.

    \b
    Example:
      latentsearch explore photos '"beach" + #42 - "people"' -k 5
      latentsearch explore photos --between '"sunrise"' '#42' --steps 7 -k 1
      latentsearch explore papers '"protein folding"' --mmr 0.5 -k 10
      latentsearch explore digits --between '#12' '#40' --steps 8 --decode walk.png
      latentsearch explore digits '#3 + #7 - #9' --decode sum.png
      latentsearch explore digits --around '#12' --samples 16 --decode around.png
    """
    from .collection import Collection
    from .query.latent import parse_expression

    if sum(x is not None for x in (expression, between, around)) != 1:
        raise click.UsageError("give one of EXPRESSION, --between A B or --around X")
    if lambda_ is not None and expression is None:
        raise click.UsageError("--mmr goes with an EXPRESSION")
    if lambda_ is not None and decode_to is not None:
        raise click.UsageError("--mmr picks real items; there is nothing to --decode")
    terms = parse_expression(expression) if expression is not None else None
    with Collection.open(collection) as col:
        if decode_to is not None or around is not None:
            _decode_or_sample(col, terms, between, around, steps, samples, radius, seed, k, decode_to, as_json)
            return
        if between is not None:
            a, b = (_explore_term(x) for x in between)
            walk = col.interpolate(a, b, steps=steps, k=k or 1)
            if as_json:
                echo_json([{"t": t, "hits": [h.to_dict() for h in hits]} for t, hits in walk])
                return
            for t, hits in walk:
                for hit in hits:
                    click.echo(f"t={t:.2f}  {hit.score:.4f}  {hit.id}  {source_label(hit)}  {hit.snippet(60)}")
            return
        assert terms is not None
        k = k or 10
        if lambda_ is not None:
            if len(terms) != 1 or terms[0][1] != 1.0:
                raise click.UsageError("--mmr takes one term, such as '\"protein folding\"' or '#42'")
            hits = col.search_mmr(terms[0][0], k=k, fetch_k=max(fetch_k, k), lambda_=lambda_)
        else:
            hits = col.search_combination(terms, k=k)
    if as_json:
        echo_json([h.to_dict() for h in hits])
        return
    for rank, hit in enumerate(hits, start=1):
        click.echo(f"{rank:>3}  {hit.score:.4f}  {hit.id}  {source_label(hit)}  {hit.snippet(60)}")
    if not hits:
        click.echo("no results (the collection is empty)")


def _decode_or_sample(
    col: Any, terms: Any, between: Any, around: str | None, steps: int, samples: int, radius: float,
    seed: int, k: int | None, decode_to: Path | None, as_json: bool,
) -> None:
    """The latents of an arithmetic, a walk or samples around a latent, decoded into a grid when
    ``decode_to`` is given (else, for --around, listed with their nearest items)."""
    from .query import decoding

    encoder = None
    if decode_to is not None:
        encoder = col.encoder
        decoding.check_decoder(encoder)  # no decoder: say so before any work
    if around is not None:
        result = decoding.around(col.searcher, encoder, _explore_term(around), samples, radius, seed)
    elif between is not None:
        a, b = (_explore_term(x) for x in between)
        result = decoding.walk(col.searcher, encoder, a, b, steps, k or 1)
    else:
        result = decoding.arithmetic(col.searcher, encoder, terms, k or 8)
    if decode_to is not None:
        decoding.decoded_grid(result, col.searcher, encoder, decode_to)
    if as_json:
        echo_json({
            "decoded": str(decode_to) if decode_to else None,
            "points": [{"caption": c, "hits": [h.to_dict() for h in hits]} for c, hits in zip(result.captions, result.nearest)],
        })
        return
    for caption, hits in zip(result.captions, result.nearest):
        for hit in hits:
            click.echo(f"{caption:<10}  {hit.score:.4f}  {hit.id}  {source_label(hit)}  {hit.snippet(60)}")
    if decode_to is not None:
        click.echo(f"wrote {decode_to} ({len(result.images)} decoded)", err=True)


def _explore_term(text: str) -> Any:
    """A --between end: '#ID' an item, a quoted or plain text, or an existing image file."""
    from .query.latent import parse_expression

    stripped = text.strip()
    if stripped[:1] in ("'", '"', "#"):
        terms = parse_expression(stripped)
        if len(terms) == 1 and terms[0][1] == 1.0:
            return terms[0][0]
        raise click.UsageError(f"--between takes one text, #ID or image path each, not {text!r}")
    path = Path(stripped).expanduser()
    return path if path.is_file() else text


@click.command()
@collection_argument
@click.option("-n", "--clusters", "n_clusters", required=True, type=click.IntRange(min=1), help="How many clusters.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed of k-means.")
@click.option("--sample", default=None, type=click.IntRange(min=1), help="Train k-means on this many vectors [default: up to 100,000].")
@click.option("--wait", default=10.0, show_default=True, type=click.FloatRange(min=0), help="Seconds to wait for another writer to finish.")
@json_option
def cluster(collection: Path, n_clusters: int, seed: int, sample: int | None, wait: float, as_json: bool) -> None:
    """Cluster all of COLLECTION into N labelled groups (k-means) and store them.

    Items then filter by cluster (--where '{"cluster": 3}'); items added later get
    a cluster when clusters are next read.

    \b
    Example:
      latentsearch cluster papers -n 20
      latentsearch cluster notes -n 5 --json
    """
    from .collection import Collection

    with Collection.open(collection) as col:
        col.lock_timeout = wait
        groups = col.cluster(n_clusters, seed=seed, sample=sample)
    if as_json:
        echo_json([g.to_dict() for g in groups])
        return
    from rich.table import Table

    table = Table("id", "size", "label", "representative")
    for g in groups:
        rep = g.representatives[0] if g.representatives else None
        snippet = ""
        if rep is not None:
            text = " ".join((rep.text or rep.source or rep.key or f"#{rep.id}").split())
            snippet = text if len(text) <= 60 else text[:59] + "…"
        table.add_row(str(g.id), str(g.size), g.label, snippet)
    stdout_console().print(table)


@click.command(name="map")
@collection_argument
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG file to write.")
@click.option("--query", default=None, help="Mark this text query with a star.")
@click.option("--sample", default=5000, show_default=True, type=click.IntRange(min=1), help="Plot at most this many items.")
@click.option("--umap", "use_umap", is_flag=True, help="Project with UMAP (needs umap-learn) instead of PCA.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed of the sample and k-means.")
@json_option
def map_(collection: Path, output: Path, query: str | None, sample: int, use_umap: bool, seed: int, as_json: bool) -> None:
    """Draw COLLECTION as a 2-D scatter coloured by cluster (PNG).

    Colours come from the stored clustering (`latentsearch cluster`), else a quick k-means.

    \b
    Example:
      latentsearch map papers -o papers.png --query "protein folding"
    """
    from .collection import Collection
    from .query.map import render_map

    with Collection.open(collection) as col:
        result = render_map(col.searcher, output, query=query, sample=sample, use_umap=use_umap, seed=seed)
    if as_json:
        echo_json({
            "path": str(result.path), "points": result.points, "projection": result.projection,
            "stored_clustering": result.stored_clustering,
            "clusters": {str(k): v for k, v in result.clusters.items()},
        })
        return
    click.echo(f"wrote {result.path} ({result.points} items, {result.projection.upper()}, {len(result.clusters)} clusters)")
