"""Reading text files: encodings detected (UTF-8, UTF-16/32 with a BOM, Latin-1 reported),
binary content refused, HTML reduced to its text; never more than a bounded number of bytes, and
only from a regular file (a file replaced by a FIFO or a link to ``/dev/zero`` after it was listed
is refused, not read forever)."""

from __future__ import annotations

import codecs
import html.parser
import os
import re
import stat as stat_module
from pathlib import Path
from typing import Any, BinaryIO

from .walk import os_error_reason

MAX_TEXT_FILE_BYTES = 64 * 1024 * 1024
"""The largest text file read (bytes); a larger one is skipped (``RecordFields.max_text_bytes``)."""

LATIN1_WARNING = "not UTF-8; read as Latin-1"
MAX_CONTROL_SHARE = 0.05  # more control characters than this and a "text" file is binary
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")  # Cc except tab, LF, CR, FF
_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


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


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading bytes, or ``ValueError("not a regular file")``: opened without
    blocking (a FIFO would wait for a writer) and checked after opening, so what is read is what
    was checked."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat_module.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def too_large(size: int, limit: int) -> str:
    """The reason a text file of ``size`` bytes is skipped."""
    return (
        f"text file of {size:,} bytes or more, over the limit of {limit:,} "
        "(RecordFields.max_text_bytes); split it, or raise the limit"
    )


def read_text_file(path: Path, max_bytes: int = MAX_TEXT_FILE_BYTES) -> tuple[str, str | None]:
    """The text of a file and a warning about how it was read (None when it is UTF-8/16/32).

    Raises ``ValueError`` with the reason for an empty, binary, unreadable or too large file (at
    most ``max_bytes + 1`` bytes are read, whatever the file claims to be) and
    ``FileNotFoundError`` when it vanished; HTML is stripped to its text.
    """
    try:
        with open_regular(path) as fh:
            raw = fh.read(max_bytes + 1)
    except (FileNotFoundError, IsADirectoryError):
        raise
    except OSError as exc:
        raise ValueError(os_error_reason(exc)) from exc
    if len(raw) > max_bytes:
        raise ValueError(too_large(len(raw), max_bytes))
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
