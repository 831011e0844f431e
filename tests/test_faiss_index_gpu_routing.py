"""Which searches go to the GPU copy of an index, tested with a pretend GPU on any machine:
FAISS's GPU k-selection stops at 2048, so a larger k (and a filtered search) runs on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from latentsearch.indexes import faiss_index
from latentsearch.indexes.faiss_index import GPU_MAX_K, FaissIndex


class PretendGpu:
    def __init__(self, cpu):
        self.cpu, self.ks = cpu, []

    def search(self, xq, k, params=None):
        if k > GPU_MAX_K:
            raise RuntimeError("Error: 'k <= GPU_MAX_SELECTION_K' failed")
        self.ks.append(k)
        return self.cpu.search(xq, k)


@pytest.mark.parametrize("k", [1, GPU_MAX_K, GPU_MAX_K + 1, 5000])
def test_k_beyond_the_gpu_limit_runs_on_the_cpu(monkeypatch, k):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6000, 16)).astype(np.float32)
    index = FaissIndex("Flat", 16, "l2")
    index.add(np.arange(6000, dtype=np.int64), x)
    gpu = PretendGpu(index.index)
    monkeypatch.setattr(faiss_index, "faiss_gpu_count", lambda: 1)
    monkeypatch.setattr(index, "_gpu_index", lambda: gpu)
    D, I = index.search(x[:3], k)
    assert I.shape == (3, k) and (I[:, 0] == np.arange(3)).all()
    assert gpu.ks == ([k] if k <= GPU_MAX_K else [])
