"""Files in and out of the server: uploaded query images, and the indexed file of an item.

An upload is decoded by :func:`latentsearch.media.open_image` (given the spooled upload as a
binary file, which Pillow opens as it opens a path): the same EXIF, mode and
decompression-bomb rules as ingestion, after a byte-size check.

``GET …/items/{id}/file`` sends only the file an image or text item was indexed from: the
item's ``source``, which indexing stored as an absolute, fully resolved path. The path must
still be exactly that: absolute, without ``.``/``..`` parts, with no symbolic link anywhere on
it (a link swapped in after indexing would point elsewhere), naming a regular file with a
suffix of its modality. It is opened without following links and checked on the open
descriptor, so nothing can be swapped between the check and the read. Anything else is a 404
that does not say which rule failed for which path.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from PIL import UnidentifiedImageError

from ..errors import InvalidInputError
from ..ingest.sources import TEXT_SUFFIXES
from ..media import IMAGE_SUFFIXES, open_image
from ..types import IMAGE, TEXT
from .errors import ItemNotFoundError, PayloadTooLargeError

CHUNK = 256 * 1024


def decode_upload(fh: IO[bytes], size: int | None, limit: int, filename: str | None) -> Any:
    """The uploaded image as an RGB PIL image, or an error saying why not."""
    if size is None:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
    if size > limit:
        raise PayloadTooLargeError(f"the image is {size:,} bytes; this server takes images up to {limit:,} bytes")
    if size == 0:
        raise InvalidInputError("the uploaded image is empty")
    fh.seek(0)
    label = f" {filename!r}" if filename else ""
    try:
        return open_image(fh)  # type: ignore[arg-type]  # Pillow opens binary files as paths
    except Exception as exc:
        if isinstance(exc.__cause__, UnidentifiedImageError):  # its message names the temporary file
            raise InvalidInputError(
                f"the uploaded file{label} is not an image this server can read (JPEG, PNG, WebP, GIF, BMP or TIFF)"
            ) from None
        raise InvalidInputError(f"cannot read the uploaded image{label}: {exc}") from None


class ItemFile:
    """An item's indexed file, opened and checked; iterate to read it, then :meth:`close`."""

    def __init__(self, fd: int, size: int, name: str, media_type: str):
        self.fd, self.size, self.name, self.media_type = fd, size, name, media_type

    def chunks(self) -> Iterator[bytes]:
        try:
            while block := os.read(self.fd, CHUNK):
                yield block
        finally:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_item_file(item: Any) -> ItemFile:
    """The file ``item`` was indexed from, opened for reading (see the module docstring)."""
    missing = ItemNotFoundError(f"item {item.id} has no indexed file to send")
    source = item.source
    suffixes = {IMAGE: IMAGE_SUFFIXES, TEXT: TEXT_SUFFIXES}.get(item.modality)
    if not source or suffixes is None or "\x00" in source:
        raise missing
    path = Path(source)
    if not path.is_absolute() or os.path.normpath(source) != source or path.suffix.lower() not in suffixes:
        raise missing
    try:
        if os.path.realpath(source) != source:  # a link somewhere on the path
            raise missing
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(source, flags)
    except OSError:
        raise missing from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise missing
    except BaseException:
        os.close(fd)
        raise
    if item.modality == TEXT:
        media_type = "text/plain"  # never text/html: an indexed page must not run in the API's origin
    else:
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return ItemFile(fd, st.st_size, path.name, media_type)
