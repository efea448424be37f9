"""Chapter 8: SGD and momentum against torch.optim.SGD, the optimiser contract, and schedules."""

import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from handgrad import ShapeError
from handgrad.ch08_optimization import (
    SGD,
    Momentum,
    Optimizer,
    constant_schedule,
    cosine_schedule,
    exponential_schedule,
    make_schedule,
    step_schedule,
    with_warmup,
)

# --------------------------------------------------------------------------------------------------
# PyTorch oracle: trajectories on a quadratic loss L(θ) = ½ Σ_k ‖A_k θ_k − c_k‖²
# --------------------------------------------------------------------------------------------------


def quadratic_problem(seed):
    rng = np.random.default_rng(seed)
    shapes = {"W": (3, 4), "b": (4,)}
    A = {k: rng.standard_normal((int(np.prod(s)), int(np.prod(s)))) / 2 for k, s in shapes.items()}
    c = {k: rng.standard_normal(int(np.prod(s))) for k, s in shapes.items()}
    theta0 = {k: rng.standard_normal(s) for k, s in shapes.items()}
    return A, c, theta0


def quadratic_grads(A, c, params):
    return {k: (A[k].T @ (A[k] @ p.ravel() - c[k])).reshape(p.shape) for k, p in params.items()}


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
        loss = sum(0.5 * torch.sum((torch.tensor(A[k]) @ tp[k].reshape(-1) - torch.tensor(c[k])) ** 2) for k in tp)
        loss.backward()
        opt.step()
        out.append({k: v.detach().numpy().copy() for k, v in tp.items()})
    return out


def handgrad_trajectory(A, c, theta0, steps, opt, lrs=None):
    params = {k: v.copy() for k, v in theta0.items()}
    out = []
    for t in range(steps):
        if lrs is not None:
            opt.lr = lrs[t]
        opt.step(params, quadratic_grads(A, c, params))
        out.append({k: v.copy() for k, v in params.items()})
    return out


