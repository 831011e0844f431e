"""Turning latents back into inputs, with the decoder of an autoencoder's or a VAE's encoder,
and the image grids of ``latentsearch explore … --decode FILE``.

Each grid has a row of decoded latents (the steps of a walk, the result of an arithmetic, the
samples around a latent) with, under each, the nearest real item: its indexed image when the file
is there, else its own stored latent decoded (captioned so).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError, LatentSearchError
from ..types import Hit
from ..vectors import as_matrix
from .latent import check_steps, check_terms, combine, interpolation_points

if TYPE_CHECKING:
    from PIL.Image import Image

    from .searcher import Searcher

MAX_SAMPLES = 256  # decoded samples around a latent, per call
STD_SAMPLE = 10_000  # vectors read to measure the collection's spread per dimension
CELL = 96  # pixels of a grid cell's image
CAPTION = 14  # pixels under each image for its caption


def decode_vectors(encoder: Any, vectors: Any, dim: int, batch_size: int = 32) -> list[Image]:
    """``encoder.decode`` of ``vectors`` (one latent or a matrix), checked: an encoder without a
    decoder, a wrong dimension and non-finite values are errors naming the problem."""
    check_decoder(encoder)
    x = as_matrix(vectors, dim, "latent")
    if not len(x):
        return []
    images = list(encoder.decode(x, batch_size=batch_size))
    if len(images) != len(x):
        raise LatentSearchError(f"the decoder of {encoder.spec!r} returned {len(images)} images for {len(x)} latents")
    return images


def check_decoder(encoder: Any) -> None:
    """An error naming the encoder unless it has a decoder."""
    if encoder is None:
        raise InvalidInputError("this collection has no encoder (vectors only), so it has no decoder")
    if not getattr(encoder, "decodes", False):
        encoder.decode(np.zeros((0, getattr(encoder, "dim", 0)), np.float32))  # raises, naming the encoder
        raise InvalidInputError(f"the encoder {encoder.spec!r} has no decoder")


@dataclass
class Decoded:
    """Latents and what the decoder made of them, each with a caption and its nearest items."""

    captions: list[str]
    points: np.ndarray
    images: list[Image]
    nearest: list[list[Hit]]


def walk(searcher: Searcher, encoder: Any, a: Any, b: Any, steps: int, k: int = 1) -> Decoded:
    """The points from ``a`` to ``b`` (slerp for cosine, straight for ip/l2), decoded by
    ``encoder`` (None: only their nearest items)."""
    check_steps(steps)
    qv = searcher.query_vectors([a, b])
    ts, points = interpolation_points(qv.vectors[0], qv.vectors[1], steps, searcher.metric)
    return _decoded(searcher, encoder, [f"t={t:.2f}" for t in ts], points, k)


def arithmetic(searcher: Searcher, encoder: Any, terms: Any, k: int = 8) -> Decoded:
    """The weighted sum of ``terms`` decoded once, with its ``k`` nearest items (the items named
    as terms left out, as :meth:`Collection.search_combination` does)."""
    pairs = check_terms(terms)
    qv = searcher.query_vectors([q for q, _ in pairs])
    target = combine(qv.vectors, [w for _, w in pairs], searcher.metric)
    skip = {e for e in qv.exclude if e is not None}
    out = _decoded(searcher, encoder, ["result"], target[None, :], k + len(skip))
    out.nearest = [[h for h in out.nearest[0] if h.id not in skip][:k]]
    return out


def around(
    searcher: Searcher, encoder: Any, center: Any, samples: int = 16, radius: float = 0.5, seed: int = 0
) -> Decoded:
    """``samples`` latents drawn around ``center``: Gaussian noise of ``radius`` times the
    collection's standard deviation in each dimension (measured on a sample of its vectors),
    decoded; the first is ``center`` itself."""
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or not 1 <= samples <= MAX_SAMPLES:
        raise InvalidInputError(f"samples must be an integer from 1 to {MAX_SAMPLES}, got {samples!r}")
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not 0 <= float(radius) <= 100:
        raise InvalidInputError(f"radius must be a number from 0 to 100 (times the spread of the latents), got {radius!r}")
    c = searcher.query_vectors([center]).vectors[0].astype(np.float64)
    spread = _spread(searcher)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((int(samples) - 1, len(c))) * spread * float(radius)
    points = np.vstack([c[None, :], c + noise]).astype(np.float32)
    captions = ["centre"] + [f"sample {i}" for i in range(1, int(samples))]
    return _decoded(searcher, encoder, captions, points, 1)


def _spread(searcher: Searcher) -> np.ndarray:
    """The standard deviation of each dimension over the first :data:`STD_SAMPLE` stored vectors
    (one read)."""
    _, vectors = next(searcher.store.iter_vectors(batch_size=STD_SAMPLE), (None, np.zeros((0, searcher.dim))))
    if len(vectors) < 2:
        raise InvalidInputError("sampling around a latent needs a collection of at least 2 items to measure its spread")
    return np.asarray(vectors, np.float64).std(axis=0)


def _decoded(searcher: Searcher, encoder: Any, captions: list[str], points: np.ndarray, k: int) -> Decoded:
    """The points with their nearest items, decoded by ``encoder`` (None: not decoded)."""
    images = decode_vectors(encoder, points, searcher.dim) if encoder is not None else []
    nearest = searcher.search_batch(list(points), k=k) if k else [[] for _ in points]
    return Decoded(captions, np.asarray(points), images, nearest)


# -- the grid -----------------------------------------------------------------------------------


def item_images(hits: Sequence[Hit | None], searcher: Searcher, encoder: Any) -> list[tuple[Image | None, str]]:
    """For each hit (None: an empty cell), the image of the real item for the grid and its
    caption: the indexed file when it is an image that can still be read, else the item's stored
    latent decoded. Each item is opened once, and the latents all decode in one batch."""
    from ..media import open_image

    found: dict[int, tuple[Image | None, str]] = {}
    pending: list[int] = []
    for hit in hits:
        if hit is None or hit.id in found or hit.id in pending:
            continue
        if hit.modality == "image" and hit.source:
            try:
                found[hit.id] = (open_image(Path(hit.source)), f"#{hit.id}")
                continue
            except (OSError, ValueError):
                pass
        pending.append(hit.id)
    if pending:
        ids, vectors = searcher.vectors(pending)
        for i, image in zip(ids.tolist(), decode_vectors(encoder, vectors, searcher.dim) if len(ids) else []):
            found[int(i)] = (image, f"#{i} (decoded)")
    return [(None, "") if h is None else found.get(h.id, (None, f"#{h.id}")) for h in hits]


def write_grid(rows: Sequence[Sequence[tuple[Image | None, str]]], out: str | Path, cell: int = CELL) -> Path:
    """Draw ``rows`` of ``(image, caption)`` cells as one PNG at ``out``; each image is scaled to
    ``cell`` pixels on its longer side (nearest-neighbour for small ones, so pixels stay sharp)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    columns = max((len(r) for r in rows), default=0)
    if not columns:
        raise InvalidInputError("nothing to draw: the grid is empty")
    pad = 4
    width, height = columns * (cell + pad) + pad, len(rows) * (cell + CAPTION + pad) + pad
    grid = PILImage.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        for c, (image, caption) in enumerate(row):
            x, y = pad + c * (cell + pad), pad + r * (cell + CAPTION + pad)
            if image is not None:
                im = image.convert("RGB")
                scale = cell / max(im.size)
                size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
                resample = PILImage.Resampling.NEAREST if scale >= 1 else PILImage.Resampling.LANCZOS
                im = im.resize(size, resample)
                grid.paste(im, (x + (cell - size[0]) // 2, y + (cell - size[1]) // 2))
            else:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), outline=(200, 200, 200))
            draw.text((x + 2, y + cell + 1), caption[: cell // 6], fill=(40, 40, 40))
    out = Path(out)
    try:
        grid.save(out, format="PNG")
    except (OSError, ValueError) as exc:
        raise LatentSearchError(f"cannot write the grid to {out}: {exc}") from exc
    return out


def decoded_grid(decoded: Decoded, searcher: Searcher, encoder: Any, out: str | Path, nearest_rows: int = 1) -> Path:
    """The grid of ``decoded``: wrapped at 8 columns; under each row of decoded latents, up to
    ``nearest_rows`` rows of their nearest real items (for one decoded latent, its nearest items
    fill a row of their own)."""
    cells = list(zip(decoded.images, decoded.captions))
    rows: list[list[tuple[Image | None, str]]] = []
    if len(cells) == 1:
        rows.append(cells)
        rows.append(item_images(decoded.nearest[0][:8], searcher, encoder))
        return write_grid([r for r in rows if r], out)
    for start in range(0, len(cells), 8):
        rows.append(cells[start : start + 8])
        for j in range(nearest_rows):
            hits = [row[j] if len(row) > j else None for row in decoded.nearest[start : start + 8]]
            rows.append(item_images(hits, searcher, encoder))
    return write_grid(rows, out)
