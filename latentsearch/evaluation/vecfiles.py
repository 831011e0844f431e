"""Vector files, read and written with numpy alone.

* ``.fvecs`` / ``.ivecs`` (the TEXMEX format of SIFT/GIST): each record is a little-endian
  int32 dimension ``d`` followed by ``d`` float32 (``.fvecs``) or int32 (``.ivecs``) values.
* ``.npy``: a 2-D numeric array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InvalidInputError

VECTOR_SUFFIXES = (".fvecs", ".ivecs", ".npy")


def read_fvecs(path: str | Path) -> np.ndarray:
    """The ``(n, d)`` float32 matrix in an ``.fvecs`` file."""
    return _read_vecs(Path(path), np.dtype("<f4"))


def read_ivecs(path: str | Path) -> np.ndarray:
    """The ``(n, d)`` int32 matrix in an ``.ivecs`` file (e.g. ground-truth neighbour ids)."""
    return _read_vecs(Path(path), np.dtype("<i4"))


def write_fvecs(path: str | Path, x: np.ndarray) -> None:
    _write_vecs(Path(path), np.ascontiguousarray(x, dtype="<f4"))


def write_ivecs(path: str | Path, x: np.ndarray) -> None:
    _write_vecs(Path(path), np.ascontiguousarray(x, dtype="<i4"))


def read_vectors(path: str | Path) -> np.ndarray:
    """A 2-D array from ``.fvecs`` (float32), ``.ivecs`` (int32) or ``.npy`` (as stored)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".fvecs":
        return read_fvecs(path)
    if suffix == ".ivecs":
        return read_ivecs(path)
    if suffix == ".npy":
        return _read_npy(path)
    raise InvalidInputError(
        f"cannot read vectors from {path}: expected a {', '.join(VECTOR_SUFFIXES)} file"
    )


def _read_vecs(path: Path, dtype: np.dtype) -> np.ndarray:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    kind = path.suffix or "vecs"
    if not raw:
        raise InvalidInputError(f"{path} is empty; expected {kind} records")
    if len(raw) % 4:
        raise InvalidInputError(
            f"{path} is not a {kind} file: its size ({len(raw)} bytes) is not a multiple of 4"
        )
    words = np.frombuffer(raw, dtype="<i4")
    d = int(words[0])
    if d <= 0 or d > 1 << 20:
        raise InvalidInputError(
            f"{path} is not a {kind} file: the first record's dimension reads as {d}"
        )
    if len(words) % (d + 1):
        raise InvalidInputError(
            f"{path} is not a {kind} file: {len(raw)} bytes is not a whole number of records "
            f"of dimension {d} ({4 * (d + 1)} bytes each)"
        )
    rows = words.reshape(-1, d + 1)
    bad = np.flatnonzero(rows[:, 0] != d)
    if len(bad):
        raise InvalidInputError(
            f"{path}: record {int(bad[0])} has dimension {int(rows[bad[0], 0])} "
            f"but the first has dimension {d}"
        )
    return rows[:, 1:].copy().view(dtype).astype(dtype.newbyteorder("="), copy=False)


def _write_vecs(path: Path, x: np.ndarray) -> None:
    if x.ndim != 2 or x.shape[1] == 0:
        raise InvalidInputError(f"expected a 2-D array with at least one column, got shape {x.shape}")
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype="<i4")
    out[:, 0] = x.shape[1]
    out[:, 1:] = x.view("<i4")
    path.write_bytes(out.tobytes())


def _read_npy(path: Path) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path} is not a readable .npy array ({exc})") from None
    if x.ndim != 2 or not (np.issubdtype(x.dtype, np.number)) or x.size == 0:
        raise InvalidInputError(
            f"{path} must hold a non-empty 2-D numeric array, got shape {x.shape} of {x.dtype}"
        )
    return x
