"""Sources: folders, file lists, JSONL, CSV, Parquet and Python iterables become a stream of
records, or of reasons to skip an input. Nothing here raises for a bad input file. Which files a
folder gives is :mod:`.walk`'s rule; how a text file is read is :mod:`.readers`'.
"""

from __future__ import annotations

import csv
import datetime
import decimal
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..types import Skipped
from .records import Record, json_safe
from .walk import SourceOptions, iter_files, os_error_reason, probe_file

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst", ".html", ".htm"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
RECORD_SUFFIXES = {".jsonl", ".ndjson", ".csv", ".parquet"}
KNOWN_SUFFIXES = TEXT_SUFFIXES | IMAGE_SUFFIXES | RECORD_SUFFIXES
ID_FIELDS = ("_id", "id", "key")
PARQUET_BATCH_ROWS = 1024


@dataclass(frozen=True)
class RecordFields:
    """Which fields of a JSONL/CSV/Parquet record hold the text, the image path and the key,
    and (``sources``) which files of a folder are inputs.

    ``text`` may name several fields separated by commas; their values are joined by a space
    (``title,text`` embeds a document the way BEIR/MTEB do).
    """

    text: str = "text"
    image: str | None = None
    key: str | None = None  # default: the first of _id, id, key that the record has
    sources: SourceOptions = field(default_factory=SourceOptions)


# -- records -----------------------------------------------------------------------------------


def records_from_paths(
    paths: Iterable[str | Path], fields: RecordFields = RecordFields()
) -> Iterator[Record | Skipped]:
    """Text files, image files and JSONL/CSV/Parquet record files as records; the rest skipped."""
    for found in iter_files(paths, fields.sources):
        if isinstance(found, Skipped):
            yield found
            continue
        path, resolved = found
        source = str(resolved)
        suffix = path.suffix.lower()
        if suffix not in KNOWN_SUFFIXES:
            yield Skipped(source, f"unsupported file type {suffix or '(none)'}")
            continue
        try:
            stat = probe_file(resolved)
        except OSError as exc:
            yield Skipped(source, os_error_reason(exc))
            continue
        except ValueError as exc:
            yield Skipped(source, str(exc))
            continue
        if stat.size == 0:
            yield Skipped(source, "empty file")
        elif suffix in IMAGE_SUFFIXES:
            yield Record(image_path=resolved, key=source, source=source, stat=stat)
        elif suffix in TEXT_SUFFIXES:
            yield Record(text_path=resolved, key=source, source=source, stat=stat)
        else:
            yield from records_from_file(path, fields)


def records_from_file(path: Path, fields: RecordFields) -> Iterator[Record | Skipped]:
    """Records of a JSONL, CSV or Parquet file; a record that cannot be used is skipped with its
    line (JSONL, CSV) or row number (Parquet, from 1)."""
    source = str(path.resolve())
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _records_from_parquet(path, fields, source)
        return
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as fh:
                for number, row in enumerate(csv.DictReader(fh), start=2):
                    yield record_from_mapping(row, fields, path.parent, f"{source}:{number}")
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
                    yield record_from_mapping(data, fields, path.parent, where)
    except OSError as exc:
        yield Skipped(source, os_error_reason(exc))
    except (UnicodeDecodeError, csv.Error) as exc:
        yield Skipped(source, f"cannot read records: {exc}")


def _records_from_parquet(path: Path, fields: RecordFields, source: str) -> Iterator[Record | Skipped]:
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        yield Skipped(source, "install pyarrow to read Parquet")
        return
    row = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for data in batch.to_pylist():
                row += 1
                data = {k: v for k, v in data.items() if not k.startswith("__index_level_")}  # pandas
                yield record_from_mapping(data, fields, path.parent, f"{source}:{row}")
    except OSError as exc:
        yield Skipped(source, os_error_reason(exc))
    except (ValueError, pyarrow.ArrowException) as exc:
        yield Skipped(source, f"cannot read Parquet after {row} rows: {exc}")


def records_from_iterable(
    items: Iterable[Mapping[str, Any]], fields: RecordFields = RecordFields(), source: str = "item"
) -> Iterator[Record | Skipped]:
    """Records from Python dicts, by the rules of a JSONL line: values may be numpy or arrow
    scalars; image paths are relative to the working folder. A dict without a key field gets no
    key (each run adds it again); a bad one is skipped as ``"{source}:{n}"`` (n from 1)."""
    folder = Path.cwd()
    for number, data in enumerate(items, start=1):
        yield record_from_mapping(data, fields, folder, f"{source}:{number}", anonymous=True)


def record_from_mapping(
    data: Any, fields: RecordFields, folder: Path, where: str, anonymous: bool = False
) -> Record | Skipped:
    """One record, or why not. Without a key it is keyed (and sourced) by ``where``, the file
    and line, unless ``anonymous``; relative image paths are relative to ``folder``."""
    if not isinstance(data, Mapping):
        return Skipped(where, "record is not an object")
    try:
        return _record(data, fields, folder, where, None if anonymous else where)
    except InvalidInputError as exc:
        return Skipped(where, str(exc))


def _record(
    data: Mapping[str, Any], fields: RecordFields, folder: Path, where: str, fallback: str | None
) -> Record | Skipped:
    if fields.key and _missing(data.get(fields.key)):
        return Skipped(where, f"record has no key in {fields.key!r}")
    key_field = fields.key or next((f for f in ID_FIELDS if not _missing(data.get(f))), None)
    key = str(json_value(data[key_field], f"field {key_field!r}")) if key_field else fallback
    used = {key_field} if key_field else set()
    if fields.image:
        if _missing(data.get(fields.image)):
            return Skipped(where, f"record has no {fields.image!r} field")
        image_path = (folder / str(data[fields.image])).resolve()
        used.add(fields.image)
        text, source = None, str(image_path)
    else:
        names = [f.strip() for f in fields.text.split(",") if f.strip()]
        parts = [str(json_value(data[n], f"field {n!r}")) for n in names if not _missing(data.get(n))]
        text = " ".join(parts).strip() or None
        if text is None:
            return Skipped(where, f"record has no text in {fields.text!r}")
        used.add(names[-1])  # earlier text fields (a title) stay in the metadata too
        image_path, source = None, fallback
    metadata = {str(k): json_value(v, f"field {k!r}") for k, v in data.items() if k not in used}
    return Record(text=text, image_path=image_path, key=key, source=source, metadata=metadata)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value == "")


def json_value(value: Any, where: str = "value") -> Any:
    """``value`` as JSON: arrow/numpy scalars plain, dates ISO 8601, decimals floats, UTF-8 bytes
    text; anything else that JSON cannot hold raises :class:`InvalidInputError`."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError(f"{where} holds binary data, which metadata cannot store") from None
    if hasattr(value, "as_py"):  # a pyarrow scalar
        return json_value(value.as_py(), where)
    if isinstance(value, Mapping):
        return {str(k): json_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v, where) for v in value]
    return json_safe(value, where)


def check_fields(fields: RecordFields) -> None:
    if fields.image is not None and not fields.image.strip():
        raise InvalidInputError("--image-field must name a field")
    if not any(f.strip() for f in fields.text.split(",")):
        raise InvalidInputError("--text-field must name at least one field")
    if fields.key is not None and not fields.key.strip():
        raise InvalidInputError("--key-field must name a field")
