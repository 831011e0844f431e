"""Portable collections: ``latentsearch export COL OUT`` and ``latentsearch import NEW IN``.

An export holds every item (id, key, source, modality, text, metadata, document, the file state
and content hash incremental indexing uses, the time it was added, and its vector) and the
manifest that says how the vectors were made (encoder spec and fingerprint, dimension, metric,
index spec, vector dtype). Formats, chosen by the file's suffix or ``fmt``:

- ``.parquet``: one row per item, the vector a fixed-size list of float32, metadata as JSON
  text; the manifest in the file's key–value metadata under ``latentsearch``. Needs pyarrow.
- ``.jsonl``: a first line ``{"latentsearch": {"format": 1, "manifest": {...}}}``, then one item
  per line (float32 values written as the shortest decimals that read back to the same bits).
- ``.npy``: the vectors alone, ``(n, dim)`` float32 in id order (not importable).

Exports stream in batches (bounded memory) into a temporary file renamed into place at the end,
so a killed export leaves no partial file. An import creates a new collection (SQLite in its
folder, or ``db`` PostgreSQL) without encoding anything: the same encoder pinned by its spec and
fingerprint, the same ids unless ``new_ids``, built in a hidden folder and renamed into place, so
a killed import leaves nothing (run it again). Vectors come back bit for bit (float16 collections
export their float16 values as float32, exactly), so searches give the same results.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import CollectionConfig
from .errors import InvalidInputError, LatentSearchError
from .stores.transfer import COLUMNS, insert_rows, iter_rows

FORMAT = 1
FORMATS = ("parquet", "jsonl", "npy")
MANIFEST_KEYS = ("encoder", "encoder_fingerprint", "dim", "metric", "index", "vector_dtype", "created_by", "created_at")
BATCH = 10_000
Progress = Callable[[int], None]


def format_of(path: str | Path, fmt: str | None) -> str:
    """The format ``fmt`` names, else the one ``path``'s suffix names, or an error."""
    chosen = (fmt or Path(path).suffix.lstrip(".")).lower()
    if chosen not in FORMATS:
        raise InvalidInputError(
            f"cannot tell the format of {str(path)!r}: give a .parquet, .jsonl or .npy file, or --format"
        )
    return chosen


def manifest_of(config: CollectionConfig) -> dict[str, Any]:
    """What an export records of a collection's manifest (not its store location or id)."""
    return {k: getattr(config, k) for k in MANIFEST_KEYS}


# -- export -------------------------------------------------------------------------------------


def export(col: Any, out: str | Path, fmt: str | None = None, progress: Progress | None = None) -> int:
    """Write every item of the open collection ``col`` to ``out``; returns how many."""
    out = Path(out).expanduser()
    kind = format_of(out, fmt)
    if kind == "parquet":
        _needs_pyarrow()
    header = {"format": FORMAT, "manifest": manifest_of(col.config), "exported_by": f"latentsearch {__version__}"}
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        with col.writing():  # no write, from any process, lands between the batches read
            n = {"parquet": _write_parquet, "jsonl": _write_jsonl, "npy": _write_npy}[kind](col, tmp, header, progress)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def _batches(col: Any) -> Iterator[tuple[list[dict[str, Any]], np.ndarray]]:
    yield from iter_rows(col.store, BATCH)


def _write_jsonl(col: Any, path: Path, header: dict[str, Any], progress: Progress | None) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"latentsearch": header}, ensure_ascii=False) + "\n")
        for rows, vectors in _batches(col):
            for row, vector in zip(rows, vectors):
                item = {**row, "added_at": _iso(row["added_at"]), "vector": [float(v) for v in vector]}
                f.write(json.dumps(item, ensure_ascii=False) + "\n")
            n += len(rows)
            if progress:
                progress(len(rows))
    return n


def _write_npy(col: Any, path: Path, header: dict[str, Any], progress: Progress | None) -> int:
    total, dim = len(col), col.config.dim
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (total, dim)})
        n = 0
        for rows, vectors in _batches(col):
            f.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
            n += len(rows)
            if progress:
                progress(len(rows))
    if n != total:  # cannot happen under the writer lock; a header that lied would be worse
        raise LatentSearchError(f"the collection changed during the export ({total} items, then {n})")
    return n


def _arrow_schema(dim: int, header: dict[str, Any]) -> Any:
    import pyarrow as pa

    fields = [
        pa.field("id", pa.int64(), nullable=False), pa.field("key", pa.string()), pa.field("source", pa.string()),
        pa.field("modality", pa.string()), pa.field("text", pa.string()), pa.field("metadata", pa.string()),
        pa.field("document", pa.string()), pa.field("content_hash", pa.string()), pa.field("file_size", pa.int64()),
        pa.field("file_mtime_ns", pa.int64()), pa.field("added_at", pa.timestamp("us", tz="UTC")),
        pa.field("vector", pa.list_(pa.float32(), dim)),
    ]
    return pa.schema(fields, metadata={"latentsearch": json.dumps(header)})


