"""What the encoders of exported models share: ``torchscript:FILE``, ``onnx:FILE`` and
``torch:package.module:factory`` (options: :mod:`.exported_options`).

- **Inputs.** An image model (no ``tokenizer=``) gets ``(n, 3, size, size)`` float32 pixels: RGB,
  resized bilinearly, scaled to [0, 1], then ``(x - mean) / std`` when given. A text model
  (``tokenizer=DIR``) gets ``input_ids`` and ``attention_mask`` (int64; ``token_type_ids`` too
  where the tokenizer makes them and the model takes them).
- **Outputs.** A tensor of latents ``(n, d)``, token states ``(n, t, d)`` or feature maps
  ``(n, c, h, w)``, pooled by ``pool=`` (token states with the attention mask). A tuple's first
  element is the latent (a VAE's μ); a mapping's ``last_hidden_state`` (else its first value).
- **VAEs.** ``latent=mean`` (the default) stores μ. ``latent=sample`` stores
  z = μ + exp(logvar / 2) · ε, logvar being the tuple's second element, with ε drawn from a
  generator seeded by a hash of the input's model tensor (its pixels, or its unpadded token ids):
  the same input always gets the same z, whatever batch it is in.
- **Dimension.** Known at load, before any user data: from an ONNX model's static output shape,
  else from one probe forward on a zero image (size × size) or on the tokenized text "probe".
- **Decoding.** When the model has a decoder (a ``decode`` method; ``decoder=FILE`` for ONNX) and
  the vectors keep the whole latent (latents ``(n, d)``, or ``pool=flatten``, reshaped back to the
  model's latent shape), :meth:`decode` gives RGB images. The decoder's ``(n, 3, H, W)`` (or
  ``(n, 1, H, W)``) output is read in the model's input space: the normalisation is undone
  (``x · std + mean``), then values are clipped to [0, 1].
- **Fingerprint.** The model's content (the file's SHA-256; for ``torch:`` the weights and the
  factory's source file), the options in force and the tokenizer folder's files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError, LatentSearchError
from ..registry import Spec
from .base import BaseEncoder, digest
from .exported_options import ExportOptions
from .pooling import pool, pooled_dim

if TYPE_CHECKING:
    from PIL.Image import Image

PROBE_TEXT = "probe"
DEFAULT_MAX_LENGTH = 512
_WEIGHT_SUFFIXES = (".bin", ".safetensors", ".pt", ".pth", ".onnx", ".h5", ".msgpack", ".ckpt", ".gguf")
PREPROCESSING = "rgb-bilinear-unit-v1"  # changes if the image preprocessing itself ever changes


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_digest(folder: Path) -> str:
    """A hash of the tokenizer files of ``folder`` (its top-level files, weights left out)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix not in _WEIGHT_SUFFIXES):
        h.update(path.name.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def as_array(value: Any, what: str) -> np.ndarray:
    """A model output (a torch tensor on any device, or an array) as float32 numbers."""
    if hasattr(value, "detach"):
        value = value.detach().to("cpu").float().numpy()
    try:
        out = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise LatentSearchError(f"{what} returned {type(value).__name__}, not an array of numbers") from exc
    return out


def split_output(out: Any, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(latent, second)`` of a model's output: a tensor is the latent; a tuple gives its first
    two elements (a VAE's μ and logvar); a mapping its ``last_hidden_state`` (else its first value)."""
    second = None
    if isinstance(out, (tuple, list)):
        if not out:
            raise LatentSearchError(f"{what} returned an empty {type(out).__name__}")
        first, second = out[0], (out[1] if len(out) > 1 else None)
    elif isinstance(out, Mapping):
        if not out:
            raise LatentSearchError(f"{what} returned an empty mapping")
        first = out["last_hidden_state"] if "last_hidden_state" in out else next(iter(out.values()))
    else:
        first = out
    return as_array(first, what), (None if second is None else as_array(second, what))


def input_seed(inputs: Mapping[str, np.ndarray], row: int) -> int:
    """A seed from one input's model tensor: its pixels, or its token ids without padding."""
    if "pixels" in inputs:
        data = np.ascontiguousarray(inputs["pixels"][row], dtype=np.float32).tobytes()
    else:
        ids = np.asarray(inputs["input_ids"][row], dtype=np.int64)
        data = ids[np.asarray(inputs["attention_mask"][row]).astype(bool)].tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class ExportedEncoder(BaseEncoder):
    """The shared part; a subclass loads its model, then calls :meth:`_finish`, and runs it in
    :meth:`_run_encoder` (and :meth:`_run_decoder` when :meth:`_has_decoder`)."""

    kind = ""
    extra_options: list[str] = []

    def _parse(self, options: dict[str, str] | None, sidecar: Path | None) -> ExportOptions:
        self.opts = ExportOptions(self.kind, dict(options or {}), sidecar, self.extra_options)
        self.is_text = self.opts.tokenizer is not None
        self.modalities = frozenset({"text"} if self.is_text else {"image"})
        return self.opts

    # -- what a subclass provides -------------------------------------------------------------------

    def _run_encoder(self, inputs: dict[str, np.ndarray]) -> Any:
        """The model's raw output for ``{"pixels": (n, 3, s, s)}`` or the tokenizer's arrays."""
        raise NotImplementedError

    def _run_decoder(self, latents: np.ndarray) -> Any:
        raise NotImplementedError

    def _has_decoder(self) -> bool:
        return False

    def _no_decoder_hint(self) -> str:
        return "its model has no decode method"

    # -- loading --------------------------------------------------------------------------------------

    def _finish(self, name: str, content: str, latent_shape: tuple[int, ...] | None = None) -> None:
        """Set ``spec``, ``dim`` and the decoder's state once the model is loaded; ``content``
        identifies its weights; ``latent_shape`` (without the batch axis) skips the probe."""
        self.spec = str(Spec(self.kind, name, self.opts.canonical()))
        self._content = content
        self._fingerprint: str | None = None
        self.tokenizer: Any = None
        if self.is_text:
            self._load_tokenizer()
        elif self.opts.size is None:
            raise InvalidInputError(
                f"{self.kind}: an image model needs size=N (the side its input images are resized to), in the "
                "spec or in the JSON file beside the model; a text model needs tokenizer=DIR"
            )
        self.latent_shape = tuple(int(s) for s in latent_shape) if latent_shape is not None else self._probe()
        self.dim = pooled_dim(self.latent_shape, self.opts.pool, f"the model of {self.spec!r}")
        if self.dim <= 0:
            raise LatentSearchError(f"the model of {self.spec!r} gives outputs of shape {self.latent_shape}: no vector")
        self._no_decoder = self._decoding_problem()
        self.decodes = self._no_decoder is None

    def _load_tokenizer(self) -> None:
        from transformers import AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        folder = self.opts.tokenizer
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:
            raise InvalidInputError(f"{self.kind}: cannot load a tokenizer from {folder} ({type(exc).__name__}: {exc})") from exc
        limit = getattr(self.tokenizer, "model_max_length", None)
        default = int(limit) if isinstance(limit, int) and 0 < limit <= DEFAULT_MAX_LENGTH else DEFAULT_MAX_LENGTH
        self.max_length = self.opts.max_length or default
        self._tokenizer_digest = tokenizer_digest(folder)  # type: ignore[arg-type]

    def _probe(self) -> tuple[int, ...]:
        """The latent shape of one input, from a forward pass on a zero image or a short text."""
        if self.is_text:
            inputs = self._tokenize([PROBE_TEXT])
        else:
            inputs = {"pixels": np.zeros((1, 3, self.opts.size, self.opts.size), np.float32)}  # type: ignore[arg-type]
        try:
            latent, second = split_output(self._run_encoder(inputs), f"the model of {self.spec!r}")
        except LatentSearchError:
            raise
        except Exception as exc:
            shape = {k: v.shape for k, v in inputs.items()}
            raise LatentSearchError(
                f"the model of {self.spec!r} failed on a probe input {shape} ({type(exc).__name__}: {exc}); "
                "check size= (image models) or tokenizer= (text models)"
            ) from exc
        if latent.ndim < 2 or latent.shape[0] != 1:
            raise LatentSearchError(f"the model of {self.spec!r} returned shape {latent.shape} for one input")
        if self.opts.latent == "sample" and (second is None or second.shape != latent.shape):
            raise InvalidInputError(
                f"{self.spec!r}: latent=sample needs an encoder that returns (mu, logvar) of one shape, "
                f"and this one returns {'one output' if second is None else f'shapes {latent.shape} and {second.shape}'}"
            )
        return tuple(latent.shape[1:])

    def _decoding_problem(self) -> str | None:
        """Why this encoder cannot decode, or None when it can."""
        if self.is_text:
            return f"the encoder {self.spec!r} has no decoder for images: it is a text model"
        if not self._has_decoder():
            return f"the encoder {self.spec!r} has no decoder: {self._no_decoder_hint()}"
        if len(self.latent_shape) > 1 and self.opts.pool != "flatten":
            return (
                f"the encoder {self.spec!r} has no decoder for its vectors: pool={self.opts.pool} reduces the "
                f"model's {self.latent_shape} latents, which the decoder needs whole; use pool=flatten to decode"
            )
        return None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            tokens = getattr(self, "_tokenizer_digest", "")
            self._fingerprint = digest(self.kind, self._content, self.opts.fingerprint_text(), tokens, PREPROCESSING)
        return self._fingerprint

    # -- encoding -------------------------------------------------------------------------------------

    def _tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        padding = "max_length" if self.opts.pool == "flatten" else True  # flatten needs a fixed length
        try:
            encoded = self.tokenizer(
                list(texts), padding=padding, truncation=True, max_length=self.max_length, return_tensors="np"
            )
        except ValueError as exc:
            raise InvalidInputError(f"the tokenizer of {self.spec!r} cannot batch texts: {exc}") from exc
        out = {"input_ids": np.asarray(encoded["input_ids"], np.int64)}
        mask = encoded.get("attention_mask")
        out["attention_mask"] = np.asarray(mask, np.int64) if mask is not None else np.ones_like(out["input_ids"])
        if encoded.get("token_type_ids") is not None:
            out["token_type_ids"] = np.asarray(encoded["token_type_ids"], np.int64)
        return out

    def _encode_batch(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        what = f"the model of {self.spec!r}"
        latent, second = split_output(self._run_encoder(inputs), what)
        if self.opts.latent == "sample":
            if second is None or second.shape != latent.shape:
                raise LatentSearchError(f"{what} returned no logvar of the latent's shape, which latent=sample needs")
            eps = np.stack([
                np.random.default_rng(input_seed(inputs, i)).standard_normal(latent.shape[1:]) for i in range(len(latent))
            ])
            latent = (latent + np.exp(second.astype(np.float64) / 2) * eps).astype(np.float32)
        mask = inputs.get("attention_mask") if self.is_text else None
        return pool(latent, self.opts.pool, mask=mask, tokens=True if self.is_text else None, what=what)

    def encode_text(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        if not self.is_text:
            return super().encode_text(texts, batch_size)
        for text in texts:
            if not isinstance(text, str):
                raise InvalidInputError(f"the encoder {self.spec!r} got a {type(text).__name__} where text was expected")
        chunks = [self._encode_batch(self._tokenize(texts[s : s + batch_size])) for s in range(0, len(texts), batch_size)]
        return self._checked(np.concatenate(chunks) if chunks else [], len(texts))

    def preprocess_image(self, image: Image) -> np.ndarray:
        """The model's ``(3, size, size)`` float32 input for one image (see the module docstring);
        the pipeline calls it in its reader threads, and :meth:`encode_image` accepts its output."""
        from PIL import Image as PILImage

        convert = getattr(image, "convert", None)
        if not callable(convert):
            raise InvalidInputError(f"the encoder {self.spec!r} got a {type(image).__name__} where a PIL image was expected")
        size = int(self.opts.size)  # type: ignore[arg-type]
        rgb = convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), PILImage.Resampling.BILINEAR)
        x = np.asarray(rgb, dtype=np.float32) / 255.0
        if self.opts.mean is not None:
            x = x - np.asarray(self.opts.mean, np.float32)
        if self.opts.std is not None:
            x = x / np.asarray(self.opts.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)

    def encode_image(self, images: Sequence[Any], batch_size: int = 32) -> np.ndarray:
        """Vectors for PIL images, or for arrays from :meth:`preprocess_image`."""
        if self.is_text:
            return super().encode_image(images, batch_size)
        size = int(self.opts.size)  # type: ignore[arg-type]
        chunks = []
        for start in range(0, len(images), batch_size):
            pixels = [im if isinstance(im, np.ndarray) else self.preprocess_image(im) for im in images[start : start + batch_size]]
            for p in pixels:
                if p.shape != (3, size, size):
                    raise InvalidInputError(f"the encoder {self.spec!r} got an input of shape {p.shape}, not (3, {size}, {size})")
            chunks.append(self._encode_batch({"pixels": np.stack(pixels).astype(np.float32, copy=False)}))
        return self._checked(np.concatenate(chunks) if chunks else [], len(images))

    # -- decoding -------------------------------------------------------------------------------------

    def decode(self, vectors: np.ndarray, batch_size: int = 32) -> list[Image]:
        """``(n, dim)`` latents → ``n`` RGB images (see the module docstring)."""
        if self._no_decoder is not None:
            raise InvalidInputError(self._no_decoder)
        x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidInputError(f"the decoder of {self.spec!r} takes (n, {self.dim}) latents, not {x.shape}")
        images: list[Image] = []
        step = max(1, int(batch_size))
        for start in range(0, len(x), step):
            z = np.array(x[start : start + step], dtype=np.float32).reshape((-1, *self.latent_shape))  # a writable copy
            out, _ = split_output(self._run_decoder(z), f"the decoder of {self.spec!r}")
            images.extend(self._images(out, len(z)))
        return images

    def _images(self, out: np.ndarray, n: int) -> list[Image]:
        from PIL import Image as PILImage

        if out.ndim == 3:
            out = out[:, None]  # (n, h, w): one channel
        if out.ndim != 4 or out.shape[0] != n or out.shape[1] not in (1, 3):
            raise LatentSearchError(
                f"the decoder of {self.spec!r} returned shape {out.shape} for {n} latents; "
                "expected images (n, 3, H, W) or (n, 1, H, W)"
            )
        channels = out.shape[1]
        x = np.nan_to_num(out.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        if self.opts.std is not None:
            x = x * np.asarray(self.opts.std[:channels], np.float32)[None, :, None, None]
        if self.opts.mean is not None:
            x = x + np.asarray(self.opts.mean[:channels], np.float32)[None, :, None, None]
        pixels = (np.clip(x, 0.0, 1.0) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
        if channels == 1:
            return [PILImage.fromarray(p[:, :, 0], "L").convert("RGB") for p in pixels]
        return [PILImage.fromarray(p, "RGB") for p in pixels]
