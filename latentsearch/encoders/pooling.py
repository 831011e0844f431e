"""How a model's output becomes one vector per input: ``?pool=mean|max|flatten|cls``.

Models give latents ``(n, d)``, token states ``(n, t, d)`` or feature maps ``(n, c, h, w)``
(any ``(n, c, *spatial)``). :func:`pool` reduces each to ``(n, dim)``; :func:`pooled_dim` says
what ``dim`` a pooling gives for an output shape without running anything, so an encoder knows
its dimension before it encodes.

- ``mean`` (the default): latents as they are; token states averaged over the tokens the
  attention mask keeps (all of them without a mask); feature maps averaged over their positions
  (global average pooling).
- ``max``: the largest value over tokens (masked ones left out) or positions.
- ``flatten``: every value, in C order (``c·h·w`` for a map, ``t·d`` for tokens; the number of
  tokens must then be fixed).
- ``cls``: the first token's state (BERT's [CLS]); only for token states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInputError

POOLINGS = ("mean", "max", "flatten", "cls")
DEFAULT_POOLING = "mean"


def check_pooling(value: str | None, what: str) -> str:
    """The pooling ``value`` names (``mean`` when None), or an error listing the choices."""
    pooling = (value or DEFAULT_POOLING).strip().lower()
    if pooling not in POOLINGS:
        raise InvalidInputError(f"{what}: pool={value!r} is not one of {', '.join(POOLINGS)}")
    return pooling


def pooled_dim(shape: Sequence[int], pooling: str, what: str = "the model") -> int:
    """The vector size ``pooling`` makes of one input's output of ``shape`` (without the batch
    axis): ``(d,)``, ``(t, d)`` or ``(c, *spatial)``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        return shape[0]
    if pooling == "flatten":
        return int(np.prod(shape))
    if len(shape) == 2:  # token states (t, d)
        return shape[1]
    if pooling == "cls":
        raise InvalidInputError(f"{what} gives feature maps of shape {shape}: pool=cls is for token states (t, d)")
    return shape[0]  # channels of a (c, h, w) map


def pool(output: Any, pooling: str, mask: Any = None, tokens: bool | None = None, what: str = "the model") -> np.ndarray:
    """``output`` (a torch tensor or an array of ``(n, d)``, ``(n, t, d)`` or ``(n, c, *spatial)``)
    as an ``(n, dim)`` float32 array. ``mask`` ``(n, t)`` marks the real tokens of token states.
    A 3-D output is read as token states ``(n, t, d)`` unless ``tokens`` is False, which reads it
    as a 1-D feature map ``(n, c, length)``; 4-D and more are feature maps."""
    x = _numpy(output)
    if x.ndim < 2:
        raise InvalidInputError(f"{what} returned shape {tuple(x.shape)}; expected one row per input")
    n = x.shape[0]
    if x.ndim == 2:
        return np.ascontiguousarray(x)
    if pooling == "flatten":
        return np.ascontiguousarray(x.reshape(n, -1))
    as_tokens = x.ndim == 3 if tokens is None else tokens and x.ndim == 3
    if as_tokens:
        return _pool_tokens(x, pooling, None if mask is None else _numpy(mask))
    if pooling == "cls":
        raise InvalidInputError(
            f"{what} returned feature maps of shape {tuple(x.shape[1:])}: pool=cls is for token states (t, d)"
        )
    positions = x.reshape(n, x.shape[1], -1)  # (n, c, h·w)
    out = positions.mean(axis=2) if pooling == "mean" else positions.max(axis=2)
    return np.ascontiguousarray(out, dtype=np.float32)


def _pool_tokens(x: np.ndarray, pooling: str, mask: np.ndarray | None) -> np.ndarray:
    if pooling == "cls":
        return np.ascontiguousarray(x[:, 0, :])
    keep = np.ones(x.shape[:2], dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    if keep.shape != x.shape[:2]:
        raise InvalidInputError(f"the attention mask has shape {keep.shape}; the token states {x.shape[:2]}")
    if pooling == "mean":
        counts = np.maximum(keep.sum(axis=1, keepdims=True), 1)
        out = (x * keep[:, :, None]).sum(axis=1) / counts
    else:
        out = np.where(keep[:, :, None], x, -np.inf).max(axis=1)
        out[~keep.any(axis=1)] = 0.0  # an input with no token at all
    return np.ascontiguousarray(out, dtype=np.float32)


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, on any device
        value = value.detach().to("cpu").float().numpy()
    return np.asarray(value, dtype=np.float32)
