"""Image encoders from timm: pooled features (``num_classes=0``) with the model's own preprocessing,
or the feature maps of one stage (``layer=``) pooled into a vector (``pool=``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..devices import torch_device
from ..errors import InvalidInputError, LatentSearchError
from ..registry import pop_bool, pop_int, reject_unknown_options
from .base import BaseEncoder, digest, module_digest
from .hub import timm_pretrained_source
from .onnx_export import cached_export, check_backend, export_image_model, onnx_session
from .pooling import check_pooling, pool, pooled_dim

if TYPE_CHECKING:
    from PIL.Image import Image

_OPTIONS = ["pretrained", "checkpoint", "seed", "layer", "pool", "backend"]
ONNX_VARIANT = "timm-onnx-v1"  # the cache entry of an image model's export (bumped when the export changes)


def load_checkpoint_weights(model: Any, path: Path) -> None:
    """Load a local checkpoint (safetensors, or a torch file with ``weights_only=True``).

    Only the classifier head, which the pooled model does not have, may be left over; a weight
    the model needs that the file lacks, a weight of another shape, or any other extra weight
    means the file is for another architecture, and is an error rather than silent garbage.
    """
    from timm.models import load_state_dict

    if not path.is_file():
        raise InvalidInputError(f"timm checkpoint {path} does not exist")
    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as exc:
        raise InvalidInputError(f"cannot read the timm checkpoint {path}: {exc}") from exc
    wanted = model.state_dict()
    head = model.pretrained_cfg.get("classifier") or "fc"
    heads = head if isinstance(head, (list, tuple)) else [head]
    missing = [k for k in wanted if k not in state]
    extra = [k for k in state if k not in wanted and not any(k.startswith(h + ".") for h in heads)]
    reshaped = [k for k in wanted if k in state and tuple(state[k].shape) != tuple(wanted[k].shape)]
    problem = (
        f"lacks {len(missing)} weights of this model (first: {missing[0]!r})" if missing
        else f"has {len(extra)} weights this model does not (first: {extra[0]!r})" if extra
        else f"has {reshaped[0]!r} of shape {tuple(state[reshaped[0]].shape)}, the model "
        f"wants {tuple(wanted[reshaped[0]].shape)}" if reshaped
        else ""
    )
    if problem:
        raise InvalidInputError(f"the checkpoint {path} {problem}; is it for another architecture?")
    model.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=True)


class TimmImageEncoder(BaseEncoder):
    """``timm:NAME[?pretrained=false|checkpoint=FILE|seed=N|layer=STAGE|pool=mean|max|flatten]``.

    ``pretrained`` (default true) fetches the published weights by name; ``checkpoint`` loads a
    local file instead; with ``pretrained=false`` the weights are random but seeded, so the same
    spec always gives the same encoder.

    ``layer`` picks one feature stage of the model (a module name of its ``feature_info``, such as
    ``layer1`` .. ``layer4`` of a ResNet, or an index into them, negative from the end): its
    feature maps, from timm's ``features_only`` extractor with the same weights, become one vector
    by ``pool`` (``mean`` by default; ``max``; ``flatten`` keeps every value, ``c·h·w`` at the
    model's input size). Without ``layer`` the model's own pooled features are the vector.

    ``backend=onnx`` runs the pooled model in ONNX Runtime on the CPU (exported once, cached like
    the text models' exports; about 2× torch's images/s for a ResNet on a CPU); the preprocessing
    stays timm's. The backend and the export's hash are part of the fingerprint.
    """

    modalities = frozenset({"image"})

    def __init__(self, name: str = "", options: dict[str, str] | None = None) -> None:
        import timm
        import torch

        if not name:
            raise InvalidInputError("timm needs a model name, e.g. timm:resnet50")
        options = dict(options or {})
        checkpoint = options.pop("checkpoint", None)
        pretrained = pop_bool(options, "pretrained", checkpoint is None)
        seed = pop_int(options, "seed", 0)
        layer = options.pop("layer", None)
        pooling = options.pop("pool", None)
        backend = options.pop("backend", None)
        reject_unknown_options("timm", options, _OPTIONS)
        self.backend = check_backend(backend, "timm")
        if self.backend == "onnx-int8" or (self.backend != "torch" and layer is not None):
            raise InvalidInputError(
                f"timm: backend={self.backend} is for the pooled model in float (backend=onnx); "
                "int8 convolutions are slower than float ones on CPUs, and layer= reads the torch model"
            )
        if checkpoint and pretrained:
            raise InvalidInputError("timm: give either checkpoint=FILE or pretrained=true, not both")
        if pooling is not None and layer is None:
            raise InvalidInputError(
                "timm: pool= says how a layer's feature maps become one vector; add layer=NAME "
                "(without layer= the model's own pooled features are used)"
            )
        if layer is not None:
            pooling = check_pooling(pooling, "timm")

        parts = [f"pretrained={str(pretrained).lower()}"]
        if checkpoint:
            checkpoint = str(Path(checkpoint).expanduser().resolve())
            parts = [f"checkpoint={checkpoint}"]
        if not pretrained and not checkpoint:
            parts.append(f"seed={seed}")
        self.spec = f"timm:{name}?" + "&".join(parts)

        # Published weights come from the local cache when it has them; without it and without
        # network this fails at once (ModelUnavailableError) instead of retrying for a minute.
        source, overlay = timm_pretrained_source(name) if pretrained else (name, None)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = timm.create_model(source, pretrained=pretrained, num_classes=0, pretrained_cfg_overlay=overlay)
        except RuntimeError as exc:
            if "Unknown model" in str(exc):
                raise InvalidInputError(
                    f"timm has no model {name!r}; `timm.list_models('*pattern*')` lists them"
                ) from exc
            raise LatentSearchError(f"cannot create the timm model {name!r}: {exc}") from exc
        except Exception as exc:
            raise LatentSearchError(
                f"cannot create the timm model {name!r} ({type(exc).__name__}: {exc}); "
                "without network use pretrained=false or checkpoint=FILE"
            ) from exc
        if checkpoint:
            load_checkpoint_weights(model, Path(checkpoint))
        config = timm.data.resolve_model_data_config(model)
        self._config_text = repr(sorted(config.items()))
        self.transform = timm.data.create_transform(**config, is_training=False)
        self.layer: str | None = None
        self.pooling: str | None = None
        self._channels_last = False
        if layer is None:
            # Pooled output width: some models (MobileNetV3) widen it after pooling (head_hidden_size).
            self.dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        else:
            index, self.layer = pick_layer(model, name, layer)
            model = feature_extractor(model, source, index, name)
            self.pooling = str(pooling)
            self.spec += f"&layer={self.layer}&pool={self.pooling}"
            fmt = getattr(model, "output_fmt", None)  # a timm Format (a str enum), a str, or None
            self._channels_last = str(getattr(fmt, "value", fmt)) == "NHWC"
            self.dim = layer_dim(model, self.pooling, tuple(config["input_size"]), self._channels_last, self.spec)
        self._fingerprint: str | None = None
        self.session: Any = None
        if self.backend == "onnx":
            self.spec += "&backend=onnx"
            self.device = torch.device("cpu")
            weights = module_digest(model)
            input_size = tuple(config["input_size"])
            path, self.onnx = cached_export(
                digest("timm", weights, self._config_text), ONNX_VARIANT,
                lambda folder: export_image_model(model, folder, input_size),
            )
            self.session = onnx_session(path)
            # ONNX Runtime's vectors differ from torch's in the last bits, and per export.
            self._fingerprint = digest("timm", weights, self._config_text, "backend=onnx", self.onnx["sha256"])
            self.model = None  # the session holds the weights
            return
        self.device = torch_device()
        self.model = model.eval().to(self.device)

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            parts = ["timm", module_digest(self.model), self._config_text]
            if self.layer is not None:  # a collection of one layer's latents is never queried with another's
                parts += [f"layer={self.layer}", f"pool={self.pooling}"]
            self._fingerprint = digest(*parts)
        return self._fingerprint

    def preprocess_image(self, image: Image) -> Any:
        """The model's input tensor for one image; the pipeline calls this in its reader threads,
        so the transform overlaps the forward pass. ``encode_image`` accepts its output."""
        return self.transform(image.convert("RGB"))

    def encode_image(self, images: Sequence[Any], batch_size: int = 32) -> np.ndarray:
        """Vectors for PIL images, or for tensors from :meth:`preprocess_image`."""
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = torch.stack(
                    [im if isinstance(im, torch.Tensor) else self.preprocess_image(im)
                     for im in images[start : start + batch_size]]
                ).to(self.device)
                if self.session is not None:
                    chunks.append(self.session.run(["features"], {"pixels": batch.float().numpy()})[0])
                elif self.layer is None:
                    chunks.append(self.model(batch).float().cpu().numpy())
                else:
                    maps = self.model(batch)[0]
                    if self._channels_last:
                        maps = maps.permute(0, 3, 1, 2)
                    chunks.append(pool(maps, str(self.pooling), tokens=False, what=self.spec))
        return self._checked(np.concatenate(chunks) if chunks else [], len(images))


# -- one feature stage ---------------------------------------------------------------------------


def feature_stages(model: Any) -> list[dict[str, Any]]:
    """The model's feature stages (``feature_info``: ``module``, ``num_chs``, ``reduction``)."""
    info = getattr(model, "feature_info", None)
    info = getattr(info, "info", info)  # a features_only model holds a FeatureInfo
    return [dict(stage) for stage in info or []]


def pick_layer(model: Any, name: str, value: str) -> tuple[int, str]:
    """``(index, module name)`` of the stage ``value`` names (a module name, or an index into the
    stages, negative from the end); an error listing the stages when it names none."""
    stages = feature_stages(model)
    if not stages:
        raise InvalidInputError(f"timm:{name} does not describe its feature stages (feature_info); layer= is not available for it")
    names = [str(stage.get("module", i)) for i, stage in enumerate(stages)]
    text = value.strip()
    if text in names:
        return names.index(text), text
    try:
        index = int(text)
    except ValueError:
        index = None
    if index is not None and -len(names) <= index < len(names):
        index %= len(names)
        return index, names[index]
    raise InvalidInputError(
        f"timm:{name} has no layer {value!r}; its feature stages are {', '.join(names)} "
        f"(or their index, 0 to {len(names) - 1}, negative from the end)"
    )


def feature_extractor(model: Any, source: str, index: int, name: str) -> Any:
    """timm's ``features_only`` model of stage ``index`` of ``model``, with ``model``'s weights
    (so ``pretrained``, ``checkpoint`` and ``seed`` mean what they mean without ``layer``)."""
    import timm
    import torch

    try:
        with torch.random.fork_rng(devices=[]):  # its own initial weights are replaced below
            features = timm.create_model(source, pretrained=False, num_classes=0, features_only=True, out_indices=[index])
    except Exception as exc:
        raise LatentSearchError(f"timm cannot extract the feature stages of {name!r} ({type(exc).__name__}: {exc})") from exc
    features.load_state_dict(_matched_weights(model.state_dict(), features.state_dict(), name), strict=True)
    return features


def _matched_weights(have: dict[str, Any], wanted: dict[str, Any], name: str) -> dict[str, Any]:
    """``wanted``'s keys with ``have``'s tensors. A features_only extractor keeps the model's
    modules under their names, behind ``model.`` (the ``getter`` kind) or with a sequential's
    dots turned into ``_`` (``flatten_sequential``); a weight found under no such name, or under
    another shape, is an error rather than a random one left in place."""
    loose: dict[str, list[str]] = {}
    for key in have:
        loose.setdefault(key.replace("_", "."), []).append(key)
    out = {}
    for key, tensor in wanted.items():
        candidates = [key, key.removeprefix("model.")]
        found = next((c for c in candidates if c in have), None)
        if found is None:
            hits = [loose[c.replace("_", ".")] for c in candidates if len(loose.get(c.replace("_", "."), [])) == 1]
            found = hits[0][0] if hits else None
        if found is None or tuple(have[found].shape) != tuple(tensor.shape):
            raise LatentSearchError(
                f"the {name} feature extractor's weight {key!r} has no counterpart in the model; "
                "layer= is not available for this architecture"
            )
        out[key] = have[found]
    return out


def layer_dim(features: Any, pooling: str, input_size: tuple[int, ...], channels_last: bool, what: str) -> int:
    """The vector size of one stage's maps under ``pooling``, without encoding anything: the
    stage's channels, or for ``flatten`` ``c·h·w`` at the model's input size (the map's shape
    from a forward pass on shapes alone, the meta device; from the stage's reduction when that
    fails)."""
    channels = int(features.feature_info.channels()[0])
    if pooling == "cls":
        raise InvalidInputError(
            f"{what}: the layer gives feature maps of {channels} channels, and pool=cls is for token "
            "states (t, d); use pool=mean, max or flatten"
        )
    if pooling != "flatten":
        return channels
    import torch
    from torch.func import functional_call

    try:
        state = {k: torch.empty_like(v, device="meta") for k, v in [*features.named_parameters(), *features.named_buffers()]}
        with torch.no_grad():
            out = functional_call(features.eval(), state, (torch.empty((1, *input_size), device="meta"),))[0]
        shape = tuple(out.shape[1:])
        if channels_last:
            shape = (shape[-1], *shape[:-1])
    except Exception:
        reduction = int(features.feature_info.reduction()[0])
        shape = (channels, *(-(-int(s) // reduction) for s in input_size[1:]))
    return pooled_dim(shape, pooling, what)
