"""What the ``latentsearch`` commands share: common options, JSON and table output, --where, and
the progress bar and summary of ``index``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def collection_argument(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.argument("collection", type=click.Path(file_okay=False, path_type=Path))(fn)


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
    col: Any, paths: Any, fields: Any, batch_size: int, quiet: bool, prune: bool, chunking: Any
) -> Any:
    """Index with a progress bar; a background count of the inputs gives it a total and an ETA."""
    import threading

    from rich.progress import (
        BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
    )

    from .ingest.sources import records_from_paths

    paths = list(paths)
    if quiet:
        return col.index_paths(paths, fields, batch_size, prune=prune, chunking=chunking)
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

        return col.index_paths(paths, fields, batch_size, progress=advance, prune=prune, chunking=chunking)


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
