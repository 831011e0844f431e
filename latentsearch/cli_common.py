"""What the ``latentsearch`` commands share: common options, JSON and table output, --where."""

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


def parse_where(text: str | None) -> dict[str, Any] | None:
    """The --where option as a dict, or a one-line error."""
    if text is None:
        return None
    try:
        where = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"--where is not valid JSON: {exc.msg} at character {exc.pos + 1}") from None
    if not isinstance(where, dict):
        raise click.ClickException(f"--where must be a JSON object such as '{{\"topic\": \"space\"}}', not {text!r}")
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
