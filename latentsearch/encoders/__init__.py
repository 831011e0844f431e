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
        "torchscript": ".encoders.torch_models:TorchScriptEncoder",
        "onnx": ".encoders.onnx_model:OnnxEncoder",
        "torch": ".encoders.torch_models:TorchFactoryEncoder",
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
        "torchscript": "a TorchScript file (torch.jit.save): torchscript:FILE[?size=N&mean=..&std=..&pool=..&tokenizer=DIR&latent=..]",
        "onnx": "an ONNX model run by onnxruntime: onnx:FILE[?size=N&...&decoder=FILE]",
        "torch": "your own Python factory returning an nn.Module: torch:package.module:factory[?checkpoint=FILE&...] (runs your code: trusted like trust_remote_code)",
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


# Kinds whose spec names Python code to import and run (``torch:package.module:factory``).
CODE_KINDS = frozenset({"torch"})


def runs_remote_code(spec: str) -> bool:
    """Whether the encoder ``spec`` runs Python code that the spec names: a model's own code
    (``?trust_remote_code=true``; any value but an explicit false counts), or a ``torch:``
    factory, which imports and calls the module the spec names."""
    try:
        parsed = ENCODERS.resolve(spec)
    except LatentSearchError:
        return False
    if parsed.kind in CODE_KINDS:
        return True
    value = parsed.options.get("trust_remote_code")
    return value is not None and value.strip().lower() not in ("0", "false", "no", "off")


def remote_code_allowed(explicit: bool = False) -> bool:
    """The user's decision: ``explicit`` (an argument), or the environment variable set true."""
    return explicit or os.environ.get(TRUST_REMOTE_CODE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def check_remote_code(spec: str, allowed: bool, where: object) -> None:
    """Refuse, before any model code loads, an encoder spec read from a collection's files that
    would run the model's own Python code, unless the user allowed it."""
    if runs_remote_code(spec) and not remote_code_allowed(allowed):
        named = ENCODERS.resolve(spec).kind in CODE_KINDS
        runs = (
            "which imports and runs the Python code it names" if named
            else "which runs Python code that comes with the model (trust_remote_code=true)"
        )
        raise RemoteCodeRefusedError(
            f"the collection at {where} uses the encoder {spec!r}, {runs}; a collection's files do not get to decide that, so it was "
            f"not loaded. If you trust that code, set {TRUST_REMOTE_CODE_ENV}=1 or open the collection "
            "with trust_remote_code=True"
        )


def list_encoders() -> list[tuple[str, str, str]]:
    """(kind, origin, description) for the built-in encoders and the installed plugins."""
    return ENCODERS.describe()


__all__ = [
    "CODE_KINDS", "ENCODERS", "DEFAULT_ENCODER", "TRUST_REMOTE_CODE_ENV", "Encoder", "RemoteCodeRefusedError",
    "check_remote_code", "create_encoder", "list_encoders", "remote_code_allowed", "runs_remote_code",
]
