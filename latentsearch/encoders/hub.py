"""Models named by hub id: taken from the local cache first, downloaded only when the hub can be
reached, and refused at once, with one clear message, when neither works.

Without this, ``huggingface_hub`` retries each file with backoff when the network is down (about
a minute for one sentence-transformers model) before failing with a message about connections.

The hub counts as unreachable when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, or
when a TCP connection to the host of ``huggingface_hub``'s endpoint (``HF_ENDPOINT``; through the
HTTPS proxy when one is configured) does not open within :data:`CONNECT_TIMEOUT_S` seconds, name
lookup included.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ModelUnavailableError

CONNECT_TIMEOUT_S = 2.0
_TRUE = {"1", "ON", "YES", "TRUE"}
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # what timm looks for, safetensors first


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def offline_reason() -> str | None:
    """Why the hub cannot be reached now, or ``None`` when it can (see the module docstring)."""
    from huggingface_hub import constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in _TRUE:
            return f"{name} is set"
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = hub_endpoint()
    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port, via = proxied.hostname or "", proxied.port or 80, f" through the proxy {proxied.hostname}"
    else:
        via = ""
    if _connects(host, port, CONNECT_TIMEOUT_S):
        return None
    return f"no connection to {endpoint}{via} within {CONNECT_TIMEOUT_S:g} s"


def _connects(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection opens within ``timeout`` seconds, name lookup included (a thread,
    since ``getaddrinfo`` takes no timeout)."""
    opened: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                opened.append(True)
        except (OSError, UnicodeError):
            opened.append(False)

    thread = threading.Thread(target=attempt, name="latentsearch-hub-check", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened and opened[0])


def hub_cache_dir(cache_dir: str | None = None) -> str:
    from huggingface_hub import constants

    return str(cache_dir or constants.HF_HUB_CACHE)


def cached_hub_file(repo_id: str, filenames: tuple[str, ...], cache_dir: str | None = None) -> str | None:
    """The local path of the first of ``filenames`` that the cache holds for ``repo_id``."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    repo_id, _, revision = repo_id.partition("@")
    for filename in filenames:
        try:
            found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision or None)
        except (HFValidationError, ValueError):
            return None  # not a valid repo id, so nothing of it is cached
        if isinstance(found, str):
            return found
    return None


def unavailable(subject: str, reason: str, cache_dir: str | None, instead: str) -> ModelUnavailableError:
    """The error for a model that is neither cached nor downloadable now; ``subject`` ends with
    its verb ("the model 'x' is")."""
    return ModelUnavailableError(
        f"{subject} not in the local cache ({hub_cache_dir(cache_dir)}) and the Hugging Face Hub cannot be "
        f"reached ({reason}); {instead}, or run once with network access to download it"
    )


# -- sentence-transformers -----------------------------------------------------------------------


def looks_like_a_path(name: str) -> bool:
    """Whether a model name that does not exist is a path rather than a hub id (as
    sentence-transformers decides: a hub id has at most one ``/``)."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1 or Path(name).is_absolute()


def sentence_transformers_repo_ids(name: str) -> tuple[str, ...]:
    """The hub ids sentence-transformers may load ``name`` as (a bare name is tried under the
    ``sentence-transformers/`` organisation)."""
    return (name,) if "/" in name else (f"sentence-transformers/{name}", name)


def load_from_hub(name: str, load: Any, what: str, instead: str) -> Any:
    """``load(local_files_only=...)`` for the hub id ``name``: from the cache alone first; when
    that fails, downloading only if the hub can be reached, else :class:`ModelUnavailableError`
    at once. An error of the download itself propagates to the caller."""
    try:
        return load(local_files_only=True)
    except Exception as cached_error:  # not cached, or partly: a download may complete it
        reason = offline_reason()
        if reason is None:
            return load(local_files_only=False)
        cache_dir = os.environ.get("SENTENCE_TRANSFORMERS_HOME")
        repos = sentence_transformers_repo_ids(name)
        if not any(cached_hub_file(r, ("config.json", "modules.json"), cache_dir) for r in repos):
            raise unavailable(f"the {what} {name!r} is", reason, cache_dir, instead) from None
        raise ModelUnavailableError(
            f"the {what} {name!r} is in the local cache ({hub_cache_dir(cache_dir)}) but cannot be loaded from it "
            f"({type(cached_error).__name__}: {cached_error}), and the Hugging Face Hub cannot be reached to "
            f"complete it ({reason}); {instead}"
        ) from cached_error


# -- timm ----------------------------------------------------------------------------------------


def timm_pretrained_source(name: str) -> tuple[str, dict[str, Any] | None]:
    """``(model name, pretrained_cfg_overlay)`` for ``timm.create_model(..., pretrained=True)``:
    the cached weight file when the cache has it (no hub call), the name as given when the hub can
    be reached (timm downloads), else :class:`ModelUnavailableError` at once."""
    import timm.models

    instead = "use checkpoint=FILE (a local weights file) or pretrained=false"
    if name.startswith(("hf-hub:", "hf_hub:")):
        repo = name.split(":", 1)[1]
        config = cached_hub_file(repo, ("config.json",))
        if config and any((Path(config).parent / w).exists() for w in HF_WEIGHTS):
            return f"local-dir:{Path(config).parent}", None
        reason = offline_reason()
        if reason is None:
            return name, None
        raise unavailable(f"the timm model {name!r} is", reason, None, instead)
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        cfg = None
    if cfg is None or cfg.file or cfg.state_dict or cfg.source:
        return name, None  # an unknown name (timm says so), or weights that are not downloaded
    cached = _timm_cached_weights(cfg)
    if cached:
        return name, {"file": cached}
    reason = offline_reason()
    if reason is None:
        return name, None
    raise unavailable(f"the pretrained weights of the timm model {name!r} are", reason, None, instead)


def _timm_cached_weights(cfg: Any) -> str | None:
    if cfg.hf_hub_id:
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_WEIGHTS
        found = cached_hub_file(cfg.hf_hub_id, files)
        if found:
            return found
    if cfg.url:
        import torch.hub

        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlsplit(cfg.url).path).name
        if path.is_file():
            return str(path)
    return None
