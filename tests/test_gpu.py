"""GPU placement: searches on a GPU copy agree with the CPU index. Skipped without a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from latentsearch.devices import faiss_gpu_count
from latentsearch.indexes.faiss_index import FaissIndex

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_gpu():
    if faiss_gpu_count() == 0:
        pytest.skip("FAISS sees no GPU")


@pytest.mark.parametrize("spec", ["Flat", "IVF16,Flat"])
def test_gpu_search_matches_cpu(spec):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 64)).astype(np.float32)
    ids = np.arange(5000, dtype=np.int64) * 7 + 3
    index = FaissIndex(spec, 64, "l2", {"nprobe": 16})
    index.add(ids, x)
    q = x[:50] + 0.01
    D_gpu, I_gpu = index.search(q, 10)  # no selector: served by the GPU copy
    assert index._gpu_index() is not None
    params, _ = index._params(None)
    D_cpu, I_cpu = index.index.search(q, 10, params=params) if params else index.index.search(q, 10)
    assert (I_gpu[:, 0] == I_cpu[:, 0]).mean() > 0.98
    np.testing.assert_allclose(D_gpu[:, 0], D_cpu[:, 0], rtol=1e-3, atol=1e-3)


def test_gpu_search_with_a_huge_k_matches_cpu():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    index = FaissIndex("Flat", 32, "l2")
    index.add(np.arange(3000, dtype=np.int64), x)
    D, I = index.search(x[:2], 2500)  # beyond the GPU's k: the CPU copy answers
    assert I.shape == (2, 2500) and (I >= 0).all() and (np.diff(D, axis=1) >= -1e-4).all()
