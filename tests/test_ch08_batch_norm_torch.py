"""Chapter 8, batch_norm.py: BatchNorm1D/2D against torch.nn.BatchNorm1d/2d in training and eval mode, the
PyTorch oracle.
"""

import numpy as np
import pytest
import torch
from gradcheck import relative_error

from handgrad.ch08_optimization import BatchNorm1D, BatchNorm2D


def bn_pair(cls, tcls, C, rng, **kwargs):
    ours = cls(C, dtype=np.float64, **kwargs)
    theirs = tcls(C, **kwargs).double()
    gamma, beta = rng.uniform(0.5, 2.0, C), rng.standard_normal(C)
    ours.params["gamma"][...] = gamma
    ours.params["beta"][...] = beta
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(gamma))
        theirs.bias.copy_(torch.tensor(beta))
    return ours, theirs


BN_CASES = [
    (BatchNorm1D, torch.nn.BatchNorm1d, (8, 5), {}),
    (BatchNorm1D, torch.nn.BatchNorm1d, (2, 1), dict(momentum=0.3, eps=1e-3)),
    (BatchNorm1D, torch.nn.BatchNorm1d, (3, 7), dict(momentum=1.0)),
    (BatchNorm2D, torch.nn.BatchNorm2d, (4, 3, 5, 6), {}),
    (BatchNorm2D, torch.nn.BatchNorm2d, (1, 2, 3, 1), dict(momentum=0.05)),
    (BatchNorm2D, torch.nn.BatchNorm2d, (2, 1, 1, 2), dict(eps=1e-2)),
]


@pytest.mark.parametrize("cls, tcls, shape, kwargs", BN_CASES)
def test_batch_norm_matches_torch_in_training_then_eval(cls, tcls, shape, kwargs, rng):
    ours, theirs = bn_pair(cls, tcls, shape[1], rng, **kwargs)
    for _ in range(5):
        X = rng.standard_normal(shape) * rng.uniform(0.5, 3.0) + rng.standard_normal()
        G = rng.standard_normal(shape)
        Y = ours.forward(X).copy()
        dX = ours.backward(G).copy()
        Xt = torch.tensor(X, requires_grad=True)
        theirs.zero_grad()
        Yt = theirs(Xt)
        Yt.backward(torch.tensor(G))
        assert relative_error(Y, Yt.detach().numpy()) < 1e-12
        assert relative_error(dX, Xt.grad.numpy()) < 1e-10
        assert relative_error(ours.grads["gamma"], theirs.weight.grad.numpy()) < 1e-12
        assert relative_error(ours.grads["beta"], theirs.bias.grad.numpy()) < 1e-12
    assert relative_error(ours.state["running_mean"], theirs.running_mean.numpy()) < 1e-12
    assert relative_error(ours.state["running_var"], theirs.running_var.numpy()) < 1e-12
    ours.eval()
    theirs.eval()
    X = rng.standard_normal((3, *shape[1:]))
    G = rng.standard_normal(X.shape)
    Xt = torch.tensor(X, requires_grad=True)
    Yt = theirs(Xt)
    Yt.backward(torch.tensor(G))
    assert relative_error(ours.forward(X), Yt.detach().numpy()) < 1e-12
    assert relative_error(ours.backward(G), Xt.grad.numpy()) < 1e-12
