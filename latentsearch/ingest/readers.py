"""Reading text files: encodings detected (UTF-8, UTF-16/32 with a BOM, Latin-1 reported),
binary content refused, HTML reduced to its text."""

from __future__ import annotations

import codecs
import html.parser
import re
from pathlib import Path
from typing import Any

from .walk import os_error_reason

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
