"""Chapter 8, sgd.py: SGD and momentum against the book's algorithms and closed forms, the optimiser
contract, and weight decay in the step.
"""

import numpy as np
import pytest

from handgrad import ShapeError
from handgrad.ch07_regularization import add_l2_grad_
from handgrad.ch08_optimization import SGD, Momentum, Optimizer

# --------------------------------------------------------------------------------------------------
# A quadratic loss L(θ) = ½ Σ_k ‖A_k θ_k − c_k‖²
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


def handgrad_trajectory(A, c, theta0, steps, opt, lrs=None):
    params = {k: v.copy() for k, v in theta0.items()}
    out = []
    for t in range(steps):
        if lrs is not None:
            opt.lr = lrs[t]
        opt.step(params, quadratic_grads(A, c, params))
        out.append({k: v.copy() for k, v in params.items()})
    return out


# --------------------------------------------------------------------------------------------------
# The book's algorithms by hand
# --------------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "make", [lambda: SGD(0.1), lambda: Momentum(0.1), lambda: Momentum(0.1, nesterov=True)]
)
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
    opt.step(
        {k: v.copy() for k, v in theta0.items()}, quadratic_grads(A, c, theta0)
    )  # must not leak into `saved`
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


@pytest.mark.parametrize(
    "make", [lambda **kw: SGD(0.1, **kw), lambda **kw: Momentum(0.1, **kw)], ids=["sgd", "momentum"]
)
@pytest.mark.parametrize(
    "bad, message",
    [
        (-1e-4, "weight_decay must be non-negative, got -0.0001"),
        (float("nan"), "weight_decay must be a non-negative finite number, got nan"),
        (float("inf"), "weight_decay must be a non-negative finite number, got inf"),
        ("1e-4", "weight_decay must be a non-negative finite number, got '1e-4'"),
        (True, "weight_decay must be a non-negative finite number, got True"),
    ],
)
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


def _model_like_params(rng, dtype):
    shapes = {"0.W": (7, 5), "0.b": (5,), "2.W": (5, 3), "2.b": (3,)}
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "make",
    [
        lambda wd: SGD(0.1, weight_decay=wd),
        lambda wd: Momentum(0.2, beta=0.9, weight_decay=wd),
        lambda wd: Momentum(0.2, beta=0.8, nesterov=True, weight_decay=wd),
    ],
    ids=["sgd", "momentum", "nesterov"],
)
def test_weight_decay_in_the_step_is_add_l2_grad_then_step_bit_for_bit(make, dtype):
    """step(weight_decay=λ) ≡ add_l2_grad_(λ) followed by step(): the same floating-point operations."""
    rng = np.random.default_rng(0)
    fused_params = _model_like_params(rng, dtype)
    book_params = {k: p.copy() for k, p in fused_params.items()}
    fused, book = make(1e-2), make(0.0)
    for _ in range(5):
        grads = {k: rng.standard_normal(p.shape).astype(dtype) for k, p in fused_params.items()}
        before = {k: g.copy() for k, g in grads.items()}
        fused.step(fused_params, grads)
        for k in grads:
            np.testing.assert_array_equal(grads[k], before[k])  # the fused step leaves grads alone
        add_l2_grad_(book_params, grads, 1e-2)
        book.step(book_params, grads)
        for k in fused_params:
            np.testing.assert_array_equal(fused_params[k], book_params[k])
