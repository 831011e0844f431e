"""The ONNX backends of sentence-transformers encoders (``backend=onnx|onnx-int8``): the model's
transformer exported once to ONNX, its graph fused by ONNX Runtime's transformer optimiser, and
for ``onnx-int8`` its weights quantised to int8 (dynamic quantisation, tuned to the CPU's int8
instructions), cached in a user cache folder keyed by the torch weights' digest. Tokenisation,
pooling and normalisation stay the SentenceTransformer's own modules: only the transformer's
forward pass runs in ONNX Runtime.

sentence-transformers' own ``backend="onnx"`` needs ``optimum-onnx``, whose releases pin
``transformers<4.58``; this module does the same export with ``torch.onnx`` and
``onnxruntime`` alone, so it works with any transformers.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, LatentSearchError
from .exported import file_sha256

BACKENDS = ("torch", "onnx", "onnx-int8")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FILE = "model.onnx"
EXPORT_VERSION = "1"  # bumped when the export or quantisation changes: a new cache entry
_log = logging.getLogger(__name__)


def check_backend(value: str | None, kind: str = "sentence-transformers") -> str:
    backend = (value or "torch").strip().lower()
    if backend not in BACKENDS:
        raise InvalidInputError(f"{kind}: backend={value!r} is not one of {', '.join(BACKENDS)}")
    if backend != "torch":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise LatentSearchError(
                f"{kind}: backend={backend} needs onnxruntime and onnx (pip install 'latentsearch[onnx]')"
            ) from exc
    return backend


def int8_instruction_set() -> str:
    """The CPU's fastest int8 instructions, as optimum names its quantisation presets:
    ``avx512_vnni``, ``avx512``, ``avx2``, ``arm64``, or ``none`` (int8 then runs slowly)."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags and "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "none"


def cache_root() -> Path:
    """``$LATENTSEARCH_CACHE/onnx``, else the platform's user cache folder's ``latentsearch/onnx``."""
    if os.environ.get("LATENTSEARCH_CACHE"):
        base = Path(os.environ["LATENTSEARCH_CACHE"]).expanduser()
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "latentsearch"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches" / "latentsearch"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "latentsearch"
    return base / "onnx"


def exported_model(model: Any, weights: str, backend: str) -> tuple[Path, dict[str, Any]]:
    """The cached ONNX file of ``model`` (a SentenceTransformer whose first module is a
    transformer) for ``backend``, exported on first need, and its metadata (``sha256``,
    ``instruction_set``, ``inputs``). ``weights``: the torch weights' digest, the cache key."""
    isa = int8_instruction_set() if backend == "onnx-int8" else ""
    variant = backend + (f"-{isa}" if isa else "") + f"-v{EXPORT_VERSION}"
    return cached_export(weights, variant, lambda folder: _export(model, folder, backend, isa))


def cached_export(key: str, variant: str, export: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    """``cache_root()/key/variant/model.onnx`` and its metadata, made by ``export(folder)`` (which
    writes :data:`FILE` into ``folder`` and returns the metadata) on first need.

    Exported into a temporary folder beside the final one, then renamed, under a file lock: a
    crash leaves no half file, and two processes exporting at once export once."""
    from filelock import FileLock

    parent = cache_root() / key
    final = parent / variant
    parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(parent / f"{variant}.lock"), timeout=1800):
        if not (final / "meta.json").exists():
            work = Path(tempfile.mkdtemp(prefix=f".{variant}-", dir=parent))
            try:
                meta = export(work)
                (work / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
                if final.exists():  # a leftover without meta.json: an export that did not finish
                    shutil.rmtree(final)
                os.replace(work, final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            _log.info("exported %s to %s", variant, final)
    return final / FILE, json.loads((final / "meta.json").read_text())


def export_image_model(model: Any, folder: Path, input_size: Sequence[int]) -> dict[str, Any]:
    """Export a torch image model (``(n, c, h, w)`` pixels → ``(n, d)`` features) to
    ``folder/model.onnx`` with a dynamic batch size; its metadata for :func:`cached_export`."""
    import onnxruntime
    import torch

    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the legacy exporter
        torch.onnx.export(
            model.eval(), (torch.zeros((1, *input_size)),), str(folder / FILE), dynamo=False,
            input_names=["pixels"], output_names=["features"],
            dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}}, opset_version=17,
        )
    return {"backend": "onnx", "inputs": ["pixels"], "sha256": file_sha256(folder / FILE),
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__}


