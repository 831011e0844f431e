"""The ``latentsearch`` command: a thin shell over :class:`Collection`.

Heavy libraries (torch, FAISS, the store) are imported inside the commands, so ``--help`` is
instant. Every :class:`LatentSearchError` becomes one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from click.core import ParameterSource

from .cli_common import (
    collection_argument, collection_or_url_argument, echo_json, human_bytes, json_option, parse_where, print_hits,
    print_report, remote_search, run_with_progress, server_target, stdout_console,
)
from .errors import LatentSearchError

EXIT_SKIPPED = 3  # the run finished, but some inputs were skipped


class Group(click.Group):
    """Turns library errors into ``Error: <sentence>`` and exit status 1, with no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LatentSearchError as exc:
            raise click.ClickException(str(exc)) from exc
        except KeyboardInterrupt:
            click.echo("interrupted; every finished batch is saved", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="latentsearch")
def cli() -> None:
    """Index texts and images as latent vectors and search them.

    \b
    Example:
      latentsearch index notes data/ && latentsearch search notes "how do ships float?"
    """


@cli.command()
@collection_argument
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--encoder", default=None, help="Encoder spec for a new collection [default: minilm].")
@click.option("--index", "index_spec", default="auto", show_default=True, help="FAISS index spec for a new collection.")
@click.option("--metric", type=click.Choice(["cosine", "ip", "l2"]), default="cosine", show_default=True)
@click.option("--db", default=None, help="SQLAlchemy URL of the store [default: SQLite in the collection folder].")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--text-field", default="text", show_default=True, help="JSONL/CSV/Parquet field(s) with the text; 'title,text' joins two.")
@click.option("--image-field", default=None, help="JSONL/CSV/Parquet field with an image path (relative to the file).")
@click.option("--key-field", default=None, help="JSONL/CSV/Parquet field with each record's key [default: _id, id or key].")
@click.option("--include", multiple=True, metavar="GLOB", help="In folders, index only files matching GLOB (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="In folders, leave out files and folders matching GLOB (repeatable; wins over --include).")
@click.option("--hidden", is_flag=True, help="Also index hidden files and folders (names starting with '.').")
@click.option(
    "--files-from",
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=str),
    help="Also index the paths listed in FILE, one per line ('-': stdin; blank lines and # comments ignored).",
)
@click.option(
    "--errors",
    "errors_file",
    metavar="FILE",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help='Write every skipped input to FILE, one JSON object per line: {"source": ..., "reason": ...}.',
)
@click.option("--max-tokens", type=click.IntRange(min=8), default=None, help="Split texts longer than this into passages [default: what the encoder takes].")
@click.option("--overlap", type=click.IntRange(min=0), default=32, show_default=True, help="Tokens consecutive passages share.")
@click.option("--no-chunk", is_flag=True, help="Do not split long texts; the encoder truncates them.")
@click.option("--prune", is_flag=True, help="Delete the items of files that are gone from the given folders.")
@click.option("--wait", default=10.0, show_default=True, type=click.FloatRange(min=0), help="Seconds to wait for another writer to finish.")
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Read and encode on a Ray cluster: alone, a local one; 'auto' or host:port joins a running one (this process writes).",
)
@click.option("--actors", type=click.IntRange(min=1), default=None, help="Encoders on the Ray cluster [default: one per GPU, else per CPU].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
@json_option
def index(
    collection: Path,
    paths: tuple[Path, ...],
    encoder: str | None,
    index_spec: str,
    metric: str,
    db: str | None,
    batch_size: int,
    text_field: str,
    image_field: str | None,
    key_field: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    hidden: bool,
    files_from: str | None,
    errors_file: Path | None,
    max_tokens: int | None,
    overlap: int,
    no_chunk: bool,
    prune: bool,
    wait: float,
    ray_address: str | None,
    actors: int | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Index files and folders into COLLECTION, creating it when missing.

    Text files (.txt .md .html …), images (.jpg .png .webp …) and JSONL/CSV/Parquet records (a
    text or image-path field, the other fields become metadata). Files already indexed and
    unchanged are skipped, so running the same command again only adds what is new.

    Folders are walked recursively, following symbolic links (each file once, link loops
    detected), leaving out hidden entries unless --hidden. A GLOB is matched against a file's
    path relative to the folder given and against its name: '*' and '?' stay within one folder,
    '**' spans folders ('*.md', 'docs/*.md', 'docs/**/*.md'). --exclude also prunes folders
    ('node_modules'). Paths given by name or by --files-from are always indexed.

    With --ray, Ray workers read and encode (one model per actor) and this process writes each
    batch in its own transaction: a killed worker is retried, and running the command again
    after a crash finishes the job. On several machines, the files must be on a file system
    every worker sees, and the store should be PostgreSQL (--db).

    \b
    Example:
      latentsearch index papers corpus.jsonl --text-field title,text
      latentsearch index photos ~/Pictures --encoder timm:resnet50
      latentsearch index notes ~/notes --include '*.md' --exclude 'drafts/**' --errors skipped.jsonl
      find . -name '*.txt' | latentsearch index notes --files-from -
      latentsearch index papers corpus.jsonl --ray              # a local Ray cluster
      latentsearch index papers corpus.jsonl --ray head:6379 --db postgresql://…
    """
    from itertools import chain

    from .collection import Collection
    from .config import manifest_path
    from .ingest.sources import RecordFields, check_fields, check_record_fields, records_from_paths
    from .ingest.walk import SourceOptions, paths_from_list

    if not paths and files_from is None:
        raise click.UsageError("give PATHS to index, or --files-from FILE")
    if actors is not None and ray_address is None:
        raise click.UsageError("--actors sizes the Ray encoders: give --ray too")
    options = SourceOptions(include=include, exclude=exclude, hidden=hidden)
    fields = RecordFields(text=text_field, image=image_field, key=key_field, sources=options)
    check_fields(fields)
    inputs = list(chain(paths, paths_from_list(files_from)) if files_from is not None else paths)
    check_record_fields(inputs, fields)  # a field the records lack fails before the collection is made
    _check_something_to_index(records_from_paths(inputs, fields))
    engine: dict[str, Any] = {}
    if ray_address is not None:  # joined first: a cluster out of reach leaves no collection behind
        from .distributed.cluster import connect

        connect(ray_address)
        engine = {"engine": "ray", "actors": actors}
    if manifest_path(collection).exists():
        col = Collection.open(collection, encoder=encoder)
    else:
        col = Collection.create(collection, encoder=encoder or "minilm", index=index_spec, metric=metric, store=db)
    from .ingest.chunking import ChunkConfig

    chunking = None if no_chunk else ChunkConfig(max_tokens=max_tokens, overlap_tokens=overlap)
    col.lock_timeout = wait
    with col, col.writing():  # a held lock fails here, before any model loads
        if col.encoder_changed():
            click.echo(
                f"the encoder {col.config.encoder} gives different vectors than when {collection} was "
                f"built (its weights or preprocessing changed): re-embedding its {len(col)} items first",
                err=True,
            )
            col.reembed(batch_size)
        report = run_with_progress(col, inputs, fields, batch_size, quiet or as_json, prune, chunking, **engine)
    if errors_file is not None:
        with open(errors_file, "w", encoding="utf-8", errors="backslashreplace") as fh:
            for s in report.skipped:
                fh.write(json.dumps({"source": s.source, "reason": s.reason}, ensure_ascii=False) + "\n")
    if as_json:
        echo_json(report.to_dict())
    elif not quiet:
        print_report(report)
    if report.skipped:
        sys.exit(EXIT_SKIPPED)


def _check_something_to_index(records: Any) -> None:
    """An error, before any collection is made or model loaded, when the inputs hold nothing to
    index (listing them reads no file), naming the first few that were passed over."""
    passed_over = []
    for record in records:
        if not hasattr(record, "reason"):
            return
        if len(passed_over) < 3:
            passed_over.append(f"{record.source}: {record.reason}")
    why = f" ({'; '.join(passed_over)})" if passed_over else ""
    raise click.ClickException(
        "nothing to index: the paths hold no file latentsearch reads (text, image or record files; "
        f"see --include, --exclude and --hidden){why}"
    )


@cli.command()
@collection_or_url_argument
@click.argument("query", required=False)
@click.option("-k", default=10, show_default=True, type=click.IntRange(min=1), help="How many results.")
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Search by this image instead of text.")
@click.option("--documents", is_flag=True, help="Each document once, by its best passage.")
@click.option(
    "--where",
    "where_json",
    metavar="JSON",
    help='Only items this filter matches, e.g. \'{"topic": "space", "year": {"$gte": 2020}}\'.',
)
@click.option(
    "--mode",
    type=click.Choice(["dense", "lexical", "hybrid"]),
    default="dense",
    show_default=True,
    help="dense: by meaning (vectors); lexical: by words (full-text index); hybrid: both, fused.",
)
@click.option(
    "--params",
    metavar="OPTIONS",
    help="The index's search options for this query, e.g. 'efSearch=512' (HNSW), 'nprobe=64' (IVF), 'rescore=4'.",
)
@click.option("--server", metavar="URL", help="Search the collection NAME served at URL by `latentsearch serve`.")
@click.option("--token", envvar="LATENTSEARCH_TOKEN", metavar="TOKEN",
              help="The server's token, when its reads need one (env LATENTSEARCH_TOKEN, which `ps` does not show).")
@json_option
def search(
    collection: Path | str,
    query: str | None,
    k: int,
    image: Path | None,
    documents: bool,
    where_json: str | None,
    mode: str,
    params: str | None,
    server: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    """Search COLLECTION for QUERY (text) or --image.

    COLLECTION is a collection's folder, or the URL of one that `latentsearch serve` serves
    (http://host:8000/NAME, or NAME with --server URL): the server's warm model answers, and
    nothing heavy loads here, so repeated searches are fast. The output is the same.

    --where filters on metadata keys (dotted for nested ones) and on id, key, source, modality,
    document and added_at, with $eq $ne $gt $gte $lt $lte $in $nin $exists $not $and $or.

    \b
    Example:
      latentsearch search papers "do vaccines cause autism?" -k 5
      latentsearch search photos --image cat.jpg --json
      latentsearch search papers "black holes" --where '{"topic": "space", "year": {"$gte": 2020}}'
      latentsearch search papers "BRCA1 mutation" --mode hybrid
      latentsearch search papers "BRCA1 mutation" --params efSearch=512   # deeper than the index's own
      latentsearch search http://127.0.0.1:8000/papers "protein folding"
      LATENTSEARCH_TOKEN=… latentsearch search papers "protein folding" --server http://127.0.0.1:8000
    """
    if (query is None) == (image is None):
        raise click.UsageError("give a text QUERY or --image PATH (one of them)")
    if image is not None and mode != "dense":
        raise click.UsageError(f"--mode {mode} needs a text QUERY; search by --image with --mode dense")
    where = parse_where(where_json)
    target = server_target(collection, server)
    options: dict[str, Any] = {"k": k, "group_by": "document" if documents else None, "where": where, "mode": mode}
    if params:
        from .indexes.overrides import search_overrides

        options["params"] = search_overrides(params)  # a bad option fails before anything loads
    if target is not None:
        hits, stats = remote_search(*target, token, image if image is not None else query, **options)
    else:
        if click.get_current_context().get_parameter_source("token") == ParameterSource.COMMANDLINE:
            raise click.UsageError("--token is for searching through a server: give a collection URL or --server URL")
        from .collection import Collection

        with Collection.open(collection) as col:
            (hits,), stats = col.search_batch_with_stats([image if image is not None else query], **options)
    print_hits(hits, stats, k, as_json, bool(where), mode)


@cli.command()
@collection_argument
@json_option
def info(collection: Path, as_json: bool) -> None:
    """Describe COLLECTION: encoder, dimension, metric, index, size, store.

    \b
    Example:
      latentsearch info papers
    """
    from .collection import Collection

    with Collection.open(collection) as col:
        data = col.info()
    if as_json:
        echo_json(data)
        return
    width = max(map(len, data))
    for key, value in data.items():
        if value is None and key in OPTIONAL_INFO:
            continue  # no recall target, no tuning: nothing to say
        if key.endswith("_bytes") and value is not None:
            value = human_bytes(value)
        click.echo(f"{key.replace('_', ' '):<{width}}  {value}")


OPTIONAL_INFO = ("recall_target", "index_tuning", "rescore", "index_lists_resident_bytes")


@cli.command()
@collection_argument
@click.option("--id", "ids", multiple=True, type=int, help="Item id to delete (repeatable).")
@click.option("--key", "keys", multiple=True, help="Item key to delete (repeatable); file items are keyed by path.")
def delete(collection: Path, ids: tuple[int, ...], keys: tuple[str, ...]) -> None:
    """Delete items from COLLECTION by id or key.

    \b
    Example:
      latentsearch delete papers --id 12 --id 40
    """
    from .collection import Collection

    if not ids and not keys:
        raise click.UsageError("name at least one --id or --key")
    with Collection.open(collection) as col:
        n = col.delete(ids=ids, keys=keys)
    click.echo(f"deleted {n} of {len(ids) + len(keys)} items")
    missing = [f"id {i}" for i in n.missing_ids] + [f"key {k!r}" for k in n.missing_keys]
    if missing:
        click.echo(f"not found: {', '.join(missing)}", err=True)
        sys.exit(EXIT_SKIPPED)


@cli.command()
@collection_argument
@click.option("--index", "index_spec", required=True, help="New FAISS index spec, e.g. HNSW32 or IVF1024,Flat.")
@click.option("--on-disk", is_flag=True,
              help="Keep the IVF lists in a memory-mapped file beside the snapshot (indexes larger than RAM).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Build the --on-disk shards as Ray tasks: alone, on a local cluster; 'auto' or host:port joins one.")
@click.option("--shards", type=click.IntRange(min=1), default=None,
              help="Shards of an --on-disk build [default: one per 200,000 vectors, with Ray at least one per CPU].")
def reindex(collection: Path, index_spec: str, on_disk: bool, ray_address: str | None, shards: int | None) -> None:
    """Rebuild COLLECTION's index from its stored vectors (no re-encoding).

    \b
    Example:
      latentsearch reindex papers --index HNSW32
      latentsearch reindex papers --index 'IVF1024,PQ32' --on-disk --ray auto
    """
    from .collection import Collection

    with Collection.open(collection) as col:
        col.reindex(index_spec, on_disk=on_disk, ray=ray_address, shards=shards)
        index = col.index()
        click.echo(f"rebuilt the index as {index.describe()} over {index.ntotal} vectors")


@cli.command()
@json_option
def encoders(as_json: bool) -> None:
    """List the encoders: built-in ones and installed plugins.

    \b
    Example:
      latentsearch encoders
    """
    from .encoders import list_encoders

    rows = list_encoders()
    if as_json:
        echo_json([{"kind": k, "origin": o, "description": d} for k, o, d in rows])
        return
    from rich.table import Table

    table = Table("kind", "origin", "description", box=None, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    stdout_console().print(table)


from .cli_bench import bench  # noqa: E402  (the commands in other modules import nothing heavy)
from .cli_explore import cluster, clusters, explore, map_  # noqa: E402
from .cli_portable import export_, import_  # noqa: E402
from .cli_serve import serve  # noqa: E402

for command in (clusters, explore, cluster, map_, bench, serve, export_, import_):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="latentsearch")


if __name__ == "__main__":
    main()
