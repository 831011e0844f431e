"""Sources: files, folders, JSONL and CSV become a stream of records (or reasons to skip)."""

from __future__ import annotations

import csv
import html.parser
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..types import Skipped
from .records import Record

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst", ".html", ".htm"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
RECORD_SUFFIXES = {".jsonl", ".ndjson", ".csv"}
ID_FIELDS = ("_id", "id", "key")


@dataclass(frozen=True)
class RecordFields:
    """Which fields of a JSONL/CSV record hold the text, the image path and the key.

    ``text`` may name several fields separated by commas; their values are joined by a space
    (``title,text`` embeds a document the way BEIR/MTEB do).
    """

    text: str = "text"
    image: str | None = None
    key: str | None = None  # default: the first of _id, id, key that the record has


class _TextOfHtml(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def decode_text(raw: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-16 with BOM, else an error; NUL bytes mean binary."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    if b"\0" in raw:
        raise ValueError("binary content (NUL bytes) in a text file")
    return raw.decode("utf-8-sig")


def read_text_file(path: Path) -> str:
    raw = path.read_bytes()
    if not raw.strip():
        raise ValueError("empty file")
    try:
        text = decode_text(raw)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 or UTF-16 text ({exc.reason} at byte {exc.start})") from None
    if path.suffix.lower() in (".html", ".htm"):
        parser = _TextOfHtml()
        parser.feed(text)
        text = " ".join(" ".join(parser.parts).split())
    if not text.strip():
        raise ValueError("no text in file")
    return text


def iter_files(paths: Iterable[str | Path]) -> Iterator[Path | Skipped]:
    """Files under ``paths`` (folders recursively, sorted, hidden entries skipped)."""
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for root, dirs, files in os.walk(path, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        elif path.is_file():
            yield path
        else:
            yield Skipped(str(path.absolute()), "no such file or folder")


def records_from_paths(
    paths: Iterable[str | Path], fields: RecordFields = RecordFields()
) -> Iterator[Record | Skipped]:
    """Text files, image files and JSONL/CSV record files as records; other files skipped."""
    for item in iter_files(paths):
        if isinstance(item, Skipped):
            yield item
            continue
        suffix = item.suffix.lower()
        source = str(item.resolve())
        if suffix in IMAGE_SUFFIXES:
            yield Record(image_path=item.resolve(), key=source, source=source)
        elif suffix in TEXT_SUFFIXES:
            try:
                yield Record(text=read_text_file(item), key=source, source=source)
            except (OSError, ValueError) as exc:
                yield Skipped(source, str(exc))
        elif suffix in RECORD_SUFFIXES:
            yield from records_from_file(item, fields)
        else:
            yield Skipped(source, f"unsupported file type {suffix or '(none)'}")


def records_from_file(path: Path, fields: RecordFields) -> Iterator[Record | Skipped]:
    """Records of a JSONL or CSV file; a line that cannot be used is skipped with its number."""
    source = str(path.resolve())
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as fh:
                for number, row in enumerate(csv.DictReader(fh), start=2):
                    yield record_from_mapping(row, fields, path, f"{source}:{number}")
        else:
            with open(path, encoding="utf-8-sig") as fh:
                for number, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    where = f"{source}:{number}"
                    try:
                        data = json.loads(line)
                    except ValueError as exc:
                        yield Skipped(where, f"not JSON ({exc})")
                        continue
                    yield record_from_mapping(data, fields, path, where)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        yield Skipped(source, f"cannot read records: {exc}")


def record_from_mapping(
    data: Any, fields: RecordFields, path: Path, where: str
) -> Record | Skipped:
    if not isinstance(data, dict):
        return Skipped(where, "record is not an object")
    key_field = fields.key or next((f for f in ID_FIELDS if data.get(f) not in (None, "")), None)
    key = str(data[key_field]) if key_field and data.get(key_field) not in (None, "") else where
    used = {key_field} if key_field else set()
    if fields.image:
        value = data.get(fields.image)
        if not value:
            return Skipped(where, f"record has no {fields.image!r} field")
        image_path = (path.parent / str(value)).resolve()
        metadata = {k: v for k, v in data.items() if k not in used | {fields.image}}
        return Record(image_path=image_path, key=key, source=str(image_path), metadata=metadata)
    names = [f.strip() for f in fields.text.split(",") if f.strip()]
    parts = [str(data[n]) for n in names if data.get(n) not in (None, "")]
    if not parts or not " ".join(parts).strip():
        return Skipped(where, f"record has no text in {fields.text!r}")
    metadata = {k: v for k, v in data.items() if k not in used and k != names[-1]}
    return Record(text=" ".join(parts).strip(), key=key, source=where, metadata=metadata)


def check_fields(fields: RecordFields) -> None:
    if fields.image is not None and not fields.image.strip():
        raise InvalidInputError("--image-field must name a field")
