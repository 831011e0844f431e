"""Encoders turn text and images into float32 vectors. Create one with :func:`create_encoder`."""

from __future__ import annotations

import os

from ..errors import LatentSearchError
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
        "sentence-transformers": "text models by hub name or local folder (default: all-MiniLM-L6-v2); "
        "?layer=N&pool=mean|max|cls: one hidden layer's token states",
        "st": "short for sentence-transformers",
        "timm": "image models: timm:NAME[?pretrained=false|checkpoint=FILE|seed=N|layer=STAGE|pool=mean|max|flatten]",
        "clip": "CLIP-style sentence-transformers models: text and images in one space",
        "hashing": "deterministic feature hashing, no model (tests): hashing[:DIM]",
    },
)

DEFAULT_ENCODER = "minilm"


def create_encoder(spec: str = DEFAULT_ENCODER) -> Encoder:
    """Build the encoder a spec string names; an unknown one is an error listing the known ones."""
    return ENCODERS.create(spec)


TRUST_REMOTE_CODE_ENV = "LATENTSEARCH_TRUST_REMOTE_CODE"


class RemoteCodeRefusedError(LatentSearchError):
    """A collection whose encoder would run the model's own Python code, opened without the
    user's say-so (``trust_remote_code=True`` or ``LATENTSEARCH_TRUST_REMOTE_CODE=1``)."""


def runs_remote_code(spec: str) -> bool:
    """Whether the encoder ``spec`` asks to run Python code shipped with its model
    (``?trust_remote_code=true``; any value but an explicit false counts)."""
    try:
        value = ENCODERS.resolve(spec).options.get("trust_remote_code")
    except LatentSearchError:
        return False
    return value is not None and value.strip().lower() not in ("0", "false", "no", "off")


def remote_code_allowed(explicit: bool = False) -> bool:
    """The user's decision: ``explicit`` (an argument), or the environment variable set true."""
    return explicit or os.environ.get(TRUST_REMOTE_CODE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def check_remote_code(spec: str, allowed: bool, where: object) -> None:
    """Refuse, before any model code loads, an encoder spec read from a collection's files that
    would run the model's own Python code, unless the user allowed it."""
    if runs_remote_code(spec) and not remote_code_allowed(allowed):
        raise RemoteCodeRefusedError(
            f"the collection at {where} uses the encoder {spec!r}, which runs Python code that comes with "
            "the model (trust_remote_code=true); a collection's files do not get to decide that, so it was "
            f"not loaded. If you trust that code, set {TRUST_REMOTE_CODE_ENV}=1 or open the collection "
            "with trust_remote_code=True"
        )


def list_encoders() -> list[tuple[str, str, str]]:
    """(kind, origin, description) for the built-in encoders and the installed plugins."""
    return ENCODERS.describe()


__all__ = [
    "ENCODERS", "DEFAULT_ENCODER", "TRUST_REMOTE_CODE_ENV", "Encoder", "RemoteCodeRefusedError",
    "check_remote_code", "create_encoder", "list_encoders", "remote_code_allowed", "runs_remote_code",
]
