"""Pooling a model's output into one vector per input: every pooling on latents, token states
(with and without an attention mask) and feature maps, and the dimension known from the shape."""

from __future__ import annotations

import numpy as np
import pytest

from latentsearch.encoders.pooling import check_pooling, pool, pooled_dim
from latentsearch.errors import InvalidInputError

rng = np.random.default_rng(0)


def test_latents_pass_through():
    z = rng.standard_normal((4, 8)).astype(np.float32)
    for how in ("mean", "max", "flatten", "cls"):
        assert np.array_equal(pool(z, how), z)
    assert pooled_dim((8,), "mean") == 8


def test_token_states_with_a_mask():
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    mean = pool(x, "mean", mask)
    assert np.allclose(mean[0], x[0, :3].mean(0), atol=1e-6) and np.allclose(mean[1], x[1].mean(0), atol=1e-6)
    mx = pool(x, "max", mask)
    assert np.allclose(mx[0], x[0, :3].max(0)) and np.allclose(mx[1], x[1].max(0))
    assert np.array_equal(pool(x, "cls"), x[:, 0])
    assert pool(x, "flatten").shape == (2, 15)
    assert pooled_dim((5, 3), "mean") == 3 and pooled_dim((5, 3), "flatten") == 15 and pooled_dim((5, 3), "cls") == 3


def test_feature_maps():
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    assert np.allclose(pool(x, "mean"), x.mean(axis=(2, 3)), atol=1e-6)
    assert np.allclose(pool(x, "max"), x.max(axis=(2, 3)))
    assert np.array_equal(pool(x, "flatten"), x.reshape(3, -1))
    assert pooled_dim((4, 5, 6), "mean") == 4 and pooled_dim((4, 5, 6), "flatten") == 120
    with pytest.raises(InvalidInputError, match="cls is for token states"):
        pool(x, "cls")
    with pytest.raises(InvalidInputError, match="cls is for token states"):
        pooled_dim((4, 5, 6), "cls")
    one_d = rng.standard_normal((2, 4, 7)).astype(np.float32)
    assert np.allclose(pool(one_d, "mean", tokens=False), one_d.mean(axis=2), atol=1e-6)


def test_torch_tensors_and_bad_names():
    torch = pytest.importorskip("torch")
    t = torch.ones((2, 3, 4, 4))
    assert pool(t, "mean").dtype == np.float32 and pool(t, "mean").shape == (2, 3)
    assert check_pooling(None, "x") == "mean" and check_pooling(" MAX ", "x") == "max"
    with pytest.raises(InvalidInputError, match="pool='avg' is not one of mean, max, flatten, cls"):
        check_pooling("avg", "timm")
    with pytest.raises(InvalidInputError, match="one row per input"):
        pool(np.ones(3), "mean")
