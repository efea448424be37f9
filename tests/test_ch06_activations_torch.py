"""Chapter 6, activations.py: the activations against torch.nn's (float64), the PyTorch oracle."""

import numpy as np
import pytest
import torch
from test_ch06_activations import ACTIVATIONS, SEEDS, away_from_zero, make_activation


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("seed", SEEDS)
def test_activations_match_torch(name, seed):
    rng = np.random.default_rng(seed)
    X = away_from_zero(rng, (5, 7)) * 3
    dY = rng.standard_normal((5, 7))
    torch_fn = {
        "relu": torch.nn.ReLU(),
        "leaky": torch.nn.LeakyReLU(negative_slope=0.1),
        "sigmoid": torch.nn.Sigmoid(),
        "tanh": torch.nn.Tanh(),
    }[name]
    tX = torch.from_numpy(X).requires_grad_(True)
    tY = torch_fn(tX)
    tY.backward(torch.from_numpy(dY))
    layer = make_activation(name)
    Y = layer.forward(X).copy()
    dX = layer.backward(dY)
    np.testing.assert_allclose(Y, tY.detach().numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(dX, tX.grad.numpy(), rtol=1e-6, atol=1e-12)
