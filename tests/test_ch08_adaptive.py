"""Chapter 8, adaptive.py: AdaGrad, RMSProp and Adam/AdamW against the book's algorithms, and the
optimiser contract for each.
"""

import numpy as np
import pytest
from gradcheck import relative_error

from handgrad import ShapeError
from handgrad.ch08_optimization import AdaGrad, Adam, RMSProp

SHAPES = [(3, 4), (5,), (2, 3, 2), (1,)]


# (our optimiser, the name of its torch.optim twin, that twin's keyword arguments)
OPTIMISERS = [
    (lambda: AdaGrad(), "Adagrad", dict(lr=1e-2)),
    (lambda: AdaGrad(lr=0.3, eps=1e-3), "Adagrad", dict(lr=0.3, eps=1e-3)),
    (lambda: RMSProp(), "RMSprop", dict(lr=1e-2)),
    (lambda: RMSProp(lr=0.05, alpha=0.5, eps=1e-4), "RMSprop", dict(lr=0.05, alpha=0.5, eps=1e-4)),
    (lambda: Adam(), "Adam", dict()),
    (lambda: Adam(lr=0.05, betas=(0.5, 0.9), eps=1e-6), "Adam", dict(lr=0.05, betas=(0.5, 0.9), eps=1e-6)),
    (lambda: Adam(lr=0.02, weight_decay=0.3), "Adam", dict(lr=0.02, weight_decay=0.3)),
    (lambda: Adam(lr=0.02, weight_decay=0.3, decoupled=True), "AdamW", dict(lr=0.02, weight_decay=0.3)),
    (lambda: Adam(decoupled=True), "AdamW", dict(weight_decay=0.0)),
]


IDS = [
    "adagrad",
    "adagrad-custom",
    "rmsprop",
    "rmsprop-custom",
    "adam",
    "adam-custom",
    "adam-l2",
    "adamw",
    "adamw-0",
]


# --------------------------------------------------------------------------------------------------
# The book's algorithms, written as the book writes them
# --------------------------------------------------------------------------------------------------


def test_adam_equals_the_books_algorithm_8_7(rng):
    eps_lr, rho1, rho2, delta = 0.01, 0.8, 0.95, 1e-6
    theta = rng.standard_normal(6)
    ours = theta.copy()
    s, r = np.zeros(6), np.zeros(6)
    opt = Adam(lr=eps_lr, betas=(rho1, rho2), eps=delta)
    for t in range(1, 13):
        g = rng.standard_normal(6)
        s = rho1 * s + (1 - rho1) * g
        r = rho2 * r + (1 - rho2) * g * g
        s_hat, r_hat = s / (1 - rho1**t), r / (1 - rho2**t)
        theta = theta - eps_lr * s_hat / (np.sqrt(r_hat) + delta)
        opt.step([ours], [g])
    assert relative_error(ours, theta) < 1e-13


def test_adagrad_equals_the_books_algorithm_8_4(rng):
    eps_lr, delta = 0.1, 1e-7
    theta = rng.standard_normal(5)
    ours, r = theta.copy(), np.zeros(5)
    opt = AdaGrad(lr=eps_lr, eps=delta)
    for _ in range(12):
        g = rng.standard_normal(5)
        r = r + g * g
        theta = theta - eps_lr / (delta + np.sqrt(r)) * g
        opt.step([ours], [g])
    assert relative_error(ours, theta) < 1e-13


def test_rmsprop_differs_from_the_books_algorithm_8_5_only_in_where_delta_goes(rng):
    """Book: Δθ = −ε g / √(δ + r); PyTorch (and ours): −ε g / (√r + δ). Equal for δ = 0, close for r ≫ δ."""

    def book(theta, grads, delta, rho=0.9, lr=0.01):
        r = np.zeros_like(theta)
        for g in grads:
            r = rho * r + (1 - rho) * g * g
            theta = theta - lr * g / np.sqrt(delta + r)
        return theta

    theta0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(12)]
    for delta, tol in [(0.0, 1e-13), (1e-8, 1e-6)]:
        ours = theta0.copy()
        opt = RMSProp(lr=0.01, alpha=0.9, eps=delta)
        for g in grads:
            opt.step([ours], [g])
        assert relative_error(ours - theta0, book(theta0, grads, delta) - theta0) < tol
    tiny = [g * 1e-5 for g in grads]  # r ≈ 1e-10, comparable with δ: the two placements part
    ours = theta0.copy()
    opt = RMSProp(lr=0.01, alpha=0.9, eps=1e-8)
    for g in tiny:
        opt.step([ours], [g])
    assert relative_error(ours - theta0, book(theta0, tiny, 1e-8) - theta0) > 1e-3


