"""Sources: folders, file lists, JSONL, CSV, Parquet and Python iterables become a stream of
records, or of reasons to skip an input. Which files a folder gives is :mod:`.walk`'s rule; how a
text file is read is :mod:`.readers`'.

Nothing here raises for a bad input file, with one exception: the record fields the options name.
Each name in ``RecordFields.text`` (or ``image`` when it is set, and ``key`` when set) must be a
field of the *first record* of every JSONL/CSV/Parquet file: the first line that is a JSON
object (JSONL), the header row (CSV), the schema's columns (Parquet). A value may be null or
empty (that record is then skipped as before); a name that is not there at all is a typo or a
file of another shape. For a record file named in ``paths`` that is a :class:`MissingFieldError`,
raised by :func:`records_from_paths` before any record is read (so before anything is written);
a record file found by walking a folder is skipped whole with the same reason, since a folder may
hold record files of other shapes.

JSONL and CSV files are read line by line as bytes, each line decoded on its own: a line that
is not UTF-8, not JSON, not CSV, or over :data:`.lines.MAX_RECORD_BYTES` is skipped with its number
(``file:50``) and the lines after it are read as before. Names that are not UTF-8 (a file name
in another encoding) are refused input by input with the reason, never stopping the walk.
"""

from __future__ import annotations

import datetime
import decimal
import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InvalidInputError, MissingFieldError
from ..media import IMAGE_SUFFIXES
from ..types import Skipped
from .lines import Bad, csv_rows, jsonl_values
from .readers import MAX_TEXT_FILE_BYTES, open_regular, too_large
from .records import NOT_CONVERTED, Record, json_safe, make_storable, printable
from .walk import SourceOptions, iter_files, os_error_reason, probe_file

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst", ".html", ".htm"}
RECORD_SUFFIXES = {".jsonl", ".ndjson", ".csv", ".parquet"}
KNOWN_SUFFIXES = TEXT_SUFFIXES | IMAGE_SUFFIXES | RECORD_SUFFIXES
ID_FIELDS = ("_id", "id", "key")
PARQUET_BATCH_ROWS = 1024
FIRST_RECORD_LINES = 1000  # JSONL lines read for a first record that is a JSON object
LISTED_FIELDS = 40  # field names an error lists


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
    max_text_bytes: int = MAX_TEXT_FILE_BYTES  # a larger text file is skipped, and never read whole


# -- records -----------------------------------------------------------------------------------


def records_from_paths(
    paths: Iterable[str | Path], fields: RecordFields = RecordFields()
) -> Iterator[Record | Skipped]:
    """Text files, image files and JSONL/CSV/Parquet record files as records; the rest skipped.

    Raises :class:`MissingFieldError` at once, before any record is read, when the first record
    of a record file named in ``paths`` lacks a field that ``fields`` names (module docstring).
    """
    paths = list(paths)
    check_record_fields(paths, fields)
    return _records_from_paths(paths, fields)


def _records_from_paths(paths: list[str | Path], fields: RecordFields) -> Iterator[Record | Skipped]:
    for found in iter_files(paths, fields.sources):
        if isinstance(found, Skipped):
            yield Skipped(printable(found.source), found.reason)
            continue
        path, resolved = found
        source = str(resolved)
        suffix = path.suffix.lower()
        if printable(source) != source:  # bytes that are not UTF-8, kept by os.fsdecode
            reason = "the file name is not UTF-8, and the store keeps names as UTF-8 text; rename the file"
            yield Skipped(printable(source), reason)
            continue
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
            if stat.size > fields.max_text_bytes:
                yield Skipped(source, too_large(stat.size, fields.max_text_bytes))
            else:
                yield Record(text_path=resolved, key=source, source=source, stat=stat, max_bytes=fields.max_text_bytes)
        else:
            yield from records_from_file(path, fields)


def records_from_file(path: Path, fields: RecordFields) -> Iterator[Record | Skipped]:
    """Records of a JSONL, CSV or Parquet file; a record that cannot be used is skipped with its
    line (JSONL, CSV: the line the row starts on) or row number (Parquet, from 1), and a file whose
    first record lacks a field that ``fields`` names is skipped whole (see the module docstring)."""
    source = str(path.resolve())
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _records_from_parquet(path, fields, source)
        return
    try:
        with open_regular(path) as fh:
            if suffix == ".csv":
                yield from _records_from_csv(fh, fields, path.parent, source)
            else:
                yield from _records_from_jsonl(fh, fields, path.parent, source)
    except OSError as exc:
        yield Skipped(source, os_error_reason(exc))
    except ValueError as exc:  # not a regular file
        yield Skipped(source, str(exc))


def _records_from_jsonl(fh: BinaryIO, fields: RecordFields, folder: Path, source: str) -> Iterator[Record | Skipped]:
    checked = False
    for number, data in jsonl_values(fh):
        where = f"{source}:{number}"
        if isinstance(data, Bad):
            yield Skipped(where, data.reason)
            continue
        if not checked and isinstance(data, Mapping):
            checked = True
            if reason := missing_fields_reason(fields, list(data)):
                yield Skipped(source, reason)
                return
        yield record_from_mapping(data, fields, folder, where)


