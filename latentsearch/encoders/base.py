"""The encoder contract and the helpers every encoder shares."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ..errors import DimensionMismatchError, InvalidInputError

if TYPE_CHECKING:
    from PIL.Image import Image


@runtime_checkable
class Encoder(Protocol):
    """Turns inputs into ``(n, dim)`` float32 C-contiguous arrays, one row per input, in order."""

    spec: str  # the canonical spec string, written to the manifest
    dim: int  # known without encoding anything
    modalities: frozenset[str]  # a subset of {"text", "image"}

    def fingerprint(self) -> str:
        """Changes whenever the same input could get a different vector (weights, preprocessing)."""
        ...

    def encode_text(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...

    def encode_image(self, images: Sequence[Image], batch_size: int = 32) -> np.ndarray: ...


@runtime_checkable
class Decoder(Protocol):
    """An encoder whose model also maps latents back to inputs (an autoencoder's or a VAE's
    decoder). ``decodes`` is False on encoders without one."""

    decodes: bool

    def decode(self, vectors: np.ndarray, batch_size: int = 32) -> list[Image]:
        """``(n, dim)`` float32 latents → ``n`` RGB images."""
        ...


class BaseEncoder:
    """Shared behaviour: errors for unsupported modalities and output checks."""

    spec: str = ""
    dim: int = 0
    modalities: frozenset[str] = frozenset()

    def encode_text(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        raise InvalidInputError(f"the encoder {self.spec!r} does not encode text")

    def encode_image(self, images: Sequence[Image], batch_size: int = 32) -> np.ndarray:
        raise InvalidInputError(f"the encoder {self.spec!r} does not encode images")

    decodes: bool = False

    def decode(self, vectors: np.ndarray, batch_size: int = 32) -> list[Image]:
        raise InvalidInputError(
            f"the encoder {self.spec!r} has no decoder: decoding needs a model with a decode method "
            "(torchscript:, onnx: or torch: encoders of an autoencoder or a VAE)"
        )

    def _checked(self, array: Any, n: int) -> np.ndarray:
        """``array`` as an ``(n, dim)`` float32 C-contiguous matrix, or an error with both shapes."""
        out = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != n:
            raise InvalidInputError(
                f"the encoder {self.spec!r} returned shape {out.shape} for {n} inputs"
            )
        if out.shape[1] != self.dim:
            raise DimensionMismatchError(self.dim, out.shape[1], f"output of {self.spec!r}")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, dim={self.dim})"


def module_digest(module: Any) -> str:
    """A hash of a torch module's weights (names, shapes, dtypes and bytes), in key order."""
    import torch

    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()