def onnx_session(path: Path) -> Any:
    """An ONNX Runtime session of ``path`` on the CPU, every graph optimisation on."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export(model: Any, folder: Path, backend: str, isa: str) -> dict[str, Any]:
    import torch

    transformer = model[0].auto_model
    features = model.preprocess(["an example text to trace", "a second one"])
    inputs = [k for k in MODEL_INPUTS if k in features]
    if "input_ids" not in inputs or "attention_mask" not in inputs:
        raise LatentSearchError("backend=onnx: the tokenizer gives no input_ids and attention_mask")

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = transformer

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(inputs, args)), return_dict=True).last_hidden_state

    raw = folder / "raw.onnx"
    config = transformer.config
    attention = getattr(config, "_attn_implementation", None)
    _set_attention(transformer, "eager")  # the pattern ONNX Runtime fuses into its Attention op
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on the legacy exporter and on Python ifs
            axes = {k: {0: "batch", 1: "tokens"} for k in [*inputs, "last_hidden_state"]}
            torch.onnx.export(
                LastHiddenState().eval(), tuple(features[k].to(model.device) for k in inputs), str(raw),
                dynamo=False, input_names=inputs, output_names=["last_hidden_state"],
                dynamic_axes=axes, opset_version=17,
            )
    finally:
        if attention:
            _set_attention(transformer, attention)
    optimised = folder / "optimised.onnx"
    _fuse(raw, optimised, config)
    raw.unlink()
    if backend == "onnx-int8":
        _quantise(optimised, folder / FILE, isa)
        optimised.unlink()
    else:
        optimised.rename(folder / FILE)
    import onnxruntime

    return {
        "backend": backend, "instruction_set": isa or None, "inputs": inputs,
        "sha256": file_sha256(folder / FILE), "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
    }


def _set_attention(transformer: Any, name: str) -> None:
    try:
        transformer.set_attn_implementation(name)
    except Exception:  # older transformers, or a model that has only one
        transformer.config._attn_implementation = name


def _fuse(source: Path, target: Path, config: Any) -> None:
    """ONNX Runtime's transformer fusions (attention, layer norms, GELU) where it knows the
    architecture; the plain export otherwise."""
    from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model

    kind = getattr(config, "model_type", "")
    kind = {"roberta": "bert", "xlm-roberta": "bert", "mpnet": "bert", "distilbert": "bert"}.get(kind, kind)
    if kind not in MODEL_TYPES:
        shutil.copyfile(source, target)
        return
    heads, hidden = int(getattr(config, "num_attention_heads", 0)), int(getattr(config, "hidden_size", 0))
    fused = optimize_model(str(source), model_type=kind, num_heads=heads, hidden_size=hidden, opt_level=0)
    fused.save_model_to_file(str(target))


def _quantise(source: Path, target: Path, isa: str) -> None:
    """Dynamic int8 quantisation of the matrix products, as optimum's presets for ``isa``:
    signed int8 weights per channel, and 7-bit weights (``reduce_range``) where the CPU has no
    VNNI (its 8-bit products can saturate). The fused attention's own projections stay float:
    quantising them too was no faster on MiniLM and further from torch's vectors.

    The activations' scale is computed per call, over the whole batch: a text's int8 vector
    depends a little on the texts it is batched with (cosine ≥ 0.97 between batchings)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
        reduce_range=isa not in ("avx512_vnni", "arm64"), op_types_to_quantize=["MatMul"],
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


def use_onnx(model: Any, path: Path, inputs: list[str]) -> None:
    """Swap the SentenceTransformer's transformer for an ONNX Runtime session of ``path``
    (the torch weights are dropped); the model's tokenisation, pooling and normalisation stay."""
    model[0].model = OnnxTransformer(path, model[0].auto_model.config, inputs)


def _torch_module() -> Any:
    import torch

    return torch.nn.Module


class OnnxTransformer(_torch_module()):  # type: ignore[misc]
    """A stand-in for a transformers model whose forward runs an ONNX Runtime session and
    returns its ``last_hidden_state``."""

    def __init__(self, path: Path, config: Any, inputs: list[str]) -> None:
        import torch

        super().__init__()
        self.config, self.inputs = config, inputs
        self.device = torch.device("cpu")
        self.session = onnx_session(path)

    def forward(self, **features: Any) -> dict[str, Any]:
        import torch

        feed = {k: features[k].detach().cpu().numpy().astype("int64") for k in self.inputs}
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        return {"last_hidden_state": torch.from_numpy(hidden)}
