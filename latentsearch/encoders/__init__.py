"""Encoders turn text and images into float32 vectors. Create one with :func:`create_encoder`."""

from __future__ import annotations

from ..registry import Registry
from .base import Encoder

ENCODERS = Registry(
    what="encoder",
    group="latentsearch.encoders",
    builtins={
        "sentence-transformers": ".encoders.sentence_transformers_text:SentenceTransformerTextEncoder",
        "st": ".encoders.sentence_transformers_text:SentenceTransformerTextEncoder",
        "timm": ".encoders.timm_image:TimmImageEncoder",
        "clip": ".encoders.clip:ClipEncoder",
        "hashing": ".encoders.hashing:HashingEncoder",
    },
    aliases={
        "minilm": "sentence-transformers:all-MiniLM-L6-v2",
        "all-MiniLM-L6-v2": "sentence-transformers:all-MiniLM-L6-v2",
        "sentence-transformers/all-MiniLM-L6-v2": "sentence-transformers:all-MiniLM-L6-v2",
        "clip": "clip:clip-ViT-B-32",
    },
    descriptions={
        "sentence-transformers": "text models by hub name or local folder (default: all-MiniLM-L6-v2)",
        "st": "short for sentence-transformers",
        "timm": "image models: timm:NAME[?pretrained=false|checkpoint=FILE|seed=N]",
        "clip": "CLIP-style sentence-transformers models: text and images in one space",
        "hashing": "deterministic feature hashing, no model (tests): hashing[:DIM]",
    },
)

DEFAULT_ENCODER = "minilm"


def create_encoder(spec: str = DEFAULT_ENCODER) -> Encoder:
    """Build the encoder a spec string names; an unknown one is an error listing the known ones."""
    return ENCODERS.create(spec)


def list_encoders() -> list[tuple[str, str, str]]:
    """(kind, origin, description) for the built-in encoders and the installed plugins."""
    return ENCODERS.describe()


__all__ = ["ENCODERS", "DEFAULT_ENCODER", "Encoder", "create_encoder", "list_encoders"]