def _records_from_csv(fh: BinaryIO, fields: RecordFields, folder: Path, source: str) -> Iterator[Record | Skipped]:
    rows = csv_rows(fh)
    header = next(rows, None)
    if header is None:
        return
    if isinstance(header[1], Bad):
        yield Skipped(source, f"cannot read the header row: {header[1].reason}")
        return
    names = header[1]
    if reason := missing_fields_reason(fields, names):
        yield Skipped(source, reason)
        return
    for number, row in rows:
        where = f"{source}:{number}"
        if isinstance(row, Bad):
            yield Skipped(where, row.reason)
        elif row:  # (csv.DictReader's rules: blank rows skipped, missing values None, extras under None)
            data: dict[Any, Any] = dict(zip(names, row))
            if len(row) > len(names):
                data[None] = row[len(names):]
            for name in names[len(row):]:
                data[name] = None
            yield record_from_mapping(data, fields, folder, where)


def _records_from_parquet(path: Path, fields: RecordFields, source: str) -> Iterator[Record | Skipped]:
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ImportError:
        yield Skipped(source, "install pyarrow to read Parquet")
        return
    row = 0
    try:
        parquet = pq.ParquetFile(path)
        if reason := missing_fields_reason(fields, _parquet_columns(parquet)):
            yield Skipped(source, reason)
            return
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for data in batch.to_pylist():
                row += 1
                data = {k: v for k, v in data.items() if not k.startswith("__index_level_")}  # pandas
                yield record_from_mapping(data, fields, path.parent, f"{source}:{row}")
    except OSError as exc:
        yield Skipped(source, os_error_reason(exc))
    except (ValueError, pyarrow.ArrowException) as exc:
        yield Skipped(source, f"cannot read Parquet after {row} rows: {exc}")


def _parquet_columns(parquet: Any) -> list[str]:
    return [n for n in parquet.schema_arrow.names if not n.startswith("__index_level_")]  # pandas


# -- the fields the options name ---------------------------------------------------------------


def named_fields(fields: RecordFields) -> list[tuple[str, str]]:
    """``(role, name)`` of each record field ``fields`` names, as records are read: the image
    field when set (the text field is then unused), else each text field; and the key field."""
    if fields.image:
        named = [("image", fields.image)]
    else:
        named = [("text", n.strip()) for n in fields.text.split(",") if n.strip()]
    return named + ([("key", fields.key)] if fields.key else [])


def missing_fields_reason(
    fields: RecordFields, names: Sequence[str], subject: str = "the first record"
) -> str | None:
    """Why a record file whose first record has the fields ``names`` cannot be read with
    ``fields``, or ``None`` when it has every field that ``fields`` names."""
    present = set(names)
    missing = [(role, name) for role, name in named_fields(fields) if name not in present]
    if not missing:
        return None
    what = " and no ".join(f"{role} field {name!r}" for role, name in missing)
    listed = ", ".join(str(n) for n in names[:LISTED_FIELDS])
    if len(names) > LISTED_FIELDS:
        listed += f", … ({len(names) - LISTED_FIELDS} more)"
    reason = f"{subject} has no {what}; its fields are: {listed or '(none)'}"
    close = difflib.get_close_matches(missing[0][1], [str(n) for n in names], n=1)
    return reason + (f". Did you mean {close[0]!r}?" if close else "")


def first_record_fields(path: Path) -> list[str] | None:
    """The field names of the first record of a JSONL, CSV or Parquet file (module docstring),
    or ``None`` when it has none or cannot be read (reading it again reports why)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return _parquet_columns(pq.ParquetFile(path))
        with open_regular(path) as fh:
            if suffix == ".csv":
                header = next(csv_rows(fh), None)
                return header[1] if header is not None and not isinstance(header[1], Bad) else None
            for count, (_, data) in enumerate(jsonl_values(fh)):
                if isinstance(data, Mapping):
                    return [str(k) for k in data]
                if count + 1 >= FIRST_RECORD_LINES:
                    break
    except Exception:  # unreadable: the records stream says why, file by file
        return None
    return None


def check_record_fields(paths: Iterable[str | Path], fields: RecordFields) -> None:
    """Raise :class:`MissingFieldError` when the first record of a JSONL/CSV/Parquet file named
    in ``paths`` (not one found in a folder) lacks a field that ``fields`` names."""
    for raw in paths:
        path = Path(raw).expanduser()
        if path.suffix.lower() not in RECORD_SUFFIXES or not path.is_file():
            continue
        names = first_record_fields(path)
        subject = f"the first record of {printable(str(path.resolve()))}"
        if names is not None and (reason := missing_fields_reason(fields, names, subject)):
            raise MissingFieldError(reason)


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
        record = _record(data, fields, folder, where, None if anonymous else where)
        if isinstance(record, Record):
            make_storable(record, whole=False)  # (the text's size is checked on its passages)
        return record
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
    """``value`` as JSON (see :func:`~latentsearch.ingest.records.json_safe`), and more: arrow
    scalars plain, dates ISO 8601, decimals floats, UTF-8 bytes text; anything else that JSON
    cannot hold raises :class:`InvalidInputError`."""
    return json_safe(value, where, _record_value)


def _record_value(value: Any, where: str) -> Any:
    """A value of a record that is not JSON as JSON (or ``NOT_CONVERTED``)."""
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
        return value.as_py()
    return NOT_CONVERTED


def check_fields(fields: RecordFields) -> None:
    if fields.image is not None and not fields.image.strip():
        raise InvalidInputError("--image-field must name a field")
    if not any(f.strip() for f in fields.text.split(",")):
        raise InvalidInputError("--text-field must name at least one field")
    if fields.key is not None and not fields.key.strip():
        raise InvalidInputError("--key-field must name a field")
