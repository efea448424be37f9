"""Chapter 9, convolution.py: Conv2D and Flatten against torch.nn.functional.conv2d and torch.nn.Flatten
(float64: outputs, input gradients, parameter gradients), the PyTorch oracle.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gradcheck import relative_error
from test_ch09_convolution import CONV_CASES, make_conv

from handgrad.ch09_convolution import Flatten

LARGER_CASES = [(4, 3, 5, 13, 11, 3, 2, 1), (2, 4, 6, 12, 12, (3, 5), (1, 2), (2, 1))]


@pytest.mark.parametrize("case", CONV_CASES + LARGER_CASES)
def test_conv_matches_torch(case, rng):
    layer, X = make_conv(case, rng)
    Y = layer.forward(X)
    G = rng.standard_normal(Y.shape)
    dX = layer.backward(G).copy()
    Xt = torch.tensor(X, requires_grad=True)
    Wt = torch.tensor(layer.params["W"], requires_grad=True)
    bt = torch.tensor(layer.params["b"], requires_grad=True)
    Yt = F.conv2d(Xt, Wt, bt, stride=layer.stride, padding=layer.padding)
    Yt.backward(torch.tensor(G))
    assert Y.shape == tuple(Yt.shape)
    assert relative_error(Y, Yt.detach().numpy()) < 1e-12
    assert relative_error(dX, Xt.grad.numpy()) < 1e-12
    assert relative_error(layer.grads["W"], Wt.grad.numpy()) < 1e-12
    assert relative_error(layer.grads["b"], bt.grad.numpy()) < 1e-12


def test_flatten_matches_torch(rng):
    X = rng.standard_normal((3, 2, 4, 5))
    np.testing.assert_array_equal(Flatten().forward(X), torch.nn.Flatten()(torch.tensor(X)).numpy())
