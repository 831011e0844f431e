"""Sources: folders, file lists, JSONL, CSV, Parquet and Python iterables become a stream of
records, or of reasons to skip an input. Nothing here raises for a bad input file.

Folders are walked in sorted order, files before subfolders. ``--include``/``--exclude`` globs
are matched against a file's path relative to the folder that was given (``/`` separated) and
against its name; a file is taken when either matches. ``*`` and ``?`` stop at ``/``, ``**`` as a
whole segment spans any number of folders (none included), ``[abc]``/``[!abc]`` are classes, and
matching is case-sensitive. With includes, a file must match one; an exclude always wins and also
prunes folders whose relative path or name matches. Hidden entries (a name starting with ``.``)
are left out unless ``hidden`` is set. Paths named explicitly (arguments, file lists) are always
taken. Symbolic links are followed; a folder reached twice (a link loop) is walked once, and a
file reached twice is one input, keyed by its resolved path.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import decimal
import errno
import functools
import html.parser
import json
import os
import re
import stat as stat_module
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import InvalidInputError
from ..types import Skipped
from .records import FileStat, Record, json_safe

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst", ".html", ".htm"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
RECORD_SUFFIXES = {".jsonl", ".ndjson", ".csv", ".parquet"}
KNOWN_SUFFIXES = TEXT_SUFFIXES | IMAGE_SUFFIXES | RECORD_SUFFIXES
ID_FIELDS = ("_id", "id", "key")
LATIN1_WARNING = "not UTF-8; read as Latin-1"
MAX_CONTROL_SHARE = 0.05  # more control characters than this and a "text" file is binary
PARQUET_BATCH_ROWS = 1024
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")  # Cc except tab, LF, CR, FF
_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass(frozen=True)
class SourceOptions:
    """Which files of a folder are inputs (see the module docstring for the glob rule)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: bool = False  # also take names starting with "."

    def __post_init__(self) -> None:
        for name in ("include", "exclude"):
            value = getattr(self, name)
            patterns = (value,) if isinstance(value, str) else tuple(value)
            object.__setattr__(self, name, patterns)
            for pattern in patterns:
                compile_glob(pattern)  # a bad pattern fails here, not deep in a walk

    def wants_file(self, rel: str, name: str) -> bool:
        if not self.hidden and name.startswith("."):
            return False
        if self.include and not matches_any(self.include, rel, name):
            return False
        return not matches_any(self.exclude, rel, name)

    def wants_folder(self, rel: str, name: str) -> bool:
        if not self.hidden and name.startswith("."):
            return False
        return not matches_any(self.exclude, rel, name)


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


class FoundFile(NamedTuple):
    path: Path  # as reached (its name decides the type: a link's target may have no suffix)
    resolved: Path  # its identity: the same file reached twice is one input


# -- globs -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """A regex for ``pattern``: ``*``/``?`` within a segment, ``**`` across segments."""
    cleaned = pattern.strip().removeprefix("./").rstrip("/")
    if not cleaned:
        raise InvalidInputError(f"the glob {pattern!r} is empty; give a pattern like '*.md' or 'docs/**'")
    segments = cleaned.split("/")
    parts = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:[^/]*/)*")
        else:
            parts.append(_glob_segment(segment) + ("" if last else "/"))
    return re.compile("".join(parts), re.DOTALL)


def _glob_segment(segment: str) -> str:
    out, i = [], 0
    while i < len(segment):
        c = segment[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := _class_end(segment, i)) > 0:
            negate = segment[i] == "!"
            body = "".join("\\" + ch if ch in "\\^[]&~|" else ch for ch in segment[i + negate : end])
            out.append(f"[^/{body}]" if negate else f"[{body}]")
            i = end + 1
        else:
            out.append(re.escape(c))
    return "".join(out)


def _class_end(segment: str, i: int) -> int:
    """Where the class opened before ``i`` closes (-1: not a class; ``[`` is then literal)."""
    j = i + (segment[i : i + 1] == "!")
    j += segment[j : j + 1] == "]"  # a leading ] is a member
    return segment.find("]", j)


def matches_any(patterns: Iterable[str], rel: str, name: str) -> bool:
    """Whether a pattern matches the path relative to the root or the name."""
    return any(bool(rx.fullmatch(rel) or rx.fullmatch(name)) for rx in map(compile_glob, patterns))


# -- finding files -----------------------------------------------------------------------------


def os_error_reason(exc: OSError, what: str = "file") -> str:
    """A short reason for a failed stat/open/read."""
    if isinstance(exc, FileNotFoundError):
        return f"{what} vanished"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return f"cannot read: {exc.strerror or exc}"


