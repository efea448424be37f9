"""Chapter 8, schedules.py: the schedules against torch.optim.lr_scheduler, the PyTorch oracle."""

import functools

import pytest
import torch

from handgrad.ch08_optimization import cosine_schedule, exponential_schedule, step_schedule


def test_step_and_exponential_match_torch_schedulers():
    for make_ours, make_torch in [
        (
            functools.partial(step_schedule, lr=0.1, step_size=3, gamma=0.5),
            lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5),
        ),
        (
            functools.partial(exponential_schedule, lr=0.1, gamma=0.9),
            lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9),
        ),
    ]:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = make_torch(opt)
        for t in range(12):
            assert make_ours(t) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
            opt.step()
            sched.step()


def test_cosine_matches_torch_cosine_annealing_without_warmup():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20, eta_min=0.01)
    for t in range(21):
        assert cosine_schedule(t, 20, 0.3, 0.01) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()
