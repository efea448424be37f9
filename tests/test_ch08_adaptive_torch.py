"""Chapter 8, adaptive.py: AdaGrad, RMSProp and Adam/AdamW trajectories against torch.optim, the PyTorch
oracle.
"""

import numpy as np
import pytest
import torch
from test_ch08_adaptive import IDS, SHAPES
from test_ch08_adaptive import OPTIMISERS as BY_NAME

# (our optimiser, the torch optimiser class, its keyword arguments)
OPTIMISERS = [(make, getattr(torch.optim, name), kwargs) for make, name, kwargs in BY_NAME]


def torch_twin(params, cls, kwargs):
    tensors = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    return tensors, cls(tensors, **kwargs)


def torch_step(opt, tensors, grads):
    for t, g in zip(tensors, grads):
        t.grad = None if g is None else torch.tensor(g)
    opt.step()


@pytest.mark.parametrize("make, cls, kwargs", OPTIMISERS, ids=IDS)
def test_trajectory_matches_torch_optim(make, cls, kwargs, rng):
    params = [rng.standard_normal(s) for s in SHAPES]
    tensors, topt = torch_twin(params, cls, kwargs)
    opt = make()
    for step in range(15):
        grads = [rng.standard_normal(s) * 10.0 ** rng.integers(-3, 2) for s in SHAPES]
        if step % 4 == 3:
            grads[1] = None  # a frozen parameter: skipped, and its own step count does not advance
        opt.step(params, grads)
        torch_step(topt, tensors, grads)
    for p, t in zip(params, tensors):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=0, atol=1e-10)


@pytest.mark.parametrize("make, cls, kwargs", OPTIMISERS[::2], ids=IDS[::2])
def test_learning_rate_changed_between_steps_matches_torch(make, cls, kwargs, rng):
    params = {"W": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    tensors, topt = torch_twin(list(params.values()), cls, kwargs)
    opt = make()
    for step in range(12):
        lr = 0.05 * (1 + np.cos(np.pi * step / 12)) / 2  # a cosine schedule, reaching lr small at the end
        opt.lr = lr
        for group in topt.param_groups:
            group["lr"] = lr
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        opt.step(params, grads)
        torch_step(topt, tensors, list(grads.values()))
    for p, t in zip(params.values(), tensors):
        np.testing.assert_allclose(p, t.detach().numpy(), rtol=0, atol=1e-10)
