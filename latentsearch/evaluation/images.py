"""Image retrieval quality on a labelled folder of images (one subfolder per class).

Every image is indexed into a collection; then every image queries the rest by its item id (the
collection leaves the query item out of its own results). A retrieved image is relevant when it
has the query's class. Two measures:

* ``precision@k``: the share of the top ``k`` hits that have the query's class, always divided
  by ``k`` (a missing hit counts as wrong). It comes from the collection's index, so an
  approximate index shows here.
* ``map``: mean average precision over the **full** ranking of the other images, computed
  **exactly with numpy** from the stored vectors (every pairwise score, not the index), so it
  measures the encoder alone. Average precision of one query is the mean, over the ``R`` other
  images of its class, of the precision at each of their ranks. Equal scores are ordered by the
  images' order in :func:`labelled_images` (class folders, then file names, sorted).

Both are reported per class (means over the images of that class) and overall (the mean over
all query images, so each image weighs the same). Everything that scores is a small pure
function: :func:`precision_at_k`, :func:`average_precision`, :func:`average_precisions`,
:func:`exact_average_precisions`, :func:`per_class_means`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..ingest.records import FileStat, Record
from ..ingest.sources import IMAGE_SUFFIXES
from .metrics import _check_ks
from .report import fingerprint_files, machine_info

DEFAULT_IMAGE_ENCODER = "timm:resnet18"
DEFAULT_IMAGE_KS = (1, 5, 10, 100)
SEARCH_CHUNK = 256  # queries per search_batch call
EXACT_CHUNK = 1024  # query rows per block of the exact score matrix


# -- the dataset --------------------------------------------------------------------------------


def labelled_images(folder: str | Path) -> tuple[list[Path], list[str]]:
    """The image files of ``folder/<class>/<file>`` and their classes (the parent folder's name).

    Sorted by class, then file name. Only the images directly inside each class folder count;
    hidden files and folders are left out. Raises :class:`InvalidInputError` when ``folder`` is
    not a folder, has no subfolder holding images, or fewer than two such classes.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InvalidInputError(f"no image folder at {root}")
    paths: list[Path] = []
    labels: list[str] = []
    classes = 0
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(
            p for p in sub.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if images:
            classes += 1
            paths += images
            labels += [sub.name] * len(images)
    if classes == 0:
        raise InvalidInputError(
            f"{root} has no class subfolders with images; lay it out as {root}/<class>/<image> "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    if classes < 2:
        raise InvalidInputError(
            f"{root} has images of one class only ({labels[0]!r}); retrieval quality by class "
            "needs at least two class subfolders"
        )
    return paths, labels


def first_per_class(paths: Sequence[Path], labels: Sequence[str], limit: int | None) -> tuple[list[Path], list[str]]:
    """The first ``limit`` images of each class, in the order given (all with ``None``)."""
    if limit is None:
        return list(paths), list(labels)
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 2:
        raise InvalidInputError(f"limit per class must be an integer of at least 2, got {limit!r}")
    seen: dict[str, int] = {}
    kept_paths, kept_labels = [], []
    for path, label in zip(paths, labels):
        if seen.get(label, 0) < limit:
            seen[label] = seen.get(label, 0) + 1
            kept_paths.append(path)
            kept_labels.append(label)
    return kept_paths, kept_labels


# -- metrics (pure) -----------------------------------------------------------------------------


def class_matches(query_label: str, ranked_labels: Sequence[str]) -> np.ndarray:
    """Booleans, one per ranked item: does it have the query's class?"""
    return np.array([label == query_label for label in ranked_labels], dtype=bool)


def precision_at_k(matches: Sequence[bool] | np.ndarray, k: int) -> float:
    """The share of the top ``k`` that match, divided by ``k`` even when fewer were retrieved."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"cutoff k must be a positive integer, got {k!r}")
    return float(np.count_nonzero(np.asarray(matches, dtype=bool)[:k])) / k


def average_precision(matches: Sequence[bool] | np.ndarray) -> float:
    """Average precision of one **complete** ranking (every candidate ranked once).

    The mean of precision@rank over the ranks of the matching items; 0.0 when nothing matches.
    Because the ranking is complete, the number of matches in it is ``R``, the number of
    relevant items.
    """
    return float(average_precisions(np.asarray(matches, dtype=bool)[None, :])[0])


def average_precisions(matches: np.ndarray) -> np.ndarray:
    """:func:`average_precision` of each row of a 2-D boolean array (complete rankings)."""
    m = np.asarray(matches, dtype=bool)
    if m.ndim != 2:
        raise InvalidInputError(f"matches must be 2-D (queries, ranking), got shape {m.shape}")
    if m.shape[1] == 0:
        return np.zeros(m.shape[0])
    hits = np.cumsum(m, axis=1, dtype=np.float64)
    precision = hits / np.arange(1, m.shape[1] + 1, dtype=np.float64)
    relevant = m.sum(axis=1)
    total = np.where(m, precision, 0.0).sum(axis=1)
    return np.divide(total, relevant, out=np.zeros(m.shape[0]), where=relevant > 0)


def exact_rankings(vectors: np.ndarray, metric: str, chunk: int = EXACT_CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """``(first_row, order)`` blocks: for each query row, every *other* row, best first.

    Scores: inner product for ``ip`` and ``cosine`` (vectors taken as stored, i.e. already
    normalised for cosine), negative squared distance for ``l2``. Ties keep row order (stable sort).
    ``order`` has shape ``(rows in block, n - 1)``.
    """
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if metric not in ("ip", "cosine", "l2"):
        raise InvalidInputError(f"unknown metric {metric!r}; known: ip, cosine, l2")
    sq = (x.astype(np.float64) ** 2).sum(axis=1) if metric == "l2" else None
    for start in range(0, n, chunk):
        block = x[start : start + chunk]
        scores = (block.astype(np.float64) @ x.T.astype(np.float64))
        if sq is not None:
            scores = 2 * scores - sq[start : start + chunk, None] - sq[None, :]
        rows = np.arange(len(block))
        scores[rows, start + rows] = -np.inf  # the query itself goes last, then is cut off
        order = np.argsort(-scores, axis=1, kind="stable")[:, : n - 1]
        yield start, order


def exact_average_precisions(
    vectors: np.ndarray, labels: Sequence[str], metric: str, chunk: int = EXACT_CHUNK
) -> np.ndarray:
    """Average precision of each row against all other rows, by class agreement (exact)."""
    codes = np.unique(np.asarray(labels), return_inverse=True)[1]
    if len(codes) != len(vectors):
        raise InvalidInputError(f"{len(vectors)} vectors but {len(codes)} labels")
    out = np.zeros(len(codes))
    for start, order in exact_rankings(vectors, metric, chunk):
        mine = codes[start : start + len(order)]
        out[start : start + len(order)] = average_precisions(codes[order] == mine[:, None])
    return out


def per_class_means(
    values: Mapping[str, Sequence[float] | np.ndarray], labels: Sequence[str]
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-query ``values`` (metric name -> one value per query) averaged per class and overall.

    Returns ``(per_class, overall)``: ``per_class[label]`` and ``overall`` map each metric to its
    mean, plus ``"images"`` to the number of queries. Overall is the mean over all queries.
    """
    labels = list(labels)
    arrays = {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}
    for name, v in arrays.items():
        if len(v) != len(labels):
            raise InvalidInputError(f"{name} has {len(v)} values for {len(labels)} queries")
    if not labels:
        raise InvalidInputError("no queries to average")
    lab = np.asarray(labels)
    per_class: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(labels):
        mask = lab == label
        per_class[label] = {"images": int(mask.sum()), **{n: math.fsum(v[mask]) / mask.sum() for n, v in arrays.items()}}
    overall = {"images": len(labels), **{n: math.fsum(v) / len(v) for n, v in arrays.items()}}
    return per_class, overall


# -- the harness --------------------------------------------------------------------------------


@dataclass
class ImageQualityResult:
    """Per-class and overall ``precision@k`` (from the index) and ``map`` (exact, full ranking).

    ``per_class[label]`` and ``overall`` hold ``images`` (how many queried) and one key per
    metric (``"precision@1"``, ..., ``"map"``). ``ks`` are the cutoffs kept: those below the
    number of images (a query has ``images - 1`` others to rank).
    """

    dataset: str
    encoder: str
    index: str
    classes: list[str]
    images: int
    ks: tuple[int, ...]
    per_class: dict[str, dict[str, float]]
    overall: dict[str, float]
    index_seconds: float  # encoding and storing the images that were not in the collection yet
    search_seconds: float  # every image's search_batch query
    map_seconds: float  # the exact full-ranking average precisions
    added: int  # images encoded in this run (0 when a collection was reused as it was)
    skipped: list[dict[str, str]] = field(default_factory=list)  # unreadable images, not scored
    collection: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""  # blake2b of the scored image files' bytes, in order

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ks"] = list(self.ks)
        return out


def _records(paths: Sequence[Path]) -> Iterator[Record]:
    """Image records keyed by the resolved path, as ``latentsearch index`` keys them."""
    for path in paths:
        resolved = path.resolve()
        try:
            stat: FileStat | None = FileStat.of(resolved)
        except OSError:
            stat = None  # the pipeline reports it as skipped when it fails to read it
        yield Record(image_path=resolved, key=str(resolved), source=str(resolved), stat=stat)


def _check_classes(labels: Sequence[str], folder: str | Path) -> None:
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    if len(counts) < 2:
        raise InvalidInputError(f"fewer than two classes of {folder} could be read; nothing to compare")
    alone = [label for label, c in counts.items() if c < 2]
    if alone:
        raise InvalidInputError(f"class {alone[0]!r} has only one readable image; each class needs at least two")


def image_quality(
    folder: str | Path,
    collection_path: str | Path,
    encoder: str | None = None,
    index: str = "Flat",
    ks: Sequence[int] = DEFAULT_IMAGE_KS,
    limit_per_class: int | None = None,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> ImageQualityResult:
    """Index the labelled images of ``folder`` into ``collection_path`` and score retrieval.

    ``encoder``: the spec a new collection is created with (default :data:`DEFAULT_IMAGE_ENCODER`);
    an existing collection is reused (only images it lacks, or whose file changed, are encoded)
    and, when ``encoder`` is given, must have been built with it. An existing collection with
    another ``index`` is re-indexed from its stored vectors. It must hold no items other than
    this selection of images, since they would take part in every ranking.
    ``limit_per_class``: the first N images (by file name) of each class.
    """
    from ..collection import Collection
    from ..config import manifest_path

    paths, labels = labelled_images(folder)
    paths, labels = first_per_class(paths, labels, limit_per_class)
    wanted = _check_ks(ks)
    _check_classes(labels, folder)  # before anything is encoded; again below, for unreadable images
    say = progress or (lambda _message: None)

    where = Path(collection_path).expanduser()
    if manifest_path(where).exists():
        col = Collection.open(where, encoder=encoder)
    else:
        col = Collection.create(where, encoder=encoder or DEFAULT_IMAGE_ENCODER, index=index)
    with col:
        if index != col.config.index:
            col.reindex(index)
        say(f"indexing {len(paths):,} images with {col.config.encoder}")
        started = time.perf_counter()
        report = col.add_records(_records(paths), batch_size=batch_size, on_conflict="update")
        col.flush()
        index_seconds = time.perf_counter() - started

        found = col.store.keys_to_ids([str(p.resolve()) for p in paths])
        keep = [i for i, p in enumerate(paths) if str(p.resolve()) in found]
        ids = [found[str(paths[i].resolve())][0] for i in keep]
        labels = [labels[i] for i in keep]
        extra = len(col) - len(ids)
        if extra > 0:
            raise InvalidInputError(
                f"the collection at {where} holds {extra} items besides these {len(ids)} images; "
                "they would take part in every ranking: use a fresh collection for this selection"
            )
        _check_classes(labels, folder)
        n = len(ids)
        kept_ks = tuple(k for k in wanted if k <= n - 1)
        if not kept_ks:
            raise InvalidInputError(f"every cutoff {list(wanted)} is at least the number of images ({n})")

        say(f"searching {n:,} queries, k={max(kept_ks)}")
        label_of = dict(zip(ids, labels))
        depth = max(kept_ks)
        precisions = {k: np.zeros(n) for k in kept_ks}
        started = time.perf_counter()
        for start in range(0, n, SEARCH_CHUNK):
            chunk = ids[start : start + SEARCH_CHUNK]
            for row, (item_id, hits) in enumerate(zip(chunk, col.search_batch(chunk, k=depth)), start):
                matches = class_matches(label_of[item_id], [label_of.get(h.id, "") for h in hits])
                for k in kept_ks:
                    precisions[k][row] = precision_at_k(matches, k)
        search_seconds = time.perf_counter() - started

        say("exact average precision over the full rankings")
        started = time.perf_counter()
        _, vectors = col.store.vectors(ids)
        aps = exact_average_precisions(vectors, labels, col.config.metric)
        map_seconds = time.perf_counter() - started
        info = col.info()

    fingerprint = fingerprint_files(paths[i] for i in keep)
    per_class, overall = per_class_means({**{f"precision@{k}": v for k, v in precisions.items()}, "map": aps}, labels)
    return ImageQualityResult(
        dataset=str(folder),
        encoder=info["encoder"],
        index=info["index"],
        classes=list(per_class),
        images=n,
        ks=kept_ks,
        per_class=per_class,
        overall=overall,
        index_seconds=index_seconds,
        search_seconds=search_seconds,
        map_seconds=map_seconds,
        added=report.added + report.updated,
        skipped=[{"source": s.source, "reason": s.reason} for s in report.skipped],
        collection=info,
        fingerprint=fingerprint,
    )


# -- rendering ----------------------------------------------------------------------------------


def metric_names(result: ImageQualityResult) -> list[str]:
    return [*(f"precision@{k}" for k in result.ks), "map"]


def image_quality_table(result: ImageQualityResult, title: str | None = None) -> Any:
    """A rich ``Table``: one row per class, then the overall row."""
    from rich.table import Table

    names = metric_names(result)
    table = Table(title=title)
    table.add_column("class", no_wrap=True)
    table.add_column("images", justify="right")
    for name in names:
        table.add_column(name.replace("precision@", "P@").replace("map", "mAP"), justify="right")
    rows = list(result.per_class.items())
    for i, (label, values) in enumerate(rows):
        table.add_row(label, f"{values['images']:,}", *(f"{values[n]:.4f}" for n in names),
                      end_section=i == len(rows) - 1)
    table.add_row("overall", f"{result.overall['images']:,}", *(f"{result.overall[n]:.4f}" for n in names))
    return table


def image_quality_markdown(result: ImageQualityResult, title: str | None = None) -> str:
    """The rows of :func:`image_quality_table` as a Markdown table under ``title`` if given."""
    names = metric_names(result)
    heads = [n.replace("precision@", "P@").replace("map", "mAP") for n in names]
    lines = [f"### {title}", ""] if title else []
    lines += ["| class | images | " + " | ".join(heads) + " |", "|:---|---:|" + "---:|" * len(names)]
    rows = [*result.per_class.items(), ("**overall**", result.overall)]
    for label, values in rows:
        lines.append(f"| {label} | {values['images']:,} | " + " | ".join(f"{values[n]:.4f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def image_quality_json(result: ImageQualityResult) -> dict[str, Any]:
    """The JSON document of an image-quality run (``machine`` records where it was measured)."""
    data = result.to_dict()
    return {
        "benchmark": "image_quality",
        "dataset": {"name": data.pop("dataset"), "classes": data.pop("classes"), "images": data.pop("images"),
                    "fingerprint": data.pop("fingerprint")},
        "machine": machine_info(),
        **data,
    }
