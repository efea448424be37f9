"""Chapter 9, fused.py: the Conv2D → BatchNorm2D → ReLU → MaxPool2D(2) block against the same torch.nn
layers (float64), with negative and zero γ and exact ties inside the pooling windows, the PyTorch oracle.
"""

import numpy as np
import pytest
import torch
from gradcheck import relative_error
from torch import nn

from handgrad.ch06_feedforward import ReLU
from handgrad.ch08_optimization import BatchNorm2D
from handgrad.ch09_convolution import Conv2D, MaxPool2D
from handgrad.ch09_convolution.fused import ConvBNReLUPool


def torch_block(conv, bn, X, G):
    tconv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
    tconv = tconv.double()
    tbn = nn.BatchNorm2d(conv.out_channels).double()
    with torch.no_grad():
        tconv.weight.copy_(torch.tensor(conv.params["W"]))
        tconv.bias.copy_(torch.tensor(conv.params["b"]))
        tbn.weight.copy_(torch.tensor(bn.params["gamma"]))
        tbn.bias.copy_(torch.tensor(bn.params["beta"]))
    Xt = torch.tensor(X, requires_grad=True)
    Yt = nn.functional.max_pool2d(torch.relu(tbn(tconv(Xt))), 2)
    Yt.backward(torch.tensor(G))
    return (
        Yt.detach().numpy(),
        Xt.grad.numpy(),
        tconv.weight.grad.numpy(),
        tbn.weight.grad.numpy(),
        tbn.bias.grad.numpy(),
        tbn.running_mean.numpy(),
        tbn.running_var.numpy(),
    )


@pytest.mark.parametrize("ties", [False, (7, 6), (8, 6)])  # odd and even (window-major) sizes
@pytest.mark.parametrize("gamma", [[1.0, -1.0, 2.0, -0.5], [0.0, 1.0, 0.0, -1.0]])
def test_block_matches_torch_including_ties_and_negative_gamma(ties, gamma, rng):
    if ties:  # a 1×1 convolution of W = 1 over three values: exact ties in most windows
        conv = Conv2D(1, 4, 1, rng=rng, dtype=np.float64)
        conv.params["W"][...] = 1
        X = rng.integers(0, 3, (3, 1, *ties)).astype(np.float64)
    else:
        conv = Conv2D(2, 4, 3, stride=2, padding=1, rng=rng, dtype=np.float64)
        X = rng.standard_normal((3, 2, 9, 11))
    conv.params["b"][...] = rng.standard_normal(4)
    bn = BatchNorm2D(4, dtype=np.float64)
    bn.params["gamma"][...] = gamma
    bn.params["beta"][...] = [0.5, 0.25, 0.1, 0.3]
    block = ConvBNReLUPool(conv, bn, ReLU(), MaxPool2D(2))
    out = block.forward(X)
    G = rng.standard_normal(out.shape)
    dX = block.backward(G)
    ref = torch_block(conv, bn, X, G)
    mine = (
        out,
        dX,
        conv.grads["W"],
        bn.grads["gamma"],
        bn.grads["beta"],
        bn.state["running_mean"],
        bn.state["running_var"],
    )
    for name, a, b in zip(("out", "dX", "dW", "dgamma", "dbeta", "running_mean", "running_var"), mine, ref):
        if ties and name == "dW":  # zero in exact arithmetic: batch norm undoes a 1×1 one-channel scale
            assert np.abs(a - b).max() < 1e-12
        else:
            assert relative_error(a, b) < 1e-9, name
