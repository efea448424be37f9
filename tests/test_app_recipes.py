"""Optimisers and schedules by name (app/recipes.py): bit for bit the formulas the training loop used before
the tables, so a resumed run and the README's figures stay exactly as they were."""

import dataclasses

import numpy as np
import pytest

from handgrad.app.config import OPTIMIZERS, SCHEDULES, ConfigError, TrainConfig
from handgrad.app.recipes import (
    OPTIMIZER_RECIPES,
    SCHEDULE_RECIPES,
    loop_weight_decay,
    lr_schedule,
    make_optimizer,
)
from handgrad.ch07_regularization import add_l2_grad_
from handgrad.ch08_optimization import (
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    RMSProp,
    cosine_schedule,
    exponential_schedule,
    step_schedule,
)


def reference_lr_schedule(config, steps_per_epoch):
    """The training loop's schedule as it was written before recipes.py (kept here as the oracle)."""
    total = config.epochs * steps_per_epoch
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total - 1)
    lr = config.lr
    if config.schedule == "cosine":
        return lambda t: cosine_schedule(t, total, lr, 0.0, warmup)
    if config.schedule == "step":
        every = max(1, round((config.lr_step_epochs or config.epochs / 3) * steps_per_epoch))
        gamma = config.lr_gamma if config.lr_gamma is not None else 0.1
        after = lambda t: step_schedule(t, lr, every, gamma)  # noqa: E731
    elif config.schedule == "exponential":
        gamma = (config.lr_gamma if config.lr_gamma is not None else 0.9) ** (1.0 / steps_per_epoch)
        after = lambda t: exponential_schedule(t, lr, gamma)  # noqa: E731
    elif warmup > 0:
        after = lambda t: lr  # noqa: E731
    else:
        return None
    return lambda t: lr * t / warmup if t < warmup else after(t - warmup)


def reference_optimizer(config):
    """The optimiser and the loop's own λ as chosen before recipes.py."""
    name, lr = config.optimizer, config.lr
    loop_decay = 0.0 if name in ("adamw", "sgd", "momentum") else float(config.weight_decay)
    if name == "sgd":
        return SGD(lr, weight_decay=config.weight_decay), loop_decay
    if name == "momentum":
        return Momentum(
            lr, beta=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay
        ), loop_decay
    if name == "adam":
        return Adam(lr), loop_decay
    if name == "adamw":
        return Adam(lr, weight_decay=config.weight_decay, decoupled=True), loop_decay
    if name == "rmsprop":
        return RMSProp(lr), loop_decay
    return AdaGrad(lr), loop_decay


def test_the_config_choices_are_the_tables():
    assert tuple(OPTIMIZER_RECIPES) == OPTIMIZERS
    assert OPTIMIZERS == ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad")
    assert SCHEDULES == tuple(SCHEDULE_RECIPES) == ("constant", "cosine", "step", "exponential")


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step", "exponential"])
@pytest.mark.parametrize("warmup_epochs", [0, 0.5, 1, 3])
@pytest.mark.parametrize("step_epochs, gamma", [(None, None), (1.5, 0.5)])
def test_every_learning_rate_is_bit_for_bit_the_old_formula(schedule, warmup_epochs, step_epochs, gamma):
    config = TrainConfig(
        epochs=4,
        lr=0.3,
        schedule=schedule,
        warmup_epochs=warmup_epochs,
        lr_step_epochs=step_epochs,
        lr_gamma=gamma,
    ).validate()
    for steps_per_epoch in (1, 7):
        new, old = lr_schedule(config, steps_per_epoch), reference_lr_schedule(config, steps_per_epoch)
        total = config.epochs * steps_per_epoch
        warmup = min(round(warmup_epochs * steps_per_epoch), total - 1)
        assert (new is None) == (old is None) == (schedule == "constant" and warmup == 0)
        if new is None:
            continue
        rates = [new(t) for t in range(total + 2)]
        assert rates == [old(t) for t in range(total + 2)]  # ==, not approx
        assert len(set(rates)) > 1  # the rate does change along the run


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_every_optimiser_step_is_bit_for_bit_the_old_choice(name, nesterov):
    if nesterov and name != "momentum":
        return
    config = TrainConfig(optimizer=name, lr=0.05, weight_decay=3e-3, nesterov=nesterov, momentum=0.8)
    config.validate()
    new, new_decay = make_optimizer(config), loop_weight_decay(config)
    old, old_decay = reference_optimizer(config)
    assert type(new) is type(old) and new_decay == old_decay
    assert (new_decay > 0) == (OPTIMIZER_RECIPES[name].decay == "l2")
    rng = np.random.default_rng(1)
    shapes = {"0.W": (5, 4), "0.b": (4,), "1.gamma": (4,), "2.W": (4, 3)}
    pa = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    pb, start = {k: v.copy() for k, v in pa.items()}, {k: v.copy() for k, v in pa.items()}
    for _ in range(4):
        g = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        ga, gb = {k: v.copy() for k, v in g.items()}, {k: v.copy() for k, v in g.items()}
        for opt, decay, p, grads in ((new, new_decay, pa, ga), (old, old_decay, pb, gb)):
            if decay:
                add_l2_grad_(p, grads, decay)
            opt.step(p, grads)
    for k in shapes:
        assert np.array_equal(pa[k], pb[k]), k
    assert not np.array_equal(pa["0.W"], start["0.W"])  # the steps did move the parameters


def test_an_unknown_name_is_a_config_error_naming_the_choices():
    config = dataclasses.replace(TrainConfig(), optimizer="lbfgs")
    for call in (make_optimizer, loop_weight_decay):
        with pytest.raises(
            ConfigError,
            match="optimizer must be one of sgd, momentum, adam, adamw, rmsprop, adagrad; got 'lbfgs'",
        ):
            call(config)
    with pytest.raises(
        ConfigError, match="schedule must be one of constant, cosine, step, exponential; got 'linear'"
    ):
        lr_schedule(dataclasses.replace(TrainConfig(), schedule="linear"), 10)


def test_linear_scaling_rule_with_gradual_warmup():
    """Goyal et al. 2017: lr is the rate for batches of lr_batch; batch B trains at lr·B/lr_batch after a
    linear climb from lr over the warmup, then the schedule (cosine here) from the scaled peak."""
    from handgrad.app.recipes import make_optimizer, scaled_lr

    config = TrainConfig(
        lr=0.1, batch_size=1024, lr_batch=256, warmup_epochs=1, schedule="cosine", epochs=4
    ).validate()
    assert scaled_lr(config) == pytest.approx(0.4) and make_optimizer(config).lr == pytest.approx(0.4)
    schedule = lr_schedule(config, steps_per_epoch=10)
    assert [round(schedule(t), 12) for t in (0, 5, 10)] == [0.1, 0.25, 0.4]
    assert schedule(40 - 1) < 0.01  # cosine to 0 at the end
    plain = TrainConfig(lr=0.1, batch_size=1024, epochs=4).validate()
    assert scaled_lr(plain) == 0.1 and lr_schedule(plain, 10) is None  # off by default
    with pytest.raises(ConfigError, match="lr_batch must be a positive integer"):
        TrainConfig(lr_batch=0).validate()
