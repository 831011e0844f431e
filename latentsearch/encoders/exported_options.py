"""The options of exported-model encoders (``torchscript:``, ``onnx:``, ``torch:``), from the spec
and from the JSON file beside the model.

Keys (each is a spec option, ``torchscript:ae.pt?size=32&mean=0.5&std=0.5``, or a key of the JSON
object in ``FILE.json`` beside the model: ``ae.pt.json`` for ``ae.pt``, ``ckpt.pth.json`` for a
``torch:`` factory's ``checkpoint=ckpt.pth``):

- ``size=N`` — image models: each image is converted to RGB, resized to N × N (bilinear), scaled
  to [0, 1];
- ``mean=R,G,B`` and ``std=R,G,B`` (or one number for all three channels) — then normalised,
  ``(x - mean) / std``;
- ``pool=mean|max|flatten|cls`` — how the output becomes one vector (:mod:`.pooling`);
- ``tokenizer=DIR`` — a text model: a Hugging Face tokenizer folder; ``max_length=N`` tokens per
  text (default: the tokenizer's limit, at most 512);
- ``latent=mean|sample`` — for a VAE whose encoder returns ``(mu, logvar)``;
- ``decoder=FILE`` (``onnx:`` only) and ``checkpoint=FILE`` (``torch:`` only).

The spec's options win over the file's. Relative paths are taken from the current folder in a spec
and from the JSON file's folder in the file; the merged options, with absolute paths, make the
canonical spec written to the manifest, so a collection never depends on the JSON file again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..registry import reject_unknown_options
from .pooling import check_pooling

COMMON_OPTIONS = ["latent", "max_length", "mean", "pool", "size", "std", "tokenizer"]
PATH_OPTIONS = ("checkpoint", "decoder", "tokenizer")
LATENTS = ("mean", "sample")
SIDECAR_SUFFIX = ".json"
MAX_SIZE = 4096  # pixels on a side
MAX_LENGTH = 100_000  # tokens


def sidecar_path(model_file: Path) -> Path:
    """The JSON file of options beside ``model_file``: its name with ``.json`` added."""
    return model_file.with_name(model_file.name + SIDECAR_SUFFIX)


def model_file(kind: str, name: str) -> Path:
    """The model file a ``torchscript:``/``onnx:`` spec names, absolute and resolved."""
    if not name:
        raise InvalidInputError(f"{kind}: needs a model file, e.g. {kind}:model.{'onnx' if kind == 'onnx' else 'pt'}")
    path = absolute_path(kind, "the model file", name, Path.cwd())
    if not path.is_file():
        raise InvalidInputError(f"{kind}: the model file {path} does not exist")
    return path


def absolute_path(kind: str, what: str, value: str, base: Path) -> Path:
    """``value`` as an absolute, resolved path (relative ones from ``base``) that a spec can hold."""
    path = (base / Path(value.strip()).expanduser()).resolve()
    if any(c in str(path) for c in "?&="):
        raise InvalidInputError(f"{kind}: {what} {path} has '?', '&' or '=' in its path, which a spec cannot hold; rename it")
    return path


def read_sidecar(path: Path | None, kind: str, known: list[str]) -> dict[str, str]:
    """The options in the JSON file ``path`` as spec option strings ({} when there is no file)."""
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{kind}: cannot read the options file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"{kind}: {path} must hold a JSON object with keys among {', '.join(known)}")
    reject_unknown_options(f"{kind} (in {path})", {k: "" for k in data if k not in known}, known)
    out = {}
    for key, value in data.items():
        text = _option_text(kind, path, key, value)
        out[key] = str(absolute_path(kind, key, text, path.parent)) if key in PATH_OPTIONS else text
    return out


def _option_text(kind: str, path: Path, key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return ",".join(repr(float(v)) for v in value)
    raise InvalidInputError(f"{kind}: {key} in {path} must be a number, a string or a list of numbers, not {value!r}")


class ExportOptions:
    """The checked options of one exported-model encoder, and their canonical form."""

    def __init__(self, kind: str, options: dict[str, str], sidecar: Path | None, extra: list[str]):
        known = sorted(COMMON_OPTIONS + extra)
        merged = read_sidecar(sidecar, kind, known)
        for key, value in options.items():
            merged[key] = str(absolute_path(kind, key, value, Path.cwd())) if key in PATH_OPTIONS and key in known else value
        self.kind = kind
        self.given = dict(merged)
        self.size = _int(kind, merged, "size", 1, MAX_SIZE)
        self.mean = _channels(kind, merged, "mean")
        self.std = _channels(kind, merged, "std")
        if self.std is not None and any(s == 0 for s in self.std):
            raise InvalidInputError(f"{kind}: std={self.given['std']} has a zero")
        self.pool = check_pooling(merged.pop("pool", None), kind)
        self.latent = merged.pop("latent", "mean").strip().lower()
        if self.latent not in LATENTS:
            raise InvalidInputError(f"{kind}: latent={self.latent!r} is not one of {', '.join(LATENTS)}")
        tokenizer = merged.pop("tokenizer", None)
        self.tokenizer = Path(tokenizer) if tokenizer else None
        self.max_length = _int(kind, merged, "max_length", 1, MAX_LENGTH)
        self.paths = {key: Path(merged.pop(key)) for key in extra if key in PATH_OPTIONS and key in merged}
        reject_unknown_options(kind, merged, known)
        if self.tokenizer is not None:
            if not self.tokenizer.is_dir():
                raise InvalidInputError(f"{kind}: the tokenizer folder {self.tokenizer} does not exist")
            for key in ("size", "mean", "std"):
                if key in self.given:
                    raise InvalidInputError(f"{kind}: {key}= is image preprocessing, but tokenizer= makes this a text model")
        elif self.max_length is not None:
            raise InvalidInputError(f"{kind}: max_length= is for text models (with tokenizer=DIR)")
        for key, path in self.paths.items():
            if not path.is_file():
                raise InvalidInputError(f"{kind}: the {key} file {path} does not exist")

    def canonical(self) -> dict[str, str]:
        """Every option in force, written the one way (pool always; the others when set)."""
        out = {"pool": self.pool}
        if "latent" in self.given or self.latent != "mean":
            out["latent"] = self.latent
        if self.size is not None:
            out["size"] = str(self.size)
        for key, value in (("mean", self.mean), ("std", self.std)):
            if value is not None:
                out[key] = ",".join(repr(v) for v in value)
        if self.tokenizer is not None:
            out["tokenizer"] = str(self.tokenizer)
        if self.max_length is not None:
            out["max_length"] = str(self.max_length)
        out.update({key: str(path) for key, path in self.paths.items()})
        return out

    def fingerprint_text(self) -> str:
        """The options that change vectors, paths left out (their contents are hashed instead)."""
        kept = {k: v for k, v in self.canonical().items() if k not in PATH_OPTIONS}
        return "&".join(f"{k}={v}" for k, v in sorted(kept.items()))


def _int(kind: str, options: dict[str, str], key: str, low: int, high: int) -> int | None:
    if key not in options:
        return None
    value = options.pop(key)
    try:
        number = int(value)
    except ValueError:
        raise InvalidInputError(f"{kind}: {key}={value!r} is not an integer") from None
    if not low <= number <= high:
        raise InvalidInputError(f"{kind}: {key}={number} is not from {low} to {high}")
    return number


def _channels(kind: str, options: dict[str, str], key: str) -> tuple[float, float, float] | None:
    """One number per RGB channel (one given number is used for all three)."""
    if key not in options:
        return None
    value = options.pop(key)
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        raise InvalidInputError(f"{kind}: {key}={value!r} must be 1 or 3 numbers, comma-separated") from None
    if len(numbers) == 1:
        numbers = numbers * 3
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
        raise InvalidInputError(f"{kind}: {key}={value!r} must be 1 or 3 finite numbers, comma-separated")
    return (numbers[0], numbers[1], numbers[2])