OPTIMISERS = [
    ("sgd", lambda: SGD(lr=0.05), {"lr": 0.05}),
    ("momentum", lambda: Momentum(lr=0.05, beta=0.9), {"lr": 0.05, "momentum": 0.9}),
    ("nesterov", lambda: Momentum(lr=0.05, beta=0.8, nesterov=True), {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
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


def test_momentum_closed_form_two_steps():
    """v1 = g1, θ1 = θ0 − η g1;  v2 = β g1 + g2, θ2 = θ1 − η v2 (eqs. 23–24 by hand)."""
    theta = np.array([1.0, -2.0])
    g1, g2 = np.array([0.5, 1.0]), np.array([-1.0, 2.0])
    opt = Momentum(lr=0.1, beta=0.5)
    opt.step([theta], [g1])
    np.testing.assert_allclose(theta, [1 - 0.05, -2 - 0.1])
    opt.step([theta], [g2])
    v2 = 0.5 * g1 + g2
    np.testing.assert_allclose(theta, np.array([0.95, -2.1]) - 0.1 * v2)
    np.testing.assert_allclose(opt.state["velocity"]["0"], v2)


@pytest.mark.parametrize("alpha, eps", [(0.9, 0.05), (0.5, 0.2)])
def test_nesterov_is_the_books_algorithm_8_3_at_the_look_ahead_point(alpha, eps):
    """Algorithm 8.3 written out in float64 on least squares, L(θ) = ½‖Xθ − y‖² / n, beside Momentum's
    reparametrised form: its parameters are the book's look-ahead point θ̃ = θ + α v_b and its velocity is
    −v_b / ε, at every step (the change of variables of Momentum's docstring)."""
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((20, 5)), rng.standard_normal(20)

    def grad(theta):
        return X.T @ (X @ theta - y) / len(y)

    theta0 = rng.standard_normal(5)
    theta, v_b = theta0.copy(), np.zeros(5)  # the book's state
    phi = theta0.copy()  # Momentum's parameters
    opt = Momentum(lr=eps, beta=alpha, nesterov=True)
    moved = 0.0
    for _ in range(40):
        interim = theta + alpha * v_b  # θ̃ = θ + α v
        g = grad(interim)  # g = ∇L(θ̃)
        v_b = alpha * v_b - eps * g  # v ← α v − ε g
        theta = theta + v_b  # θ ← θ + v
        opt.step([phi], [grad(phi)])
        v = opt.state["velocity"]["0"]
        np.testing.assert_allclose(phi, theta + alpha * v_b, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(-eps * v, v_b, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(phi + alpha * eps * v, theta, rtol=1e-12, atol=1e-14)  # θ back from φ
        moved = max(moved, float(np.abs(alpha * v_b).max()))
    assert moved > 1e-2  # the look-ahead point really differs from θ: the test tells the two apart
    assert np.linalg.norm(grad(phi)) < 0.5 * np.linalg.norm(grad(theta0))  # and it descends


# --------------------------------------------------------------------------------------------------
# The optimiser contract
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: SGD(0.1), lambda: Momentum(0.1), lambda: Momentum(0.1, nesterov=True)])
def test_dict_and_list_forms_agree(rng, make):
    params = {"W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    as_list = [p.copy() for p in params.values()]
    opt_dict, opt_list = make(), make()
    for _ in range(3):
        grads = {k: rng.standard_normal(p.shape) for k, p in params.items()}
        opt_dict.step(params, grads)
        opt_list.step(as_list, list(grads.values()))
    for p, q in zip(params.values(), as_list):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("make", [lambda: SGD(0.1), lambda: Momentum(0.1)])
def test_none_gradients_are_skipped(rng, make):
    W, b = rng.standard_normal((2, 2)), rng.standard_normal(2)
    b0 = b.copy()
    opt = make()
    opt.step({"W": W, "b": b}, {"W": np.ones((2, 2)), "b": None})
    np.testing.assert_array_equal(b, b0)
    opt.step([W, b], [np.ones((2, 2)), None])
    np.testing.assert_array_equal(b, b0)


def test_updates_are_in_place_and_keep_float32(rng):
    W = rng.standard_normal((4, 3)).astype(np.float32)
    ref = W
    opt = Momentum(0.1)
    for _ in range(2):
        opt.step({"W": W}, {"W": np.ones((4, 3), np.float32)})
    assert W is ref and W.dtype == np.float32 and opt.state["velocity"]["W"].dtype == np.float32


def test_velocity_arrays_are_reused_between_steps(rng):
    W = rng.standard_normal((4, 3))
    opt = Momentum(0.1)
    opt.step([W], [np.ones_like(W)])
    v = opt.state["velocity"]["0"]
    opt.step([W], [np.ones_like(W)])
    assert opt.state["velocity"]["0"] is v
    np.testing.assert_allclose(v, 1.9)


def test_key_and_length_mismatches_name_what_is_wrong():
    opt = SGD(0.1)
    with pytest.raises(ValueError, match=r"missing from grads \['b'\], extra in grads \['c'\]"):
        opt.step({"W": np.zeros(2), "b": np.zeros(2)}, {"W": np.zeros(2), "c": np.zeros(2)})
    with pytest.raises(ValueError, match="params has 2 entries but grads has 3"):
        opt.step([np.zeros(2)] * 2, [np.zeros(2)] * 3)
    with pytest.raises(TypeError, match="two dicts or two lists"):
        opt.step({"W": np.zeros(2)}, [np.zeros(2)])
    with pytest.raises(TypeError, match="NumPy array"):
        opt.step([[1.0, 2.0]], [np.zeros(2)])


def test_shape_mismatch_names_the_parameter():
    opt = Momentum(0.1)
    W = np.zeros((3, 2))
    with pytest.raises(ShapeError, match=r"'fc.W' has shape \(3, 2\) but its gradient has shape \(2, 3\)"):
        opt.step({"fc.W": W}, {"fc.W": np.zeros((2, 3))})
    np.testing.assert_array_equal(W, 0)  # nothing was half-updated


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: SGD(-0.1), r"lr must be positive, got -0.1"),
        (lambda: SGD(0), "lr must be positive, got 0"),
        (lambda: SGD(float("nan")), "lr must be a positive finite number, got nan"),
        (lambda: Momentum(0.1, beta=1.0), r"beta must be in \[0, 1\), got 1.0"),
        (lambda: Momentum(0.1, beta=-0.5), r"beta must be in \[0, 1\), got -0.5"),
        (lambda: Momentum(-1.0), "lr must be positive, got -1.0"),
        (lambda: Momentum(0.1, nesterov="yes"), "nesterov must be true or false, got 'yes'"),
        (lambda: Momentum(0.1, nesterov=1), "nesterov must be true or false, got 1"),
    ],
)
def test_hyperparameters_are_validated(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_lr_attribute_can_follow_a_schedule_but_not_go_negative():
    opt = SGD(0.1)
    opt.lr = 0.0  # a warmup's first step
    W = np.ones(2)
    opt.step([W], [np.ones(2)])
    np.testing.assert_array_equal(W, 1)
    opt.lr = 0.5
    opt.step([W], [np.ones(2)])
    np.testing.assert_allclose(W, 0.5)
    with pytest.raises(ValueError, match="lr must be non-negative, got -0.1"):
        opt.lr = -0.1


@pytest.mark.parametrize("nesterov", [False, True])
def test_state_dict_round_trip_resumes_identically(nesterov):
    A, c, theta0 = quadratic_problem(4)
    straight = handgrad_trajectory(A, c, theta0, 6, Momentum(0.05, 0.9, nesterov=nesterov))

    opt = Momentum(0.05, 0.9, nesterov=nesterov)
    first = handgrad_trajectory(A, c, theta0, 3, opt)
    saved = opt.state_dict()
    assert saved["t"] == 3 and saved["beta"] == 0.9 and saved["nesterov"] is nesterov
    assert all(isinstance(v, (np.ndarray, int, float, bool)) for v in saved.values())
    opt.step({k: v.copy() for k, v in theta0.items()}, quadratic_grads(A, c, theta0))  # must not leak into `saved`
    # through np.savez-like plain arrays: a fresh optimiser with other settings takes the saved ones
    resumed = Momentum(0.5, 0.1)
    resumed.load_state_dict({k: np.asarray(v) for k, v in saved.items()})
    assert resumed.lr == 0.05 and resumed.beta == 0.9 and resumed.nesterov is nesterov and resumed.t == 3
    rest = handgrad_trajectory(A, c, first[-1], 3, resumed)
    for k in theta0:
        np.testing.assert_array_equal(rest[-1][k], straight[-1][k])


def test_load_state_dict_validates():
    opt = Momentum(0.1)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\), got 2.0"):
        opt.load_state_dict({"lr": 0.1, "beta": 2.0, "nesterov": False, "t": 0})
    with pytest.raises(ValueError, match="unknown entry 'gamma'"):
        opt.load_state_dict({"lr": 0.1, "beta": 0.5, "nesterov": False, "gamma": 1})
    with pytest.raises(ValueError, match=r"lacks \['beta', 'nesterov'\]"):
        opt.load_state_dict({"lr": 0.1})


def test_a_subclass_writes_only_its_update_rule(rng):
    class SignSGD(Optimizer):
        def _update(self, key, param, grad):
            m = self._slot("seen", key, param)
            m += 1
            param -= self.lr * np.sign(grad)

    W = np.zeros(3)
    opt = SignSGD(0.5)
    opt.step({"W": W}, {"W": np.array([2.0, -3.0, 0.0])})
    np.testing.assert_array_equal(W, [-0.5, 0.5, 0.0])
    assert set(opt.state_dict()) == {"lr", "t", "seen.W"}
    with pytest.raises(ShapeError):
        opt.step({"W": W}, {"W": np.zeros(4)})


# --------------------------------------------------------------------------------------------------
# Schedules (eq. 25)
# --------------------------------------------------------------------------------------------------


def test_cosine_closed_form_values():
    kw = dict(total_steps=110, lr_max=0.2, lr_min=0.02, warmup_steps=10)
    assert cosine_schedule(0, **kw) == 0.0
    assert cosine_schedule(5, **kw) == pytest.approx(0.1)  # halfway through warmup
    assert cosine_schedule(10, **kw) == pytest.approx(0.2)  # warmup end: η_max
    assert cosine_schedule(60, **kw) == pytest.approx(0.11)  # midpoint: (η_max + η_min)/2
    assert cosine_schedule(35, **kw) == pytest.approx(0.02 + 0.09 * (1 + math.cos(math.pi / 4)))
    assert cosine_schedule(110, **kw) == pytest.approx(0.02)  # the end
    assert cosine_schedule(500, **kw) == 0.02  # clamped after it


def test_cosine_without_warmup_starts_at_lr_max():
    assert cosine_schedule(0, 100, 0.1) == pytest.approx(0.1)
    assert cosine_schedule(50, 100, 0.1) == pytest.approx(0.05)
    assert cosine_schedule(100, 100, 0.1) == pytest.approx(0.0, abs=1e-15)


@settings(max_examples=100, deadline=None)
@given(
    total=st.integers(2, 500),
    warmup_frac=st.floats(0, 0.9),
    lr_max=st.floats(1e-4, 10),
    min_frac=st.floats(0, 1),
    data=st.data(),
)
def test_cosine_decreases_after_warmup_and_stays_in_range(total, warmup_frac, lr_max, min_frac, data):
    warmup = int(warmup_frac * (total - 1))
    lr_min = min_frac * lr_max
    t1 = data.draw(st.integers(warmup, total + 10))
    t2 = data.draw(st.integers(t1, total + 20))
    a = cosine_schedule(t1, total, lr_max, lr_min, warmup)
    b = cosine_schedule(t2, total, lr_max, lr_min, warmup)
    assert b <= a + 1e-12 * lr_max
    assert lr_min - 1e-12 <= b <= lr_max + 1e-12
    if warmup:
        t0 = data.draw(st.integers(0, warmup - 1))
        assert cosine_schedule(t0, total, lr_max, lr_min, warmup) <= cosine_schedule(t0 + 1, total, lr_max, lr_min, warmup) + 1e-12


def test_step_and_exponential_match_torch_schedulers():
    for make_ours, make_torch in [
        (functools.partial(step_schedule, lr=0.1, step_size=3, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
        (functools.partial(exponential_schedule, lr=0.1, gamma=0.9), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
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


def test_callable_forms():
    const = constant_schedule(0.05)
    assert const(0) == const(1000) == 0.05
    cos = make_schedule(cosine_schedule, total_steps=10, lr_max=1.0)
    assert cos(5) == pytest.approx(0.5)
    assert make_schedule(step_schedule, lr=1.0, step_size=2)(4) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="lr_max must be positive, got -1.0"):
        make_schedule(cosine_schedule, total_steps=10, lr_max=-1.0)  # validated when made


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: cosine_schedule(-1, 10, 0.1), "t must be non-negative, got -1"),
        (lambda: cosine_schedule(0, 0, 0.1), "total_steps must be a positive integer, got 0"),
        (lambda: cosine_schedule(0, 10.0, 0.1), "total_steps must be a positive integer, got 10.0"),
        (lambda: cosine_schedule(0, 10, 0.1, warmup_steps=-1),
         "warmup_steps must be a non-negative integer, got -1"),
        (lambda: cosine_schedule(0, 10, 0.1, warmup_steps=10), "warmup_steps must be smaller"),
        (lambda: cosine_schedule(0, 10, 0.1, lr_min=0.2), r"lr_min must be in \[0, lr_max"),
        (lambda: cosine_schedule(0, 10, 0.0), "lr_max must be positive, got 0.0"),
        (lambda: cosine_schedule(0, 10, 0.1, lr_min="0"), "lr_min must be a finite number, got '0'"),
        (lambda: constant_schedule(0), "lr must be positive, got 0"),
        (lambda: constant_schedule(True), "lr must be a positive finite number, got True"),
        (lambda: step_schedule(0, 0.1, 0), "step_size must be a positive integer, got 0"),
        (lambda: step_schedule(0, 0.1, 2, gamma=-1), "gamma must be positive, got -1"),
        (lambda: exponential_schedule(0, 0.1, float("nan")), "gamma must be a positive finite number, got nan"),
        (lambda: exponential_schedule(float("inf"), 0.1, 0.9),
         "t must be a non-negative finite number, got inf"),
    ],
)
def test_schedule_arguments_are_validated(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("nesterov", [False, True])
def test_a_momentum_step_allocates_no_parameter_sized_temporary(nesterov):
    """After the first step (which creates the velocity and the scratch array) a step allocates nothing big."""
    import tracemalloc

    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((300, 200)).astype(np.float32), "b": np.zeros(200, np.float32)}
    grads = {k: rng.standard_normal(p.shape).astype(np.float32) for k, p in params.items()}
    opt = Momentum(lr=0.1, beta=0.9, nesterov=nesterov)
    opt.step(params, grads)
    tracemalloc.start()
    try:
        opt.step(params, grads)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < params["W"].nbytes / 10


# --------------------------------------------------------------------------------------------------
# Weight decay in the step (eq. 21 folded into eqs. 22–24)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.8, True)])
@pytest.mark.parametrize("seed", [0, 1])
def test_weight_decay_trajectories_match_torch_on_weights_only(momentum, nesterov, seed):
    A, c, theta0 = quadratic_problem(seed)
    opt = (Momentum(0.05, beta=momentum, nesterov=nesterov, weight_decay=0.3) if momentum
           else SGD(0.05, weight_decay=0.3))
    ours = handgrad_trajectory(A, c, theta0, 8, opt)
    theirs = torch_trajectory(A, c, theta0, 8, 0.05, momentum, nesterov, weight_decay=0.3)
    for step_ours, step_theirs in zip(ours, theirs):
        for k in theta0:
            np.testing.assert_allclose(step_ours[k], step_theirs[k], rtol=1e-6, atol=1e-12)
    undecayed = handgrad_trajectory(A, c, theta0, 8, Momentum(0.05, beta=momentum, nesterov=nesterov) if momentum
                                    else SGD(0.05))
    assert not np.allclose(ours[-1]["W"], undecayed[-1]["W"])  # the decay did something


@pytest.mark.parametrize("make", [lambda **kw: SGD(0.1, **kw), lambda **kw: Momentum(0.1, **kw)], ids=["sgd", "momentum"])
@pytest.mark.parametrize("bad, message", [
    (-1e-4, "weight_decay must be non-negative, got -0.0001"),
    (float("nan"), "weight_decay must be a non-negative finite number, got nan"),
    (float("inf"), "weight_decay must be a non-negative finite number, got inf"),
    ("1e-4", "weight_decay must be a non-negative finite number, got '1e-4'"),
    (True, "weight_decay must be a non-negative finite number, got True"),
])
def test_weight_decay_is_validated(make, bad, message):
    with pytest.raises(ValueError, match=message):
        make(weight_decay=bad)


def test_weight_decay_is_saved_and_an_older_state_without_it_keeps_the_constructors_value():
    opt = Momentum(0.1, 0.9, weight_decay=1e-4)
    saved = opt.state_dict()
    assert saved["weight_decay"] == 1e-4
    fresh = Momentum(0.1, 0.9)
    fresh.load_state_dict(saved)
    assert fresh.weight_decay == 1e-4
    older = {k: v for k, v in saved.items() if k != "weight_decay"}  # written before weight_decay existed
    kept = Momentum(0.1, 0.9, weight_decay=5e-4)
    kept.load_state_dict(older)
    assert kept.weight_decay == 5e-4
    with pytest.raises(ValueError, match="weight_decay must be non-negative, got -1.0"):
        Momentum(0.1).load_state_dict({**saved, "weight_decay": -1.0})


def test_with_warmup_climbs_linearly_then_hands_over_with_the_count_restarted():
    after = lambda t: 1000.0 + t  # noqa: E731  (any schedule; this one shows which t it was given)
    warm = with_warmup(after, warmup_steps=4, lr=0.2)
    assert [warm(t) for t in range(4)] == [0.0, 0.2 * 1 / 4, 0.2 * 2 / 4, 0.2 * 3 / 4]
    assert [warm(t) for t in (4, 5, 9)] == [1000.0, 1001.0, 1005.0]  # schedule(t − T_w)
    assert with_warmup(after, 0, 0.2) is after
    with pytest.raises(ValueError, match="warmup_steps must be an integer >= 0"):
        with_warmup(after, -1, 0.2)
    with pytest.raises(ValueError, match="lr must be positive"):
        with_warmup(after, 3, 0.0)


@pytest.mark.parametrize("total, warmup, lr_min", [(10, 3, 0.0), (37, 5, 0.01), (8, 7, 0.0), (5, 0, 0.0)])
def test_cosine_with_its_own_warmup_is_with_warmup_of_cosine(total, warmup, lr_min):
    """Bit for bit: the wrapper reproduces the warmup cosine_schedule has built in, at every step."""
    cos = functools.partial(cosine_schedule, total_steps=total - warmup, lr_max=0.3, lr_min=lr_min)
    warm = with_warmup(cos, warmup, 0.3)
    for t in range(total + 3):
        assert warm(t) == cosine_schedule(t, total, 0.3, lr_min, warmup), t
