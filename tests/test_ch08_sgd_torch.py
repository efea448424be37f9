"""Chapter 8, sgd.py: SGD and momentum trajectories against torch.optim.SGD, the PyTorch oracle."""

import numpy as np
import pytest
import torch
from test_ch08_sgd import handgrad_trajectory, quadratic_problem

from handgrad.ch08_optimization import SGD, Momentum, cosine_schedule

# --------------------------------------------------------------------------------------------------
# PyTorch oracle: trajectories on a quadratic loss L(θ) = ½ Σ_k ‖A_k θ_k − c_k‖²
# --------------------------------------------------------------------------------------------------


def torch_trajectory(A, c, theta0, steps, lr, momentum=0.0, nesterov=False, lrs=None, weight_decay=0.0):
    """torch.optim.SGD's iterates; ``weight_decay`` applies to the weight only (the bias's group has none)."""
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in theta0.items()}
    groups = [{"params": [tp["W"]], "weight_decay": weight_decay}, {"params": [tp["b"]], "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, dampening=0, nesterov=nesterov)
    out = []
    for t in range(steps):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[t]
        opt.zero_grad()
        loss = sum(
            0.5 * torch.sum((torch.tensor(A[k]) @ tp[k].reshape(-1) - torch.tensor(c[k])) ** 2) for k in tp
        )
        loss.backward()
        opt.step()
        out.append({k: v.detach().numpy().copy() for k, v in tp.items()})
    return out


OPTIMISERS = [
    ("sgd", lambda: SGD(lr=0.05), {"lr": 0.05}),
    ("momentum", lambda: Momentum(lr=0.05, beta=0.9), {"lr": 0.05, "momentum": 0.9}),
    (
        "nesterov",
        lambda: Momentum(lr=0.05, beta=0.8, nesterov=True),
        {"lr": 0.05, "momentum": 0.8, "nesterov": True},
    ),
]


@pytest.mark.parametrize("name,make,torch_kwargs", OPTIMISERS, ids=[o[0] for o in OPTIMISERS])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trajectories_match_torch_sgd(name, make, torch_kwargs, seed):
    A, c, theta0 = quadratic_problem(seed)
    ours = handgrad_trajectory(A, c, theta0, 8, make())
    theirs = torch_trajectory(A, c, theta0, 8, **torch_kwargs)
    for step_ours, step_theirs in zip(ours, theirs):
        for k in theta0:
            np.testing.assert_allclose(step_ours[k], step_theirs[k], rtol=1e-6, atol=1e-12)
    assert not np.allclose(ours[-1]["W"], theta0["W"])  # it moved


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_with_a_changing_lr_matches_torch(nesterov):
    A, c, theta0 = quadratic_problem(3)
    lrs = [cosine_schedule(t, 10, 0.1, lr_min=0.01, warmup_steps=2) for t in range(10)]  # lrs[0] == 0
    ours = handgrad_trajectory(A, c, theta0, 10, Momentum(lr=0.1, beta=0.9, nesterov=nesterov), lrs=lrs)
    theirs = torch_trajectory(A, c, theta0, 10, lr=0.1, momentum=0.9, nesterov=nesterov, lrs=lrs)
    for k in theta0:
        np.testing.assert_allclose(ours[-1][k], theirs[-1][k], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.8, True)])
@pytest.mark.parametrize("seed", [0, 1])
def test_weight_decay_trajectories_match_torch_on_weights_only(momentum, nesterov, seed):
    A, c, theta0 = quadratic_problem(seed)
    opt = (
        Momentum(0.05, beta=momentum, nesterov=nesterov, weight_decay=0.3)
        if momentum
        else SGD(0.05, weight_decay=0.3)
    )
    ours = handgrad_trajectory(A, c, theta0, 8, opt)
    theirs = torch_trajectory(A, c, theta0, 8, 0.05, momentum, nesterov, weight_decay=0.3)
    for step_ours, step_theirs in zip(ours, theirs):
        for k in theta0:
            np.testing.assert_allclose(step_ours[k], step_theirs[k], rtol=1e-6, atol=1e-12)
    undecayed = handgrad_trajectory(
        A, c, theta0, 8, Momentum(0.05, beta=momentum, nesterov=nesterov) if momentum else SGD(0.05)
    )
    assert not np.allclose(ours[-1]["W"], undecayed[-1]["W"])  # the decay did something
