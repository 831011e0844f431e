"""Records: one thing to index, before it is encoded."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError
from ..media import MAX_IMAGE_PIXELS, open_image, to_rgb  # noqa: F401 - the ingest side's names for them
from ..types import IMAGE, TEXT, VECTOR

if TYPE_CHECKING:
    from PIL.Image import Image



@dataclass(frozen=True)
class FileStat:
    """Size and modification time of a source file: equal stats mean the file is unchanged."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStat:
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns)


@dataclass(eq=False)  # records are compared by identity: they may hold arrays and images
class Record:
    """One input: a text, an image or a vector, with its key, source and metadata.

    Files are read late: ``text_path`` and ``image_path`` are opened by :meth:`load` in the
    pipeline's reader stage, so a stream of records holds no file contents, and a file whose
    ``stat`` matches the stored one is never read at all.
    """

    text: str | None = None
    text_path: Path | None = None
    image: Image | None = None
    image_path: Path | None = None
    vector: np.ndarray | None = None
    key: str | None = None
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    stat: FileStat | None = None  # of the source file, for incremental re-indexing
    document: str | None = None  # the key of the document a passage belongs to
    warning: str | None = None  # something the user should hear about, e.g. a fallback encoding

    @property
    def modality(self) -> str:
        if self.text is not None or self.text_path is not None:
            return TEXT
        if self.vector is not None:
            return VECTOR
        return IMAGE

    def load(self) -> None:
        """Read the text file or decode the image (raises ``OSError``/``ValueError`` with a reason)."""
        if self.text is None and self.text_path is not None:
            from .readers import read_text_file

            self.text, self.warning = read_text_file(self.text_path)
        elif self.image is None and self.image_path is not None:
            self.image = open_image(self.image_path)

    def content_hash(self) -> str:
        """A hash of what the encoder sees: the text, the image file's bytes or the pixels."""
        h = hashlib.blake2b(digest_size=16)
        if self.text is not None:
            h.update(b"t" + self.text.encode("utf-8", "surrogatepass"))
        elif self.vector is not None:
            h.update(b"v" + np.ascontiguousarray(self.vector, dtype=np.float32).tobytes())
        elif self.image_path is not None:
            h.update(b"f")
            with open(self.image_path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        elif self.image is not None:
            h.update(b"i" + repr(self.image.size).encode() + self.image.convert("RGB").tobytes())
        return h.hexdigest()


_PLAIN = frozenset({str, int, float, bool, type(None)})  # exact types JSON holds as they are


def json_safe(value: Any, where: str = "metadata") -> Any:
    """``value`` with numpy scalars and arrays made plain; anything JSON cannot hold is an error."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, dict):
        if all(type(k) is str and type(v) in _PLAIN for k, v in value.items()):
            return value  # already plain: no copy (this runs once per stored item)
        return {str(k): json_safe(v, f"{where}.{k}") for k, v in value.items()}
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [json_safe(v, where) for v in value]
    raise InvalidInputError(
        f"{where} holds a {type(value).__name__}; metadata values must be JSON: "
        "str, int, float, bool, None, lists and dicts"
    )


def make_records(
    inputs: Sequence[Any] | np.ndarray,
    metadata: Sequence[dict[str, Any]] | None,
    keys: Sequence[str] | None,
) -> list[Record]:
    """Records for ``add``: a 2-D array is vectors; str is text; Path and PIL images are images."""
    if isinstance(inputs, np.ndarray) and inputs.ndim == 2:
        items: list[Any] = list(inputs)
    elif isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence | np.ndarray):
        raise InvalidInputError("add() takes a list of inputs (or a 2-D array of vectors), not a single one")
    else:
        items = list(inputs)
    if keys is not None and len(keys) != len(items):
        raise InvalidInputError(f"{len(items)} inputs but {len(keys)} keys")
    metas = checked_metadata(metadata, len(items))
    records = []
    for i, value in enumerate(items):
        record = record_for(value)
        if keys is not None:
            if not isinstance(keys[i], str) or not keys[i]:
                raise InvalidInputError(f"keys must be non-empty strings; key {i} is {keys[i]!r}")
            record.key = keys[i]
        if metas is not None:
            record.metadata = metas[i]
        records.append(record)
    return records


def checked_metadata(metadata: Sequence[Mapping[str, Any]] | None, n: int) -> list[dict[str, Any]] | None:
    """One JSON-safe dict per input (numpy values made plain), or the error naming the bad one."""
    if metadata is None:
        return None
    if len(metadata) != n:
        raise InvalidInputError(f"{n} inputs but {len(metadata)} metadata")
    out = []
    for i, meta in enumerate(metadata):
        if not isinstance(meta, Mapping):
            raise InvalidInputError(f"metadata {i} is a {type(meta).__name__}, not a dict")
        out.append(json_safe(meta if type(meta) is dict else dict(meta), f"metadata {i}"))
    return out


def record_for(value: Any) -> Record:
    if isinstance(value, str):
        return Record(text=value)
    if isinstance(value, Path):
        return Record(image_path=value.expanduser().resolve(), source=str(value.expanduser().resolve()))
    if isinstance(value, np.ndarray):
        return Record(vector=value)
    if hasattr(value, "convert") and hasattr(value, "size"):  # a PIL image
        return Record(image=value)
    raise InvalidInputError(
        f"cannot add a {type(value).__name__}; give str (text), PIL images, Paths of images or vectors"
    )
