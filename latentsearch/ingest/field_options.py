"""The record fields each record file was indexed with, so that indexing it again with other
fields says what will be replaced before it is.

The options are kept in the store's ``info`` table (one JSON object, by the file's absolute
path), written by the write that indexes the files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ..types import Skipped
from .sources import RECORD_SUFFIXES, RecordFields

if TYPE_CHECKING:
    from ..stores.sql import SqlStore

INFO_NAME = "record_fields"


def _options(fields: RecordFields) -> dict[str, str | None]:
    return {"text": fields.text, "image": fields.image, "key": fields.key}


def _record_files(paths: Iterable[str | Path]) -> list[str]:
    """The record files named in ``paths`` (not those found in folders), as absolute paths."""
    out = []
    for p in paths:
        path = Path(p).expanduser()
        if path.suffix.lower() in RECORD_SUFFIXES and path.is_file():
            out.append(str(path.resolve()))
    return out


def _stored(store: SqlStore) -> dict[str, dict[str, str | None]]:
    try:
        return dict(json.loads(store.info().get(INFO_NAME, "{}")))
    except (TypeError, ValueError):
        return {}


def _describe(options: dict[str, str | None]) -> str:
    parts = [f"--text-field {options['text']}"]
    parts += [f"--{name}-field {options[name]}" for name in ("image", "key") if options.get(name)]
    return " ".join(parts)


def field_changes(store: SqlStore, paths: Iterable[str | Path], fields: RecordFields) -> list[Skipped]:
    """A warning for each named record file indexed before with other record fields: its items
    will be replaced by what the new fields make (and the passages they no longer make removed)."""
    before = _stored(store)
    now = _options(fields)
    return [
        Skipped(path, f"indexed before with {_describe(before[path])}, now with {_describe(now)}: "
                      "its items will be replaced by what the new fields give")
        for path in _record_files(paths)
        if path in before and before[path] != now
    ]


def remember_fields(store: SqlStore, paths: Iterable[str | Path], fields: RecordFields) -> None:
    """Record the fields the named record files were indexed with (a write)."""
    files = _record_files(paths)
    if files:
        stored = _stored(store)
        stored.update({path: _options(fields) for path in files})
        store.set_info(INFO_NAME, json.dumps(stored, sort_keys=True))
