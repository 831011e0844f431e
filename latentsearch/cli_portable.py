"""``latentsearch export`` and ``latentsearch import``: a collection to one portable file and back
(see :mod:`latentsearch.portable`)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from .cli_common import collection_argument, echo_json, json_option, stderr_console


@contextmanager
def _progress(total: int | None, what: str, quiet: bool) -> Iterator[Any]:
    """A callback taking a count of items done, drawing a bar on stderr (nothing when quiet)."""
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True, console=stderr_console()) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


@click.command(name="export")
@collection_argument
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl", "npy"]), default=None,
              help="File format [default: from OUT's suffix].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@json_option
def export_(collection: Path, out: Path, fmt: str | None, quiet: bool, as_json: bool) -> None:
    """Write every item of COLLECTION, with its vector, and the manifest to OUT.

    .parquet (needs pyarrow) and .jsonl exports can be imported (`latentsearch import`) on
    another machine or store without encoding anything; .npy holds the vectors alone, in id
    order. The export waits for the writer lock, so it copies one consistent state, and appears
    at OUT only when complete.

    \b
    Example:
      latentsearch export papers papers.parquet
      latentsearch export papers vectors.npy
    """
    from .collection import Collection
    from .portable import export, format_of

    kind = format_of(out, fmt)
    with Collection.open(collection) as col, _progress(len(col), "exporting", quiet or as_json) as progress:
        n = export(col, out, kind, progress)
    if as_json:
        echo_json({"path": str(out), "format": kind, "items": n})
        return
    click.echo(f"exported {n:,} items to {out} ({kind})")


@click.command(name="import")
@click.argument("collection", type=click.Path(file_okay=False, path_type=Path))
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--db", default=None, help="SQLAlchemy URL of the new collection's store [default: SQLite in its folder].")
@click.option("--new-ids", is_flag=True, help="Number the items 1, 2, … instead of keeping their ids.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl"]), default=None, help="File format [default: from SOURCE's suffix].")
@click.option("--trust-remote-code", is_flag=True, help="Allow an encoder spec in SOURCE that runs Python code (torch: factories, trust_remote_code=true).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@json_option
def import_(collection: Path, source: Path, db: str | None, new_ids: bool, fmt: str | None, trust_remote_code: bool,
            quiet: bool, as_json: bool) -> None:
    """Create COLLECTION from SOURCE, an export of `latentsearch export`, encoding nothing.

    The new collection pins the same encoder (spec and fingerprint: a query with another model is
    refused), keeps the items' ids unless --new-ids, and is built aside and moved into place
    when complete: an import that is killed leaves nothing; run it again.

    \b
    Example:
      latentsearch import papers-copy papers.parquet
      latentsearch import papers papers.jsonl --db postgresql+psycopg://localhost/search
    """
    from .portable import import_collection, read_header

    read_header(source, fmt)  # a bad file is refused before anything is made
    with _progress(None, "importing", quiet or as_json) as progress:
        n = import_collection(source, collection, db, new_ids, trust_remote_code, fmt, progress)
    if as_json:
        echo_json({"path": str(collection), "items": n})
        return
    click.echo(f"imported {n:,} items into {collection}")
