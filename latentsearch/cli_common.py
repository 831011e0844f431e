"""What the ``latentsearch`` commands share: common options, JSON and table output, --where,
the progress bar and summary of ``index``, and searching through a running server."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def collection_argument(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("collection", type=click.Path(file_okay=False, path_type=Path))(fn)


def is_url(text: str) -> bool:
    return re.match(r"https?://", text, flags=re.IGNORECASE) is not None


class CollectionOrURL(click.Path):
    """A collection's folder (a ``Path``, checked as ``collection_argument`` checks it), or the
    URL of a served collection, ``http://host:8000/NAME`` (kept as text)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and is_url(value):
            return value
        return super().convert(value, param, ctx)


def collection_or_url_argument(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("collection", type=CollectionOrURL(file_okay=False, path_type=Path))(fn)


def server_target(collection: Path | str, server: str | None) -> tuple[str, str] | None:
    """``(server URL, collection name)`` when COLLECTION is a URL or --server is given, else None
    (a local collection)."""
    if isinstance(collection, str):
        if server is not None:
            raise click.UsageError("COLLECTION is a URL already: give either the URL or --server URL with the collection's NAME")
        parts = _checked_url(collection, "COLLECTION", "http://127.0.0.1:8000/papers")
        base, _, name = parts.path.rstrip("/").rpartition("/")
        if not name:
            raise click.UsageError(f"the URL {collection} names no collection: end it with the collection's name, e.g. {collection.rstrip('/')}/papers")
        base = re.sub(r"/api/collections$", "", base)  # the API's own URL of the collection works too
        from urllib.parse import unquote

        return f"{parts.scheme}://{parts.netloc}{base}", unquote(name)
    if server is None:
        return None
    _checked_url(server, "--server", "http://127.0.0.1:8000")
    name = str(collection)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise click.UsageError(
            f"with --server, COLLECTION is the name the server serves it under (its folder's name, "
            f"e.g. {Path(name).name!r}), not a path"
        )
    return server.rstrip("/"), name


def _checked_url(url: str, what: str, example: str) -> Any:
    """The parts of an http(s) URL with a host, a valid port and no query, or a usage error."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        valid = is_url(url) and bool(parts.hostname) and not parts.query and not parts.fragment
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number in range)
    except ValueError:
        valid = False
    if not valid:
        raise click.UsageError(f"{what} is not a URL such as {example}: {url!r}")
    return parts


def remote_search(url: str, name: str, token: str | None, query: Any, **options: Any) -> tuple[list[Any], Any]:
    """One search of the collection ``name`` served at ``url`` (``latentsearch serve``): the hits
    and the filter's stats, as ``Collection.search_batch_with_stats`` gives them. Only httpx is
    imported here: no model, index or database. Errors become one-line messages."""
    from .errors import CollectionNotFoundError
    from .serve.errors import AccessDeniedError, ServiceUnavailableError, TokenRequiredError

    try:
        from .serve.client import Client

        client = Client(url, token)
    except ImportError as exc:
        raise click.ClickException(f"searching through a server needs httpx: pip install 'latentsearch[server]' ({exc})") from None
    with client:
        try:
            (hits,), stats = client.collection(name).search_batch_with_stats([query], **options)
        except TokenRequiredError:
            raise click.ClickException(
                f"the server at {url} needs a token to search: pass --token TOKEN or set LATENTSEARCH_TOKEN"
            ) from None
        except AccessDeniedError as exc:
            raise click.ClickException(
                f"the server at {url} refused the token ({exc}): check --token or LATENTSEARCH_TOKEN"
            ) from None
        except ServiceUnavailableError as exc:
            if getattr(exc, "status", None) is not None:  # an answer (503: still starting), not a failed connection
                raise
            reason = " ".join(str(exc.__cause__ or exc).split()) or type(exc.__cause__).__name__
            from urllib.parse import urlsplit

            port = urlsplit(url).port or (443 if url.lower().startswith("https") else 80)
            raise click.ClickException(
                f"cannot reach a latentsearch server at {url} ({reason}): check the URL, or start the "
                f"server with `latentsearch serve PATH/TO/{name} --port {port}`"
            ) from None
        except CollectionNotFoundError as exc:
            raise click.ClickException(f"{exc}{_served_names(client)}") from None
    return hits, stats


def _served_names(client: Any) -> str:
    try:
        names = client.collections()
    except Exception:  # the 404 said enough; the listing is a courtesy
        return ""
    return f" (the server at {client.url} serves: {', '.join(names) or 'nothing'})"


def print_hits(hits: list[Any], stats: Any, k: int, as_json: bool, filtered: bool, mode: str) -> None:
    """A search's results: a table (with what the filter matched on stderr), or JSON."""
    if stats is not None and stats.matches and len(hits) < k and not as_json:
        click.echo(f"{stats.matches} item{'' if stats.matches == 1 else 's'} match the filter", err=True)
    if stats is not None and not stats.matches and not as_json:
        why = stats.explanation
        click.echo(f"no item matches the filter: {why}" if why else "no item matches the filter", err=True)
    if as_json:
        echo_json([h.to_dict() for h in hits])
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    id_width = max([len(str(h.id)) for h in hits] + [2])
    rank_width = len(str(max(len(hits), 1)))  # not k: a huge k returns every item, no more
    for name, width in (("#", rank_width), ("score", 7), ("id", id_width)):
        table.add_column(name, no_wrap=True, min_width=width)
    labels = [source_label(h) for h in hits]
    source_width = min(40, max([len(x) for x in labels] + [6]))
    table.add_column("source", no_wrap=True, min_width=source_width, max_width=40, overflow="ellipsis")
    console = stdout_console()
    fixed = rank_width + 7 + id_width + source_width + 8  # the other columns and the gaps
    table.add_column("text", no_wrap=True, overflow="ellipsis", max_width=max(20, console.width - fixed))
    for rank, (hit, label) in enumerate(zip(hits, labels), start=1):
        table.add_row(str(rank), f"{hit.score:.4f}", str(hit.id), label, hit.snippet(200))
    console.print(table)
    if not hits:
        if filtered:
            click.echo("no results (no item matches the filter)")
        elif mode == "lexical":
            click.echo("no results (no item's text has a word of the query)")
        else:
            click.echo("no results (the collection is empty)")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


MAX_JSON_NESTING = 100  # json.loads recurses per level; the filter's own limits are checked on search


def json_nesting(text: str, limit: int = MAX_JSON_NESTING) -> int:
    """How deeply the objects and arrays of a JSON text nest (strings skipped), counting no
    further than ``limit + 1``: a cheap scan before a parser that recurses per level."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_where(text: str | None) -> dict[str, Any] | None:
    """The --where option as a dict, or a one-line error."""
    if text is None:
        return None
    if json_nesting(text) > MAX_JSON_NESTING:
        raise click.ClickException(
            f"--where nests objects and arrays more than {MAX_JSON_NESTING} levels deep; flatten it "
            '(one $and or $or takes a list of any number of conditions: {"$and": [{...}, {...}]})'
        )
    try:
        where = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"--where is not valid JSON: {exc.msg} at character {exc.pos + 1}") from None
    if not isinstance(where, dict):
        shown = text if len(text) <= 80 else text[:77] + "…"
        raise click.ClickException(f"--where must be a JSON object such as '{{\"topic\": \"space\"}}', not {shown!r}")
    return where


def source_label(hit: Any) -> str:
    """The file name for file items (its folder rarely fits), else the key."""
    if hit.source and hit.key == hit.source:
        return Path(hit.source).name
    if hit.source and "/" in hit.source and hit.key and hit.key.startswith("/"):
        return Path(hit.source).name
    return hit.key or (Path(hit.source).name if hit.source else "")


def stdout_console() -> Any:
    from rich.console import Console

    return Console(soft_wrap=False)


def run_with_progress(
    col: Any, paths: Any, fields: Any, batch_size: int, quiet: bool, prune: bool, chunking: Any, **engine: Any
) -> Any:
    """Index with a progress bar; a background count of the inputs gives it a total and an ETA
    (``engine``: ``engine=`` and ``actors=`` of ``index_paths``)."""
    import threading

    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    from .ingest.sources import records_from_paths

    paths = list(paths)
    if quiet:
        return col.index_paths(paths, fields, batch_size, prune=prune, chunking=chunking, **engine)
    columns = (
        SpinnerColumn(),
        TextColumn("indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("inputs · {task.fields[rate]:.1f} inputs/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True, console=stderr_console()) as bar:
        task = bar.add_task("index", total=None, rate=0.0)

        def count() -> None:  # lists the inputs (files, records) without reading them
            bar.update(task, total=sum(1 for _ in records_from_paths(paths, fields)))

        threading.Thread(target=count, name="latentsearch-count", daemon=True).start()

        def advance(n: int) -> None:
            bar.advance(task, n)
            elapsed = bar.tasks[0].elapsed or 0.0
            bar.update(task, rate=bar.tasks[0].completed / elapsed if elapsed else 0.0)

        return col.index_paths(paths, fields, batch_size, progress=advance, prune=prune, chunking=chunking, **engine)


def print_report(report: Any) -> None:
    pruned = f", pruned {report.pruned}" if report.pruned else ""
    removed = f", removed {report.removed} passages no longer in their document" if report.removed else ""
    click.echo(
        f"{report.inputs} inputs: added {report.added} items, updated {report.updated}{removed}, "
        f"unchanged {report.unchanged}, skipped {len(report.skipped)}{pruned} in {report.seconds:.1f} s "
        f"({report.items_per_second:.1f} items/s)"
    )
    if report.stages:
        busy = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in report.stages.items())
        click.echo(f"  stages (busy time, overlapping): {busy}")
    for w in report.warnings[:20]:
        click.echo(f"  warning {w.source}: {w.reason}", err=True)
    for s in report.skipped[:20]:
        click.echo(f"  skipped {s.source}: {s.reason}", err=True)
    if len(report.skipped) > 20:
        click.echo(f"  … and {len(report.skipped) - 20} more", err=True)


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
