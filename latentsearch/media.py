"""Images in: decoding shared by ingestion and queries (EXIF orientation, any mode made RGB,
decompression bombs refused, large images shrunk as they are decoded)."""

from __future__ import annotations

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


class UnreadableImageError(OSError):
    """An image file Pillow cannot decode; the message always says why."""


def open_image(path: Path, max_side: int = MAX_IMAGE_SIDE) -> Image:
    """An RGB image from ``path``: first frame, at most ``max_side`` pixels on its longer side
    (shrunk keeping its aspect), EXIF orientation applied, bombs refused. Errors say why: a
    missing file raises :class:`FileNotFoundError`, a refused one :class:`ValueError`, an
    undecodable one :class:`UnreadableImageError` (never with an empty message)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            return _decode(im, max_side)
    except FileNotFoundError:
        raise
    except PILImage.DecompressionBombError as exc:
        raise ValueError(f"image too large to decode safely ({exc})") from exc
    except ValueError as exc:
        if str(exc).strip():
            raise
        raise ValueError(f"cannot decode the image ({type(exc).__name__})") from exc
    except Exception as exc:  # OSError, SyntaxError, struct.error, EOFError...: Pillow's many ways to fail
        raise UnreadableImageError(_reason(exc)) from exc


def _reason(exc: BaseException) -> str:
    """What went wrong, never empty: the message, else the exception's class."""
    message = str(exc).strip()
    if message:
        return message if isinstance(exc, OSError) else f"{message} ({type(exc).__name__})"
    return f"{type(exc).__name__} while decoding, with no detail from the decoder"


def _decode(im: Image, max_side: int) -> Image:
    from PIL import ImageOps

    if im.width * im.height > MAX_IMAGE_PIXELS:
        raise ValueError(f"image of {im.width}x{im.height} pixels is too large to decode safely")
    im.seek(0)
    if max(im.size) > max_side:
        im = _shrunk(im, max_side)
    im = ImageOps.exif_transpose(im)
    if im.mode not in ("RGB",):
        im = to_rgb(im)
    im.load()
    return im


def _shrunk(im: Image, max_side: int) -> Image:
    """``im`` at most ``max_side`` pixels on its longer side. A JPEG is decoded at a reduced
    scale (1/2 to 1/8) to begin with; palette and 1-bit images are converted first, as Pillow
    resizes those only by nearest neighbour. Keeps the EXIF data (``thumbnail`` works in place)."""
    scale = max_side / max(im.size)
    target = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    if im.format == "JPEG":
        im.draft(None, target)  # type: ignore[arg-type]  # the decoder's own scaling, at least target
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
