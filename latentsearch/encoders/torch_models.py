"""PyTorch models as encoders (shared behaviour and options: :mod:`.exported`):

- ``torchscript:FILE`` — a TorchScript module saved with ``torch.jit.save``: its ``encode``
  method when it has one, else ``forward``; a ``decode`` method (``@torch.jit.export``) makes it a
  decoder too. A TorchScript file is not a pickle of Python objects: loading it runs no Python
  code of its own.
- ``torch:package.module:factory`` — a callable of the user's own code, imported by name (never
  loaded from a file by pickle), returning a ``torch.nn.Module``; built with torch's generator
  seeded to 0, so random weights are the same each time. ``checkpoint=FILE`` loads a state dict
  into it (safetensors, or a torch file read with ``weights_only=True``, which runs no code from
  the file). Since the spec names Python code to run, a collection built with it opens only when
  the user trusts it, like ``trust_remote_code`` (see ``latentsearch.encoders.runs_remote_code``).

A text model's method gets ``input_ids`` and ``attention_mask`` by those names when it has such
parameters (``token_type_ids`` too when it takes them), else as its first (two) arguments.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import io
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..devices import torch_device
from ..errors import InvalidInputError, LatentSearchError
from .base import digest, module_digest
from .exported import ExportedEncoder
from .exported_options import absolute_path, model_file, sidecar_path

FACTORY_SEED = 0
_FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def parameter_names(fn: Any) -> list[str] | None:
    """The parameter names of a model's method, ``self`` left out (a TorchScript method's schema,
    or a Python signature); None when they cannot be read."""
    import torch

    target = fn.forward if isinstance(fn, torch.nn.Module) else fn
    schema = getattr(target, "schema", None)
    if schema is not None:
        names = [a.name for a in schema.arguments]
        return names[1:] if names and names[0] == "self" else names
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


class TorchModelEncoder(ExportedEncoder):
    """An ``nn.Module`` (scripted or not) run with ``torch.inference_mode()`` on the device
    :func:`~latentsearch.devices.torch_device` chooses."""

    def _attach(self, module: Any) -> None:
        import torch

        self.device = torch_device()
        self.model = module.to(self.device).eval()
        encode = getattr(self.model, "encode", None)
        self._encode_fn = encode if callable(encode) else self.model
        decode = getattr(self.model, "decode", None)
        self._decode_fn = decode if callable(decode) else None
        self._text_params = parameter_names(self._encode_fn) if self.is_text else None
        floats = [p.dtype for p in self.model.parameters() if p.is_floating_point()]
        self._dtype = floats[0] if floats else torch.float32

    def _run_encoder(self, inputs: dict[str, np.ndarray]) -> Any:
        import torch

        with torch.inference_mode():
            if not self.is_text:
                return self._encode_fn(torch.from_numpy(inputs["pixels"]).to(self.device, self._dtype))
            tensors = {k: torch.from_numpy(v).to(self.device) for k, v in inputs.items()}
            names = self._text_params
            if names is not None and "input_ids" in names:
                return self._encode_fn(**{k: v for k, v in tensors.items() if k in names})
            count = 2 if names is None else max(1, min(2, len(names)))
            return self._encode_fn(*[tensors["input_ids"], tensors["attention_mask"]][:count])

    def _has_decoder(self) -> bool:
        return self._decode_fn is not None

    def _run_decoder(self, latents: np.ndarray) -> Any:
        import torch

        with torch.inference_mode():
            return self._decode_fn(torch.from_numpy(latents).to(self.device, self._dtype))  # type: ignore[misc]


class TorchScriptEncoder(TorchModelEncoder):
    """``torchscript:FILE[?size=N&mean=…&std=…&pool=…&tokenizer=DIR&max_length=N&latent=mean|sample]``."""

    kind = "torchscript"

    def __init__(self, name: str = "", options: dict[str, str] | None = None) -> None:
        import torch

        path = model_file(self.kind, name)
        self._parse(options, sidecar_path(path))
        data = path.read_bytes()  # hashed and loaded from the same bytes
        self.sha256 = hashlib.sha256(data).hexdigest()
        try:
            with warnings.catch_warnings():  # torch calls TorchScript deprecated; it loads and runs all the same
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(io.BytesIO(data), map_location="cpu")
        except Exception as exc:
            raise InvalidInputError(
                f"cannot load {path} as TorchScript ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                "save it with torch.jit.save(torch.jit.script(model), FILE), or name your own code with "
                "torch:package.module:factory?checkpoint=FILE"
            ) from exc
        self._attach(module)
        self._finish(str(path), f"sha256:{self.sha256}")


class TorchFactoryEncoder(TorchModelEncoder):
    """``torch:package.module:factory[?checkpoint=FILE&size=N&…]``: runs the user's own code."""

    kind = "torch"
    extra_options = ["checkpoint"]

    def __init__(self, name: str = "", options: dict[str, str] | None = None) -> None:
        import torch

        if not _FACTORY.fullmatch(name or ""):
            raise InvalidInputError(
                f"torch: names a Python callable as torch:package.module:factory (importable, returning a "
                f"torch.nn.Module), not {name!r}; model files go in torchscript:FILE or onnx:FILE"
            )
        checkpoint = (options or {}).get("checkpoint")
        sidecar = sidecar_path(absolute_path(self.kind, "checkpoint", checkpoint, Path.cwd())) if checkpoint else None
        opts = self._parse(options, sidecar)
        factory, factory_module = _import_factory(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(FACTORY_SEED)
            try:
                model = factory()
            except Exception as exc:
                raise LatentSearchError(f"torch:{name} failed ({type(exc).__name__}: {exc})") from exc
        if not isinstance(model, torch.nn.Module):
            raise InvalidInputError(f"torch:{name} returned a {type(model).__name__}, not a torch.nn.Module")
        if "checkpoint" in opts.paths:
            load_state_dict_file(model, opts.paths["checkpoint"], f"torch:{name}")
        sources = {_source_digest(factory_module), _source_digest(sys.modules.get(type(model).__module__))}
        content = digest(module_digest(model), *sorted(sources))
        self._attach(model)
        self._finish(name, content)


def _import_factory(name: str) -> tuple[Any, Any]:
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(
            f"torch:{name}: cannot import {module_name!r} ({exc}); it must be importable (installed, or on PYTHONPATH)"
        ) from exc
    except Exception as exc:
        raise LatentSearchError(f"torch:{name}: importing {module_name!r} failed ({type(exc).__name__}: {exc})") from exc
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise InvalidInputError(f"torch:{name}: {module_name!r} has no {attr!r}")
    if not callable(obj):
        raise InvalidInputError(f"torch:{name}: {attr!r} is a {type(obj).__name__}, not a callable")
    return obj, module


def _source_digest(module: Any) -> str:
    """A hash of a module's source file ("" when it has none, e.g. a built-in)."""
    try:
        source = inspect.getsourcefile(module) if module is not None else None
    except TypeError:
        source = None
    if not source or not Path(source).is_file():
        return ""
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()


def load_state_dict_file(model: Any, path: Path, what: str) -> None:
    """Load a state dict into ``model``, strictly: safetensors, or a torch file read with
    ``weights_only=True`` (a pickle that names anything but tensors and containers is refused
    before any of it runs)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidInputError(
            f"cannot read the checkpoint {path} as weights ({_weights_reason(exc)}); it is read with "
            "weights_only=True, which runs no code from the file: save a state dict "
            "(torch.save(model.state_dict(), FILE)) or a safetensors file"
        ) from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # a training checkpoint's weights
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidInputError(f"the checkpoint {path} is not a state dict (a mapping of names to tensors)")
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise InvalidInputError(f"the checkpoint {path} does not fit the model of {what}: {' '.join(lines[:2])}") from exc


def _weights_reason(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused ("WeightsUnpickler error: Unsupported global:
    GLOBAL exec …"), without its advice to load the file with weights_only=False."""
    message, mark = str(exc), "WeightsUnpickler error:"
    if mark in message:
        kept = []
        for line in message.split(mark, 1)[1].splitlines():
            if line.strip().startswith("Check the documentation"):
                break
            kept.append(line.strip())
        reason = " ".join([mark, *[k for k in kept if k]])
        return reason.split(" Please ", 1)[0]  # nor to allowlist what it refused
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
