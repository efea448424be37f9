"""Learning-rate schedules (book §8.3.1: "in practice it is necessary to gradually decrease the learning
rate over time"; design report eq. 25).

A schedule, for the training loop, is any callable ``t -> learning rate`` of the step count t = 0, 1, …,
assigned to ``optimizer.lr`` before each step. ``constant_schedule(lr)`` returns such a callable. The
others are formulas of t written as plain functions with t first, so ``functools.partial`` (or
``make_schedule``) turns one into a callable, and ``with_warmup`` puts a linear warmup in front of any
callable::

    schedule = make_schedule(cosine_schedule, total_steps=1000, lr_max=0.2, warmup_steps=50)
    schedule = with_warmup(make_schedule(step_schedule, lr=0.2, step_size=300), warmup_steps=50, lr=0.2)
    for t in range(1000):
        opt.lr = schedule(t)
        ...
"""

import functools
import math

from .._checks import check_int, check_number

__all__ = [
    "cosine_schedule",
    "constant_schedule",
    "step_schedule",
    "exponential_schedule",
    "make_schedule",
    "with_warmup",
]


def _step(t):
    check_number(t, "t", low=0)
    return t


def cosine_schedule(t, total_steps, lr_max, lr_min=0.0, warmup_steps=0):
    """Cosine annealing with linear warmup (design report eq. 25), as a Python float.

        η_t = η_max · t / T_w                                                for t < T_w
        η_t = η_min + ½ (η_max − η_min) (1 + cos(π (t − T_w) / (T − T_w)))  for T_w ≤ t ≤ T

    and η_t = η_min for t ≥ T. Requires 0 ≤ T_w < T and 0 ≤ η_min ≤ η_max, η_max > 0.
    """
    t = _step(t)
    total_steps = check_int(total_steps, "total_steps", low=1)
    warmup_steps = check_int(warmup_steps, "warmup_steps", low=0)
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps must be smaller than total_steps ({total_steps}), got {warmup_steps}")
    lr_max = check_number(lr_max, "lr_max", low=0, low_open=True)
    lr_min = check_number(lr_min, "lr_min")
    if not 0 <= lr_min <= lr_max:
        raise ValueError(f"lr_min must be in [0, lr_max={lr_max}], got {lr_min}")
    if t < warmup_steps:
        return lr_max * t / warmup_steps
    if t >= total_steps:
        return lr_min
    progress = (t - warmup_steps) / (total_steps - warmup_steps)
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * progress))


def constant_schedule(lr):
    """The schedule that always returns ``lr``: a callable t -> lr (for a fixed learning rate)."""
    lr = check_number(lr, "lr", low=0, low_open=True)

    def schedule(t):
        _step(t)
        return lr

    return schedule


def step_schedule(t, lr, step_size, gamma=0.1):
    """η_t = η · γ^⌊t / step_size⌋: decay by γ every ``step_size`` steps (as torch's StepLR)."""
    t = _step(t)
    lr = check_number(lr, "lr", low=0, low_open=True)
    step_size = check_int(step_size, "step_size", low=1)
    gamma = check_number(gamma, "gamma", low=0, low_open=True)
    return lr * gamma ** (int(t) // step_size)


def exponential_schedule(t, lr, gamma):
    """η_t = η · γ^t: decay by γ every step (as torch's ExponentialLR)."""
    t = _step(t)
    lr = check_number(lr, "lr", low=0, low_open=True)
    return lr * check_number(gamma, "gamma", low=0, low_open=True) ** t


def make_schedule(schedule, **kwargs):
    """The callable t -> lr of a formula above with its other arguments fixed (validated now, at t = 0)."""
    fn = functools.partial(schedule, **kwargs)
    fn(0)
    return fn


def with_warmup(schedule, warmup_steps, lr):
    """Linear warmup in front of the schedule ``schedule`` (the first line of design report eq. 25):

        η_t = η · t / T_w           for t < T_w
        η_t = schedule(t − T_w)     for t ≥ T_w

    so the rate climbs from 0 to η over T_w steps and ``schedule`` then starts its own count at 0.
    ``cosine_schedule(t, T, η, η_min, T_w)`` equals ``with_warmup(cosine_schedule(·, T − T_w, η, η_min), T_w,
    η)`` at every t (a test checks it). ``warmup_steps`` = 0 returns ``schedule`` itself.
    """
    warmup_steps = check_int(warmup_steps, "warmup_steps", low=0)
    check_number(lr, "lr", low=0, low_open=True)
    if not callable(schedule):
        raise TypeError(f"schedule must be a callable t -> learning rate, got {type(schedule).__name__}")
    if warmup_steps == 0:
        return schedule

    def warmed_up(t):
        return lr * t / warmup_steps if t < warmup_steps else schedule(t - warmup_steps)

    return warmed_up
