"""CLIP-style sentence-transformers models: text and images encoded into one space."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError, LatentSearchError
from ..registry import pop_bool, reject_unknown_options
from .base import BaseEncoder, digest, module_digest
from .sentence_transformers_text import embedding_dimension, load_sentence_transformer

if TYPE_CHECKING:
    from PIL.Image import Image

DEFAULT_CLIP = "clip-ViT-B-32"


def _texts_need_wrapping() -> bool:
    """Whether this sentence-transformers guesses the modality of each input string.

    Multimodal sentence-transformers (the ``base.modality`` layout, 5.4 and later) treat a string
    that looks like an image URL, a ``data:image/`` URI or an existing image file as an image, and
    accept ``{"text": s}`` to say "this is text". Older versions treat every string as text.
    """
    return importlib.util.find_spec("sentence_transformers.base.modality") is not None


def _supports(model: Any, modality: str) -> bool:
    """Whether the model takes ``modality``; ``True`` where sentence-transformers cannot tell."""
    supports = getattr(model, "supports", None)
    if not callable(supports):
        return True
    try:
        return bool(supports(modality))
    except Exception:
        return True


def _preprocessing_text(model: Any) -> str:
    """The settings that turn an input into model tensors: text length and image preprocessing."""
    parts = [f"max_seq_length={getattr(model, 'max_seq_length', None)}"]
    try:
        first = model[0]
    except Exception:
        first = None
    processor = getattr(first, "processor", None)
    for attr in ("image_processor", "feature_extractor"):
        sub = getattr(processor, attr, None)
        to_dict = getattr(sub, "to_dict", None)
        if callable(to_dict):
            settings = {k: v for k, v in to_dict().items() if k != "transformers_version"}
            parts.append(f"{attr}={json.dumps(settings, sort_keys=True, default=str)}")
    return ";".join(parts)


class ClipEncoder(BaseEncoder):
    """``clip:NAME_OR_FOLDER[?trust_remote_code=true]``, e.g. ``clip:clip-ViT-B-32``.

    A sentence-transformers model that puts text and images in one space, so a text query finds
    images and the reverse. Vectors are returned as the model gives them (not normalised).
    """

    modalities = frozenset({"text", "image"})

    def __init__(self, name: str = "", options: dict[str, str] | None = None) -> None:
        options = dict(options or {})
        name = name or DEFAULT_CLIP
        trust = pop_bool(options, "trust_remote_code", False)
        reject_unknown_options("clip", options, ["trust_remote_code"])
        self.spec = f"clip:{name}" + ("?trust_remote_code=true" if trust else "")
        self.model = load_sentence_transformer(name, trust, kind="clip")
        missing = [m for m in ("text", "image") if not _supports(self.model, m)]
        if missing:
            raise LatentSearchError(
                f"the model {name!r} does not encode {' or '.join(missing)}, so it is not a "
                "CLIP-style model; use sentence-transformers:NAME for a text-only model"
            )
        self._wrap_texts = _texts_need_wrapping()
        dim = embedding_dimension(self.model)
        self.dim = int(dim) if dim else int(self._encode(["x"], 1).shape[1])
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = digest(
                "clip", module_digest(self.model), _preprocessing_text(self.model)
            )
        return self._fingerprint

    def _encode(self, inputs: list[Any], batch_size: int) -> np.ndarray:
        return self.model.encode(
            inputs, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )

    def encode_text(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        if not texts:
            return self._checked([], 0)
        for text in texts:
            if not isinstance(text, str):
                raise InvalidInputError(
                    f"the encoder {self.spec!r} got a {type(text).__name__} where text was expected"
                )
        # Wrapped, "photo.jpg" or "https://x/cat.png" is encoded as the text it is, never fetched.
        inputs: list[Any] = [{"text": t} for t in texts] if self._wrap_texts else list(texts)
        return self._checked(self._encode(inputs, batch_size), len(texts))

    def encode_image(self, images: Sequence[Image], batch_size: int = 32) -> np.ndarray:
        if not images:
            return self._checked([], 0)
        rgb = []
        for image in images:
            convert = getattr(image, "convert", None)
            if not callable(convert):
                raise InvalidInputError(
                    f"the encoder {self.spec!r} got a {type(image).__name__} where a PIL image "
                    "was expected"
                )
            rgb.append(convert("RGB"))
        return self._checked(self._encode(rgb, batch_size), len(images))
