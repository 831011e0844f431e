"""The one place that asks whether there is a GPU."""

from __future__ import annotations

import functools
import os


@functools.cache
def torch_device() -> str:
    """``cuda`` when torch sees a GPU, ``cpu`` otherwise; ``LATENTSEARCH_DEVICE`` overrides."""
    forced = os.environ.get("LATENTSEARCH_DEVICE")
    if forced:
        return forced
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def faiss_gpu_count() -> int:
    """How many GPUs FAISS can use (0 with faiss-cpu, or when ``LATENTSEARCH_DEVICE=cpu``)."""
    if os.environ.get("LATENTSEARCH_DEVICE") == "cpu":
        return 0
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get else 0
