"""Chapter 6, layers.py: Linear against torch.nn.Linear (float64), the PyTorch oracle."""

import numpy as np
import pytest
import torch
from test_ch06_layers import SEEDS

from handgrad.ch06_feedforward import Linear


@pytest.mark.parametrize("seed", SEEDS)
def test_linear_matches_torch(seed):
    rng = np.random.default_rng(seed)
    layer = Linear(5, 4, rng=rng, dtype=np.float64)
    layer.params["b"][...] = rng.standard_normal(4)
    X = rng.standard_normal((6, 5))
    dZ = rng.standard_normal((6, 4))

    tl = torch.nn.Linear(5, 4, dtype=torch.float64)
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(layer.params["W"].T.copy()))
        tl.bias.copy_(torch.from_numpy(layer.params["b"]))
    tX = torch.from_numpy(X).requires_grad_(True)
    tZ = tl(tX)
    tZ.backward(torch.from_numpy(dZ))

    Z = layer.forward(X).copy()
    dX = layer.backward(dZ)
    np.testing.assert_allclose(Z, tZ.detach().numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(dX, tX.grad.numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(layer.grads["W"], tl.weight.grad.numpy().T, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(layer.grads["b"], tl.bias.grad.numpy(), rtol=1e-6, atol=1e-12)
