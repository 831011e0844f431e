"""Image encoders from timm: pooled features (``num_classes=0``) with the model's own preprocessing."""

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

if TYPE_CHECKING:
    from PIL.Image import Image

_OPTIONS = ["pretrained", "checkpoint", "seed"]


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
    """``timm:NAME[?pretrained=false|checkpoint=FILE|seed=N]``.

    ``pretrained`` (default true) fetches the published weights by name; ``checkpoint`` loads a
    local file instead; with ``pretrained=false`` the weights are random but seeded, so the same
    spec always gives the same encoder.
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
        reject_unknown_options("timm", options, _OPTIONS)
        if checkpoint and pretrained:
            raise InvalidInputError("timm: give either checkpoint=FILE or pretrained=true, not both")

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
        self.device = torch_device()
        self.model = model.eval().to(self.device)
        # Pooled output width: some models (MobileNetV3) widen it after pooling (head_hidden_size).
        self.dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        config = timm.data.resolve_model_data_config(model)
        self._config_text = repr(sorted(config.items()))
        self.transform = timm.data.create_transform(**config, is_training=False)
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = digest("timm", module_digest(self.model), self._config_text)
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
                chunks.append(self.model(batch).float().cpu().numpy())
        return self._checked(np.concatenate(chunks) if chunks else [], len(images))