def test_adam_first_step_moves_each_coordinate_by_lr_times_the_sign(rng):
    theta = rng.standard_normal(8)
    g = rng.standard_normal(8) * 10.0 ** rng.integers(-3, 3, 8)
    before = theta.copy()
    Adam(lr=0.1, eps=0.0).step([theta], [g])
    np.testing.assert_allclose(theta - before, -0.1 * np.sign(g), rtol=1e-12)


def test_adamw_decay_is_decoupled_from_the_gradient_scale():
    """With a zero gradient, AdamW still shrinks θ by (1 − lr λ) per step; Adam's L2 form does not."""
    theta_w, theta_l2 = np.ones(3), np.ones(3)
    adamw, adam = Adam(lr=0.1, weight_decay=0.5, decoupled=True), Adam(lr=0.1, weight_decay=0.5)
    for _ in range(3):
        adamw.step([theta_w], [np.zeros(3)])
        adam.step([theta_l2], [np.zeros(3)])
    np.testing.assert_allclose(theta_w, (1 - 0.05) ** 3 * np.ones(3), rtol=1e-12)
    assert np.all(theta_l2 < 1 - 0.05)  # the L2 gradient is normalised by Adam: steps of ≈ lr


# --------------------------------------------------------------------------------------------------
# In place, dtypes, checkpoints, validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [m for m, _, _ in OPTIMISERS], ids=IDS)
def test_updates_in_place_keep_float32(make, rng):
    W = rng.standard_normal((4, 3)).astype(np.float32)
    ident = id(W)
    opt = make()
    opt.step({"W": W}, {"W": rng.standard_normal((4, 3)).astype(np.float32)})
    arrays = [a for slot in opt.state.values() for a in slot.values() if a.shape == W.shape]
    opt.step({"W": W}, {"W": rng.standard_normal((4, 3)).astype(np.float32)})
    assert id(W) == ident and W.dtype == np.float32
    assert arrays and all(a.dtype == np.float32 for a in arrays)
    later = [a for slot in opt.state.values() for a in slot.values() if a.shape == W.shape]
    assert all(a is b for a, b in zip(arrays, later))  # state arrays updated in place, not replaced


@pytest.mark.parametrize("make", [m for m, _, _ in OPTIMISERS], ids=IDS)
def test_state_dict_resumes_exactly_also_through_savez(make, rng, tmp_path):
    params = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(10)]
    straight = [p.copy() for p in params]
    opt = make()
    for g in grads:
        opt.step(straight, g)
    resumed = [p.copy() for p in params]
    first = make()
    for g in grads[:5]:
        first.step(resumed, g)
    np.savez(tmp_path / "opt.npz", **first.state_dict())
    with np.load(tmp_path / "opt.npz") as saved:
        second = make()
        second.load_state_dict(dict(saved))
    for g in grads[5:]:
        second.step(resumed, g)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)
    assert second.t == 10 and repr(second) == repr(opt)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: AdaGrad(lr=0), "lr must be positive, got 0"),
        (lambda: AdaGrad(eps=-1e-3), "eps must be non-negative, got -0.001"),
        (lambda: RMSProp(alpha=1.5), r"alpha must be in \[0, 1\], got 1.5"),
        (lambda: RMSProp(eps=float("nan")), "eps must be a non-negative finite number, got nan"),
        (lambda: Adam(lr=-1e-3), "lr must be positive, got -0.001"),
        (lambda: Adam(betas=(0.9, 1.0)), r"beta2 must be in \[0, 1\), got 1.0"),
        (lambda: Adam(betas=(-0.1, 0.9)), r"beta1 must be in \[0, 1\), got -0.1"),
        (lambda: Adam(betas=(True, 0.9)), r"beta1 must be a number in \[0, 1\), got True"),
        (lambda: Adam(betas=0.9), "betas must be a pair"),
        (lambda: Adam(weight_decay=-0.1), "weight_decay must be non-negative, got -0.1"),
        (lambda: Adam(decoupled="yes"), "decoupled must be true or false, got 'yes'"),
    ],
)
def test_hyperparameters_are_validated(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_mismatched_params_and_grads_raise(rng):
    with pytest.raises(ShapeError, match="has shape"):
        Adam().step([np.zeros(3)], [np.zeros(4)])
    with pytest.raises(ValueError, match="same keys"):
        RMSProp().step({"W": np.zeros(3)}, {"V": np.zeros(3)})
