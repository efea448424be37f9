"""Optimisers and learning-rate schedules by name, built from chapters 7 and 8.

``OPTIMIZER_RECIPES`` maps each ``--optimizer`` name to its chapter 8 class, the options a ``TrainConfig``
gives it, and how weight decay λ applies (an L2 penalty on the weights; biases and batch-norm parameters
are exempt, except under AdamW's decoupled decay, which as in torch.optim.AdamW applies to every
parameter):

    "step"       the optimiser folds λθ into its own step (SGD, momentum: ``weight_decay=``; bit-for-bit
                 ``add_l2_grad_`` then ``step``, in one sweep over each parameter)
    "decoupled"  θ ← θ − lr λ θ inside the optimiser (AdamW)
    "l2"         the loop adds λθ to the gradients with chapter 7's ``add_l2_grad_`` before the step

The linear scaling rule (Goyal et al. 2017, "Accurate, large minibatch SGD", §2.1–2.2), for a global
batch that grows with the number of processes (chapter 12): with ``lr_batch`` N, ``lr`` η is the rate
tuned for batches of N and a batch of B = kN trains at kη (``scaled_lr``); its gradual warmup climbs
linearly from η to kη over ``warmup_epochs`` instead of from 0.

``SCHEDULE_RECIPES`` maps each ``--schedule`` name to the chapter 8 schedule it runs after the linear
warmup (``with_warmup``, the same for every schedule). Adding an optimiser or a schedule is one entry here;
``TrainConfig`` takes its choices from these tables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .._checks import check_choice
from ..ch08_optimization import (
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    RMSProp,
    cosine_schedule,
    exponential_schedule,
    step_schedule,
    with_warmup,
)

__all__ = [
    "OptimizerRecipe",
    "OPTIMIZER_RECIPES",
    "SCHEDULE_RECIPES",
    "make_optimizer",
    "loop_weight_decay",
    "lr_schedule",
    "scaled_lr",
]

DECAY_KINDS = ("step", "decoupled", "l2")


@dataclasses.dataclass(frozen=True)
class OptimizerRecipe:
    """One optimiser: its class, its constructor options from a TrainConfig, and how weight decay applies."""

    cls: type
    options: Callable  # config -> keyword arguments besides lr (weight decay included where it is the step's)
    decay: str  # one of DECAY_KINDS

    def __post_init__(self):
        check_choice(self.decay, "decay", DECAY_KINDS)


OPTIMIZER_RECIPES = {
    "sgd": OptimizerRecipe(SGD, lambda c: {"weight_decay": c.weight_decay}, "step"),
    "momentum": OptimizerRecipe(
        Momentum,
        lambda c: {"beta": c.momentum, "nesterov": c.nesterov, "weight_decay": c.weight_decay},
        "step",
    ),
    "adam": OptimizerRecipe(Adam, lambda c: {}, "l2"),
    "adamw": OptimizerRecipe(
        Adam, lambda c: {"weight_decay": c.weight_decay, "decoupled": True}, "decoupled"
    ),
    "rmsprop": OptimizerRecipe(RMSProp, lambda c: {}, "l2"),
    "adagrad": OptimizerRecipe(AdaGrad, lambda c: {}, "l2"),
}


def _step_after_warmup(config, steps_per_epoch, steps, lr):
    """``step``: η γ^⌊t / k⌋, k = ``lr_step_epochs`` epochs of steps (a third of the run by default);
    γ = ``lr_gamma``, 0.1 by default."""
    every = max(1, round((config.lr_step_epochs or config.epochs / 3) * steps_per_epoch))
    gamma = config.lr_gamma if config.lr_gamma is not None else 0.1
    return lambda t: step_schedule(t, lr, every, gamma)


def _exponential_after_warmup(config, steps_per_epoch, steps, lr):
    """``exponential``: η γ^(t / steps_per_epoch), γ = ``lr_gamma`` per epoch (0.9 by default)."""
    gamma = (config.lr_gamma if config.lr_gamma is not None else 0.9) ** (1.0 / steps_per_epoch)
    return lambda t: exponential_schedule(t, lr, gamma)


# name -> f(config, steps_per_epoch, steps after the warmup, lr) -> the schedule t -> η counted from the end
# of the warmup, or None for "η throughout".
SCHEDULE_RECIPES = {
    "constant": lambda config, steps_per_epoch, steps, lr: None,
    "cosine": lambda config, steps_per_epoch, steps, lr: lambda t: cosine_schedule(t, steps, lr, 0.0),
    "step": _step_after_warmup,
    "exponential": _exponential_after_warmup,
}


def _recipe(table, name, option):
    from .config import ConfigError  # config imports this module for its choices

    return table[check_choice(name, option, tuple(table), error=ConfigError)]


def scaled_lr(config) -> float:
    """The peak learning rate: ``lr``, or with ``lr_batch`` N the linear scaling rule's lr × B / N."""
    lr_batch = getattr(config, "lr_batch", None)
    return config.lr * config.batch_size / lr_batch if lr_batch else config.lr


def make_optimizer(config):
    """The chapter 8 optimiser ``config.optimizer`` names, with its options from ``config``."""
    recipe = _recipe(OPTIMIZER_RECIPES, config.optimizer, "optimizer")
    return recipe.cls(scaled_lr(config), **recipe.options(config))


def loop_weight_decay(config) -> float:
    """The λ the training loop adds to the gradients (``add_l2_grad_``): 0 where the optimiser decays."""
    recipe = _recipe(OPTIMIZER_RECIPES, config.optimizer, "optimizer")
    return float(config.weight_decay) if recipe.decay == "l2" else 0.0


def lr_schedule(config, steps_per_epoch: int):
    """The learning rate per step t = 0, 1, …, or None when it stays ``config.lr`` throughout.

    Linear warmup over ``warmup_epochs`` (η t / T_w, chapter 8's ``with_warmup``; from η to kη under the
    linear scaling rule, see the module docstring), then, counting steps from the end of the warmup, the
    schedule ``config.schedule`` names: constant; cosine-annealed to 0 at the
    end; ``step``: multiplied by ``lr_gamma`` (default 0.1) every ``lr_step_epochs`` epochs (default a
    third of the epochs); ``exponential``: multiplied by ``lr_gamma`` (default 0.9) per epoch, smoothly
    (γ^(1/steps_per_epoch) per step).
    """
    recipe = _recipe(SCHEDULE_RECIPES, config.schedule, "schedule")
    total = config.epochs * steps_per_epoch
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total - 1)
    lr = scaled_lr(config)
    after = recipe(config, steps_per_epoch, total - warmup, lr)
    if after is None:
        if warmup == 0:
            return None
        after = lambda t: lr  # noqa: E731
    if lr != config.lr and warmup:  # Goyal et al.'s gradual warmup, η + (kη − η) t / T_w, then the schedule
        base = config.lr
        return lambda t: base + (lr - base) * t / warmup if t < warmup else after(t - warmup)
    return with_warmup(after, warmup, lr)
