"""Images in: decoding shared by ingestion and queries (EXIF orientation, any mode made RGB,
decompression bombs refused)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image

MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit, made an error
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def open_image(path: Path) -> Image:
    """An RGB image from ``path``: first frame, EXIF orientation applied, bombs refused."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    with PILImage.open(path) as im:
        if im.width * im.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"image of {im.width}x{im.height} pixels is too large to decode safely")
        im.seek(0)
        im = ImageOps.exif_transpose(im)
        if im.mode not in ("RGB",):
            im = to_rgb(im)
        im.load()
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