def iter_files(
    paths: Iterable[str | Path], options: SourceOptions = SourceOptions()
) -> Iterator[FoundFile | Skipped]:
    """Each file under ``paths`` once (folders walked, see the module docstring)."""
    seen: set[Path] = set()
    walked: set[str] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        try:
            st = os.stat(path)
        except FileNotFoundError:
            reason = "broken symbolic link" if os.path.islink(path) else "no such file or folder"
            yield Skipped(str(path.absolute()), reason)
            continue
        except OSError as exc:
            yield Skipped(str(path.absolute()), os_error_reason(exc))
            continue
        found = _walk(path, options, walked) if stat_module.S_ISDIR(st.st_mode) else [_found(path)]
        for item in found:
            if isinstance(item, FoundFile):
                if item.resolved in seen:
                    continue
                seen.add(item.resolved)
            yield item


def _found(path: Path) -> FoundFile | Skipped:
    try:
        return FoundFile(path, path.resolve(strict=True))
    except FileNotFoundError:
        reason = "broken symbolic link" if os.path.islink(path) else "file vanished"
        return Skipped(str(path.absolute()), reason)
    except OSError as exc:
        return Skipped(str(path.absolute()), os_error_reason(exc))
    except RuntimeError:  # a link loop, on Python versions that raise it
        return Skipped(str(path.absolute()), "symbolic link loop")


def _walk(root: Path, options: SourceOptions, walked: set[str]) -> Iterator[FoundFile | Skipped]:
    """Depth first, sorted, files before subfolders; a folder already walked is not entered again."""
    stack = [(root, os.path.realpath(root), "")]
    while stack:
        folder, real, rel = stack.pop()
        if real in walked:
            continue
        walked.add(real)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield Skipped(str(folder.absolute()), os_error_reason(exc, "folder"))
            continue
        subfolders = []
        for entry in entries:
            entry_rel = f"{rel}/{entry.name}" if rel else entry.name
            path = folder / entry.name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if options.wants_folder(entry_rel, entry.name):
                    target = os.path.realpath(path) if entry.is_symlink() else os.path.join(real, entry.name)
                    subfolders.append((path, target, entry_rel))
            elif options.wants_file(entry_rel, entry.name):
                if entry.is_symlink():
                    yield _found(path)
                else:
                    yield FoundFile(path, Path(real) / entry.name)
        stack.extend(reversed(subfolders))


def paths_from_list(name: str | Path) -> Iterator[str]:
    """The paths listed in a file (``-``: stdin), one per line; blank lines and ``#`` comments
    are ignored, relative paths are relative to the working folder."""
    if str(name) == "-":
        stream = getattr(sys.stdin, "buffer", None)
        yield from _list_lines(stream if stream is not None else sys.stdin)
        return
    with open(name, "rb") as fh:
        yield from _list_lines(fh)


def _list_lines(stream: Iterable[bytes | str]) -> Iterator[str]:
    for line in stream:
        text = line.decode("utf-8", "surrogateescape") if isinstance(line, bytes) else line
        text = text.strip()
        if text and not text.startswith("#"):
            yield text


def probe_file(path: Path) -> FileStat:
    """Size and mtime of a readable regular file (``OSError``/``ValueError`` when it is not)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat_module.S_ISREG(st.st_mode):
        raise ValueError("not a regular file")
    return FileStat(st.st_size, st.st_mtime_ns)


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


# -- text files --------------------------------------------------------------------------------


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


def decode_text(raw: bytes) -> tuple[str, str | None]:
    """UTF-8 (BOM or not), UTF-16/32 with a BOM, else Latin-1 with a warning; binary is an error."""
    warning = None
    bom = next((codec for bom, codec in _BOMS if raw.startswith(bom)), None)
    if bom is not None:
        try:
            text = raw.decode(bom)
        except UnicodeDecodeError as exc:
            raise ValueError(f"not valid {bom.upper()} text ({exc.reason} at byte {exc.start})") from None
    elif b"\0" in raw:
        raise ValueError("binary content (NUL bytes)")
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text, warning = raw.decode("latin-1"), LATIN1_WARNING
    controls = len(_CONTROL.findall(text))
    if "\0" in text or controls > MAX_CONTROL_SHARE * len(text):
        raise ValueError(f"binary content ({controls} control characters in {len(text)})")
    return text, warning


def read_text_file(path: Path) -> tuple[str, str | None]:
    """The text of a file and a warning about how it was read (None when it is UTF-8/16/32).

    Raises ``ValueError`` with the reason for an empty, binary or unreadable file and
    ``FileNotFoundError`` when it vanished; HTML is stripped to its text.
    """
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise
    except OSError as exc:
        raise ValueError(os_error_reason(exc)) from exc
    if not raw.strip():
        raise ValueError("empty file")
    text, warning = decode_text(raw)
    if path.suffix.lower() in (".html", ".htm"):
        parser = _TextOfHtml()
        parser.feed(text)
        text = " ".join(" ".join(parser.parts).split())
    if not text.strip():
        raise ValueError("no text in file")
    return text, warning
