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

import numpy as np

__all__ = ["cosine_schedule", "constant_schedule", "step_schedule", "exponential_schedule", "make_schedule",
           "with_warmup"]


def _number(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def _step(t):
    _number(t, "t")
    if t < 0:
        raise ValueError(f"t must be >= 0, got {t!r}")
    return t


def _count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _positive(value, name):
    if _number(value, name) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return float(value)


def cosine_schedule(t, total_steps, lr_max, lr_min=0.0, warmup_steps=0):
    """Cosine annealing with linear warmup (design report eq. 25), as a Python float.

        η_t = η_max · t / T_w                                                for t < T_w
        η_t = η_min + ½ (η_max − η_min) (1 + cos(π (t − T_w) / (T − T_w)))  for T_w ≤ t ≤ T

    and η_t = η_min for t ≥ T. Requires 0 ≤ T_w < T and 0 ≤ η_min ≤ η_max, η_max > 0.
    """
    t = _step(t)
    total_steps = _count(total_steps, "total_steps", 1)
    warmup_steps = _count(warmup_steps, "warmup_steps", 0)
    if warmup_steps >= total_steps:
        raise ValueError(f"warmup_steps must be smaller than total_steps ({total_steps}), got {warmup_steps}")
    lr_max = _positive(lr_max, "lr_max")
    lr_min = float(_number(lr_min, "lr_min"))
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
    lr = _positive(lr, "lr")

    def schedule(t):
        _step(t)
        return lr

    return schedule


def step_schedule(t, lr, step_size, gamma=0.1):
    """η_t = η · γ^⌊t / step_size⌋: decay by γ every ``step_size`` steps (as torch's StepLR)."""
    t = _step(t)
    lr = _positive(lr, "lr")
    step_size = _count(step_size, "step_size", 1)
    gamma = _positive(gamma, "gamma")
    return lr * gamma ** (int(t) // step_size)


def exponential_schedule(t, lr, gamma):
    """η_t = η · γ^t: decay by γ every step (as torch's ExponentialLR)."""
    t = _step(t)
    return _positive(lr, "lr") * _positive(gamma, "gamma") ** t


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
    warmup_steps = _count(warmup_steps, "warmup_steps", 0)
    _positive(lr, "lr")
    if not callable(schedule):
        raise TypeError(f"schedule must be a callable t -> learning rate, got {type(schedule).__name__}")
    if warmup_steps == 0:
        return schedule

    def warmed_up(t):
        return lr * t / warmup_steps if t < warmup_steps else schedule(t - warmup_steps)

    return warmed_up
