"""A deterministic encoder with no model: signed feature hashing of words, and a fixed random
projection of downsampled pixels. For tests and for wiring things up without weights."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..vectors import normalize

from ..errors import InvalidInputError
from ..registry import reject_unknown_options
from .base import BaseEncoder, digest

if TYPE_CHECKING:
    from PIL.Image import Image

_TOKEN = re.compile(r"\w+", re.UNICODE)
_THUMB = 16  # images are reduced to THUMB x THUMB RGB before the projection


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    return normalize(x, x.dtype)


class HashingEncoder(BaseEncoder):
    """``hashing[:DIM]`` (default 256). Texts sharing words get similar vectors."""

    modalities = frozenset({"text", "image"})

    def __init__(self, name: str = "", options: dict[str, str] | None = None) -> None:
        reject_unknown_options("hashing", dict(options or {}), [])
        try:
            self.dim = int(name) if name else 256
        except ValueError:
            raise InvalidInputError(f"hashing:{name} — the dimension must be an integer") from None
        if not 2 <= self.dim <= 65536:
            raise InvalidInputError(f"hashing dimension must be in 2..65536, got {self.dim}")
        self.spec = f"hashing:{self.dim}"
        rng = np.random.default_rng(20240601)
        self._projection = rng.standard_normal((_THUMB * _THUMB * 3, self.dim)).astype(np.float32)

    def fingerprint(self) -> str:
        return digest("hashing-v1", str(self.dim))

    def _text_vector(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        for token in _TOKEN.findall(text.lower()):
            h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
            vec[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        return vec

    def encode_text(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        out = np.stack([self._text_vector(t) for t in texts]) if len(texts) else None
        return self._checked(_normalise_rows(out) if out is not None else [], len(texts))

    def encode_image(self, images: Sequence[Image], batch_size: int = 32) -> np.ndarray:
        if not len(images):
            return self._checked([], 0)
        pixels = np.stack(
            [
                np.asarray(im.convert("RGB").resize((_THUMB, _THUMB)), dtype=np.float32).reshape(-1)
                for im in images
            ]
        )
        pixels = (pixels - 127.5) / 127.5
        return self._checked(_normalise_rows(pixels @ self._projection), len(images))
