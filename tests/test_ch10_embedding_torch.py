"""Embedding against torch.nn.Embedding (float64), with repeated indices."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from handgrad.ch10_sequence import Embedding  # noqa: E402


def test_embedding_matches_torch():
    rng = np.random.default_rng(0)
    emb = Embedding(11, 4, rng=0, dtype=np.float64)
    module = torch.nn.Embedding(11, 4).double()
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(emb.params["W"]))
    idx = rng.integers(0, 11, (8, 6))
    idx[0, :3] = 7  # repeated for sure
    dY = rng.standard_normal((8, 6, 4))
    Y = emb.forward(idx)
    emb.backward(dY)
    Yt = module(torch.from_numpy(idx))
    (Yt * torch.from_numpy(dY)).sum().backward()
    np.testing.assert_allclose(Y, Yt.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(emb.grads["W"], module.weight.grad.numpy(), rtol=0, atol=1e-12)
