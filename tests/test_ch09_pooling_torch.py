"""Chapter 9, pooling.py: max and average pooling against torch.nn.functional's (float64), ties and NaN
included, the PyTorch oracle.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gradcheck import relative_error

from handgrad.ch09_convolution import AvgPool2D, MaxPool2D

POOL_CASES = [
    ((2, 3, 8, 8), 2, None),
    ((3, 2, 7, 9), 3, 2),
    ((2, 2, 6, 7), (2, 3), (1, 2)),
    ((1, 4, 5, 5), 3, 1),
    ((2, 1, 9, 6), (4, 1), (3, 5)),
    ((1, 1, 3, 3), 3, None),
]


def torch_pool(kind, X, G, kernel, stride):
    Xt = torch.tensor(X, requires_grad=True)
    fn = F.max_pool2d if kind == "max" else F.avg_pool2d
    Yt = fn(Xt, kernel, stride if stride is not None else kernel)
    Yt.backward(torch.tensor(G))
    return Yt.detach().numpy(), Xt.grad.numpy()


@pytest.mark.parametrize("shape, kernel, stride", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_matches_torch(kind, shape, kernel, stride, rng):
    layer = MaxPool2D(kernel, stride) if kind == "max" else AvgPool2D(kernel, stride)
    X = rng.standard_normal(shape)
    Y = layer.forward(X).copy()
    G = rng.standard_normal(Y.shape)
    dX = layer.backward(G)
    Yt, dXt = torch_pool(kind, X, G, kernel, stride)
    assert relative_error(Y, Yt) < 1e-14
    assert relative_error(dX, dXt) < 1e-14


@pytest.mark.parametrize("shape, kernel, stride", POOL_CASES)
def test_max_pool_ties_route_to_the_first_maximum_as_torch(shape, kernel, stride, rng):
    X = rng.integers(0, 2, shape).astype(np.float64)  # many ties, in overlapping windows too
    layer = MaxPool2D(kernel, stride)
    Y = layer.forward(X).copy()
    G = rng.standard_normal(Y.shape)
    dX = layer.backward(G)
    Yt, dXt = torch_pool("max", X, G, kernel, stride)
    np.testing.assert_array_equal(Y, Yt)
    assert relative_error(dX, dXt) < 1e-14
    assert np.count_nonzero(dX) <= Y.size  # each window's gradient reaches one pixel


def test_max_pool_nan_is_the_maximum_as_torch(rng):
    X = rng.standard_normal((1, 1, 4, 4))
    X[0, 0, 1, 1] = X[0, 0, 2, 3] = np.nan
    layer = MaxPool2D(2)
    Y = layer.forward(X).copy()
    G = rng.standard_normal(Y.shape)
    dX = layer.backward(G)
    Yt, dXt = torch_pool("max", X, G, 2, None)
    np.testing.assert_array_equal(np.isnan(Y), np.isnan(Yt))
    np.testing.assert_allclose(dX, dXt, rtol=0, atol=1e-15)