def _write_parquet(col: Any, path: Path, header: dict[str, Any], progress: Progress | None) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema(col.config.dim, header)
    n = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        for rows, vectors in _batches(col):
            columns: dict[str, Any] = {name: [r[name] for r in rows] for name in COLUMNS}
            columns["metadata"] = [json.dumps(m, ensure_ascii=False) for m in columns["metadata"]]
            flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
            columns["vector"] = pa.FixedSizeListArray.from_arrays(flat, col.config.dim)
            writer.write_table(pa.Table.from_pydict(columns, schema=schema))
            n += len(rows)
            if progress:
                progress(len(rows))
    return n


# -- import -------------------------------------------------------------------------------------


def read_header(path: str | Path, fmt: str | None = None) -> dict[str, Any]:
    """The export's header (format and manifest), checked."""
    path = Path(path).expanduser()
    kind = format_of(path, fmt)
    if kind == "npy":
        raise InvalidInputError(f"{path} holds vectors only (.npy); import a .parquet or .jsonl export")
    if not path.is_file():
        raise InvalidInputError(f"no export at {path}")
    try:
        if kind == "parquet":
            _needs_pyarrow()
            import pyarrow.parquet as pq

            raw = (pq.read_schema(str(path)).metadata or {}).get(b"latentsearch")
            header = json.loads(raw) if raw else None
        else:
            with open(path, encoding="utf-8") as f:
                first = json.loads(f.readline() or "null")
            header = first.get("latentsearch") if isinstance(first, dict) else None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {path} as a latentsearch {kind} export: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("manifest"), dict):
        raise InvalidInputError(f"{path} is not a latentsearch export (no latentsearch header)")
    if header.get("format") != FORMAT:
        raise InvalidInputError(f"{path} is export format {header.get('format')!r}; this latentsearch reads format {FORMAT}")
    missing = [k for k in ("encoder", "dim", "metric") if k not in header["manifest"]]
    if missing:
        raise InvalidInputError(f"the manifest in {path} lacks {', '.join(missing)}")
    return header


def read_batches(path: str | Path, dim: int, fmt: str | None = None) -> Iterator[tuple[list[dict[str, Any]], np.ndarray]]:
    """``(rows, vectors)`` of an export, in batches."""
    path = Path(path).expanduser()
    if format_of(path, fmt) == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=BATCH):
            data = batch.to_pydict()
            vectors = np.asarray(data.pop("vector"), dtype=np.float32).reshape(-1, dim)
            rows = [dict(zip(data, values)) for values in zip(*data.values())]
            for r in rows:
                r["metadata"] = json.loads(r["metadata"]) if r["metadata"] else {}
            yield rows, vectors
        return
    with open(path, encoding="utf-8") as f:
        f.readline()
        rows: list[dict[str, Any]] = []
        vectors: list[list[float]] = []
        for number, line in enumerate(f, start=2):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                vectors.append(item.pop("vector"))
                item["added_at"] = datetime.fromisoformat(item["added_at"]) if item.get("added_at") else None
            except (ValueError, KeyError, AttributeError) as exc:
                raise InvalidInputError(f"{path}, line {number}: not an exported item ({exc})") from None
            rows.append(item)
            if len(rows) == BATCH:
                yield rows, _matrix(vectors, dim, path)
                rows, vectors = [], []
        if rows:
            yield rows, _matrix(vectors, dim, path)


def import_collection(
    source: str | Path,
    path: str | Path,
    db: str | None = None,
    new_ids: bool = False,
    trust_remote_code: bool = False,
    fmt: str | None = None,
    progress: Progress | None = None,
) -> int:
    """Create the collection at ``path`` from the export ``source``; returns how many items."""
    from .collection import Collection
    from .encoders import check_remote_code
    from .identity import build, check_free, new_collection_id, schema_name

    header = read_header(source, fmt)
    m = header["manifest"]
    check_remote_code(str(m["encoder"]), trust_remote_code, source)  # the file does not decide that
    path = Path(path).expanduser()
    check_free(path)
    try:
        config = CollectionConfig(
            encoder=str(m["encoder"]), dim=int(m["dim"]), metric=str(m["metric"]), index=str(m.get("index", "auto")),
            encoder_fingerprint=str(m.get("encoder_fingerprint", "")), store_url=db,
            store_schema=schema_name(path) if db and not db.startswith("sqlite") else None,
            vector_dtype=str(m.get("vector_dtype", "float32")), created_by=f"latentsearch {__version__} (import)",
            collection_id=new_collection_id(),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"the manifest in {source} is not valid: {exc}") from None
    count = [0]

    def fill(store: Any) -> None:
        next_id = 1
        for rows, vectors in read_batches(source, config.dim, fmt):
            if new_ids:
                for r in rows:
                    r["id"], next_id = next_id, next_id + 1
            count[0] += insert_rows(store, rows, vectors)
            if progress:
                progress(len(rows))

    build(path, config, fill)
    with Collection.open(path, trust_remote_code=trust_remote_code) as col:
        col.index()  # built from the store now, and its snapshot saved, not at the first search
        col.flush()
    return count[0]


def _matrix(vectors: list[list[float]], dim: int, path: Path) -> np.ndarray:
    try:
        return np.asarray(vectors, dtype=np.float32).reshape(len(vectors), dim)
    except ValueError:
        raise InvalidInputError(f"{path}: a vector does not have {dim} values") from None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _needs_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise InvalidInputError("Parquet needs pyarrow: pip install 'latentsearch[parquet]' (or use .jsonl)") from None
