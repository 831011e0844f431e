"""``onnx:FILE`` — an ONNX model as an encoder, run by onnxruntime (shared behaviour and options:
:mod:`.exported`). An ONNX file is a protobuf graph, not a pickle: loading it runs no Python code.

- Inputs and outputs are read from the model: an image model has one float input
  ``(n, 3, H, W)`` (a static ``H = W`` is the default ``size``); a text model's inputs are named
  ``input_ids``, ``attention_mask`` (and ``token_type_ids``). Its first output is the latent
  (μ for a VAE); ``latent=sample`` reads the second as logvar.
- ``dim`` comes from the first output's static shape when it has one, else from a probe.
- ``decoder=FILE``: an ONNX export of the decoder (one input, the latents of the encoder's output
  shape; first output, the images), which makes the encoder a decoder too. Its file is not part
  of the fingerprint: a new decoder changes no stored vector.
- Runs on CUDA (``CUDAExecutionProvider``) when latentsearch's device is a GPU and onnxruntime
  has that provider, else on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..devices import torch_device
from ..errors import InvalidInputError, LatentSearchError
from .exported import ExportedEncoder, file_sha256
from .exported_options import model_file, sidecar_path

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32,
}


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise LatentSearchError(
            "onnx: encoders need onnxruntime, which is not installed: pip install 'latentsearch[onnx]'"
        ) from None
    return onnxruntime


def _session(path: Any, what: str) -> Any:
    ort = _onnxruntime()
    providers = ["CPUExecutionProvider"]
    if torch_device().startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(f"cannot load {path} as an ONNX model ({what}): {first}") from exc


def _static(shape: Any) -> tuple[int, ...] | None:
    """The dimensions after the batch axis when they are all fixed numbers."""
    rest = list(shape or [])[1:]
    if not rest or not all(isinstance(d, int) and d > 0 for d in rest):
        return None
    return tuple(rest)


class OnnxEncoder(ExportedEncoder):
    """``onnx:FILE[?size=N&mean=…&std=…&pool=…&tokenizer=DIR&max_length=N&latent=mean|sample&decoder=FILE]``."""

    kind = "onnx"
    extra_options = ["decoder"]

    def __init__(self, name: str = "", options: dict[str, str] | None = None) -> None:
        _onnxruntime()
        path = model_file(self.kind, name)
        opts = self._parse(options, sidecar_path(path))
        self.sha256 = file_sha256(path)
        self.session = _session(path, "the encoder")
        self._inputs = list(self.session.get_inputs())
        self._outputs = [o.name for o in self.session.get_outputs()]
        if self.is_text:
            unknown = [i.name for i in self._inputs if i.name not in TEXT_INPUTS]
            if unknown or "input_ids" not in [i.name for i in self._inputs]:
                raise InvalidInputError(
                    f"onnx: the text model {path} takes inputs {[i.name for i in self._inputs]}; "
                    f"a text model's are named {', '.join(TEXT_INPUTS)} (input_ids at least)"
                )
        else:
            self._image_input(path)
        if opts.latent == "sample" and len(self._outputs) < 2:
            raise InvalidInputError(
                f"onnx: latent=sample needs a model whose outputs are (mu, logvar); {path} has one output"
            )
        decoder = opts.paths.get("decoder")
        self.decoder = _session(decoder, "the decoder") if decoder else None
        if self.decoder is not None and len(self.decoder.get_inputs()) != 1:
            raise InvalidInputError(f"onnx: the decoder {decoder} must take one input, the latents")
        shape = _static(self.session.get_outputs()[0].shape)
        if shape is not None and len(shape) == 2 and self.is_text and opts.pool == "flatten":
            shape = None  # the token count follows max_length: probe it
        self._finish(str(path), f"sha256:{self.sha256}", shape)

    def _image_input(self, path: Any) -> None:
        if len(self._inputs) != 1:
            raise InvalidInputError(
                f"onnx: {path} takes {len(self._inputs)} inputs ({', '.join(i.name for i in self._inputs)}); an image "
                "model takes one, the pixels (give tokenizer=DIR for a text model)"
            )
        shape = list(self._inputs[0].shape or [])
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise InvalidInputError(f"onnx: {path} takes input of shape {shape}; an image model takes (n, 3, H, W)")
        h, w = shape[2], shape[3]
        if isinstance(h, int) and isinstance(w, int):
            if h != w:
                raise InvalidInputError(f"onnx: {path} takes {h} × {w} images; only square inputs (size=N) are supported")
            if self.opts.size is None:
                self.opts.size = h
            elif self.opts.size != h:
                raise InvalidInputError(f"onnx: size={self.opts.size} but {path} takes {h} × {w} images")

    def _run_encoder(self, inputs: dict[str, np.ndarray]) -> Any:
        if self.is_text:
            feed = {}
            for i in self._inputs:
                if i.name not in inputs:
                    raise InvalidInputError(f"the tokenizer of {self.spec!r} gives no {i.name}, which the model takes")
                feed[i.name] = inputs[i.name].astype(_DTYPES.get(i.type, np.int64), copy=False)
        else:
            first = self._inputs[0]
            feed = {first.name: inputs["pixels"].astype(_DTYPES.get(first.type, np.float32), copy=False)}
        names = self._outputs[:2] if self.opts.latent == "sample" else self._outputs[:1]
        out = self.session.run(names, feed)
        return tuple(out) if len(out) > 1 else out[0]

    def _has_decoder(self) -> bool:
        return self.decoder is not None

    def _no_decoder_hint(self) -> str:
        return "give decoder=FILE, an ONNX export of the model's decoder"

    def _run_decoder(self, latents: np.ndarray) -> Any:
        first = self.decoder.get_inputs()[0]  # type: ignore[union-attr]
        out = self.decoder.run(None, {first.name: latents.astype(_DTYPES.get(first.type, np.float32), copy=False)})  # type: ignore[union-attr]
        return out[0]
