"""Images in: decoding shared by ingestion and queries (EXIF orientation, any mode made RGB,
decompression bombs refused, large images shrunk as they are decoded, and the pixels being
decoded at once bounded per process)."""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image

MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit, made an error
# Longest side of a decoded image: larger ones are shrunk as they are decoded (JPEG by the decoder
# itself), so one image holds at most 2048 x 2048 x 4 bytes (16 MiB) however large the file.
# Far above any model's input size (224 to 518 px), so the vectors do not change.
MAX_IMAGE_SIDE = 2048
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
# Bytes of full-size pixels being decoded at once in this process, across threads (the ingest
# pipeline's readers, a server's requests). A PNG cannot be decoded at a reduced scale, so a
# 9000 x 9000 one (252 KiB on disk) takes 309 MiB before it is shrunk, and indexing twelve such
# with four readers peaked at 2.6 GiB; with this bound and trim_heap(), 1.3 GiB (0.9 of them the
# model and libraries). An image larger than the whole budget is decoded alone; small ones share it.
DECODE_BUDGET_BYTES = 256 * 1024 * 1024


class DecodeBudget:
    """A process-wide bound on the bytes of pixels being decoded at once: :meth:`hold` waits
    until ``nbytes`` (at most the whole budget, so a larger image waits until it is alone) fit."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.in_use = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        share = max(0, min(nbytes, self.total))
        with self._changed:
            self._changed.wait_for(lambda: self.in_use + share <= self.total)
            self.in_use += share
        try:
            yield
        finally:
            with self._changed:
                self.in_use -= share
                self._changed.notify_all()


DECODING = DecodeBudget(DECODE_BUDGET_BYTES)
# Decoding more than this is followed by trim_heap(): glibc keeps the pages a thread freed in
# that thread's arena, so four readers decoding twelve 9000 x 9000 PNGs in turn still peaked at
# 1.9 GiB, and at 0.7 GiB once the pages were handed back after each.
TRIM_AFTER_BYTES = 64 * 1024 * 1024


def trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere
    nothing): Pillow's pixels are malloc'ed in 16 MiB blocks, which glibc keeps once freed."""
    if (trim := _malloc_trim()) is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows)
        return None


class UnreadableImageError(OSError):
    """An image file Pillow cannot decode; the message always says why."""


def open_image(path: Path, max_side: int = MAX_IMAGE_SIDE) -> Image:
    """An RGB image from ``path``: first frame, at most ``max_side`` pixels on its longer side
    (shrunk keeping its aspect), EXIF orientation applied, bombs refused. Errors say why: a
    missing file raises :class:`FileNotFoundError`, a refused one :class:`ValueError`, an
    undecodable one :class:`UnreadableImageError` (never with an empty message)."""
    from PIL import Image as PILImage

    size: tuple[int, int] | None = None
    try:
        with PILImage.open(path) as im:
            size = im.size
            _check_size(im)
            im.seek(0)
            _draft(im, max_side)  # a JPEG: the decoder itself scales down, before any pixel is held
            # Held until the file image is closed (which frees its full-size pixels), and taken
            # before load(): at most DECODE_BUDGET_BYTES of them are decoded at once per process.
            cost = decoded_bytes(im)
            with DECODING.hold(cost):
                try:
                    out = _decode(im, max_side)
                    return out if out is not im else im.copy()
                finally:
                    im.close()
                    if cost >= TRIM_AFTER_BYTES:
                        trim_heap()
    except FileNotFoundError:
        raise
    except PILImage.DecompressionBombError as exc:
        raise ValueError(f"image too large to decode safely ({exc})") from exc
    except ValueError as exc:
        if str(exc).strip():
            raise
        raise ValueError(f"cannot decode the image ({type(exc).__name__})") from exc
    except MemoryError as exc:  # its message is empty: say what ran out, and on what
        what = f"a {size[0]}x{size[1]} image" if size else "the image"
        raise UnreadableImageError(f"out of memory decoding {what} (MemoryError)") from exc
    except Exception as exc:  # OSError, SyntaxError, struct.error, EOFError...: Pillow's many ways to fail
        raise UnreadableImageError(_reason(exc)) from exc


def _reason(exc: BaseException) -> str:
    """What went wrong, never empty: the message, else the exception's class."""
    message = str(exc).strip()
    if message:
        return message if isinstance(exc, OSError) else f"{message} ({type(exc).__name__})"
    return f"{type(exc).__name__} while decoding, with no detail from the decoder"


def _check_size(im: Image) -> None:
    if im.width * im.height > MAX_IMAGE_PIXELS:
        raise ValueError(f"image of {im.width}x{im.height} pixels is too large to decode safely")


def _draft(im: Image, max_side: int) -> None:
    """Have a JPEG decoded at a reduced scale (1/2 to 1/8, never below the size it is shrunk
    to), so its full-size pixels are never held; other formats have no such decoder option."""
    if im.format == "JPEG" and max(im.size) > max_side:
        im.draft(None, _target(im, max_side))  # type: ignore[arg-type]


def _target(im: Image, max_side: int) -> tuple[int, int]:
    scale = max_side / max(im.size)
    return max(1, round(im.width * scale)), max(1, round(im.height * scale))


_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}  # others: 4


def decoded_bytes(im: Image) -> int:
    """About the most bytes of pixels decoding and shrinking ``im`` (an opened, not yet loaded
    file, after any draft) holds at once: its full-size pixels as Pillow keeps them (RGB takes
    4 bytes a pixel), a palette or 1-bit image's RGBA or L copy, and the first reduction."""
    pixels = im.width * im.height
    full = pixels * _BYTES_PER_PIXEL.get(im.mode, 4)
    converted = pixels * (4 if im.mode in ("P", "PA") else 1 if im.mode == "1" else 0)
    return full + converted + (full + converted) // 4


def _decode(im: Image, max_side: int) -> Image:
    from PIL import ImageOps

    if max(im.size) > max_side:
        im = _shrunk(im, max_side)
    im = ImageOps.exif_transpose(im)
    if im.mode not in ("RGB",):
        im = to_rgb(im)
    im.load()
    return im


def _shrunk(im: Image, max_side: int) -> Image:
    """``im`` at most ``max_side`` pixels on its longer side (a JPEG was drafted to a reduced
    scale before, by :func:`_draft`); palette and 1-bit images are converted first, as Pillow
    resizes those only by nearest neighbour. Keeps the EXIF data (``thumbnail`` works in place)."""
    if im.mode in ("P", "PA", "1"):
        im = im.convert("RGBA" if im.mode != "1" else "L")  # keeps im.info, and so the EXIF data
    im.thumbnail((max_side, max_side))
    return im


def to_rgb(im: Image) -> Image:
    """RGB from any mode: alpha composited on white, 16-bit scaled, CMYK and palette converted."""
    from PIL import Image as PILImage

    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = arr.max() or 1.0
        scaled = np.clip(np.rint(arr * (255.0 / top)), 0, 255)
        im = PILImage.fromarray(scaled.astype(np.uint8), mode="L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA"):
        background = PILImage.new("RGB", im.size, (255, 255, 255))
        background.paste(im.convert("RGBA"), mask=im.convert("RGBA").getchannel("A"))
        return background
    return im.convert("RGB")
