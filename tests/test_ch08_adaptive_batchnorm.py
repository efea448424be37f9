"""Chapter 8: AdaGrad, RMSProp, Adam/AdamW against torch.optim and the book's algorithms; batch normalisation
against finite differences and torch.nn.BatchNorm1d/2d."""

import numpy as np
import pytest
import torch

from gradcheck import check_layer_gradients, check_owned_outputs, relative_error
from handgrad import ShapeError
from handgrad.ch08_optimization import AdaGrad, Adam, BatchNorm1D, BatchNorm2D, RMSProp

SHAPES = [(3, 4), (5,), (2, 3, 2), (1,)]

# (our optimiser, the torch optimiser class, its keyword arguments)
OPTIMISERS = [
    (lambda: AdaGrad(), torch.optim.Adagrad, dict(lr=1e-2)),
    (lambda: AdaGrad(lr=0.3, eps=1e-3), torch.optim.Adagrad, dict(lr=0.3, eps=1e-3)),
    (lambda: RMSProp(), torch.optim.RMSprop, dict(lr=1e-2)),
    (lambda: RMSProp(lr=0.05, alpha=0.5, eps=1e-4), torch.optim.RMSprop, dict(lr=0.05, alpha=0.5, eps=1e-4)),
    (lambda: Adam(), torch.optim.Adam, dict()),
    (lambda: Adam(lr=0.05, betas=(0.5, 0.9), eps=1e-6), torch.optim.Adam,
     dict(lr=0.05, betas=(0.5, 0.9), eps=1e-6)),
    (lambda: Adam(lr=0.02, weight_decay=0.3), torch.optim.Adam, dict(lr=0.02, weight_decay=0.3)),
    (lambda: Adam(lr=0.02, weight_decay=0.3, decoupled=True), torch.optim.AdamW,
     dict(lr=0.02, weight_decay=0.3)),
    (lambda: Adam(decoupled=True), torch.optim.AdamW, dict(weight_decay=0.0)),
]
IDS = ["adagrad", "adagrad-custom", "rmsprop", "rmsprop-custom", "adam", "adam-custom", "adam-l2", "adamw",
       "adamw-0"]


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


# --------------------------------------------------------------------------------------------------
# Batch normalisation
# --------------------------------------------------------------------------------------------------


def bn_pair(cls, tcls, C, rng, **kwargs):
    ours = cls(C, dtype=np.float64, **kwargs)
    theirs = tcls(C, **kwargs).double()
    gamma, beta = rng.uniform(0.5, 2.0, C), rng.standard_normal(C)
    ours.params["gamma"][...] = gamma
    ours.params["beta"][...] = beta
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(gamma))
        theirs.bias.copy_(torch.tensor(beta))
    return ours, theirs


BN_CASES = [
    (BatchNorm1D, torch.nn.BatchNorm1d, (8, 5), {}),
    (BatchNorm1D, torch.nn.BatchNorm1d, (2, 1), dict(momentum=0.3, eps=1e-3)),
    (BatchNorm1D, torch.nn.BatchNorm1d, (3, 7), dict(momentum=1.0)),
    (BatchNorm2D, torch.nn.BatchNorm2d, (4, 3, 5, 6), {}),
    (BatchNorm2D, torch.nn.BatchNorm2d, (1, 2, 3, 1), dict(momentum=0.05)),
    (BatchNorm2D, torch.nn.BatchNorm2d, (2, 1, 1, 2), dict(eps=1e-2)),
]


@pytest.mark.parametrize("cls, tcls, shape, kwargs", BN_CASES)
def test_batch_norm_matches_torch_in_training_then_eval(cls, tcls, shape, kwargs, rng):
    ours, theirs = bn_pair(cls, tcls, shape[1], rng, **kwargs)
    for _ in range(5):
        X = rng.standard_normal(shape) * rng.uniform(0.5, 3.0) + rng.standard_normal()
        G = rng.standard_normal(shape)
        Y = ours.forward(X).copy()
        dX = ours.backward(G).copy()
        Xt = torch.tensor(X, requires_grad=True)
        theirs.zero_grad()
        Yt = theirs(Xt)
        Yt.backward(torch.tensor(G))
        assert relative_error(Y, Yt.detach().numpy()) < 1e-12
        assert relative_error(dX, Xt.grad.numpy()) < 1e-10
        assert relative_error(ours.grads["gamma"], theirs.weight.grad.numpy()) < 1e-12
        assert relative_error(ours.grads["beta"], theirs.bias.grad.numpy()) < 1e-12
    assert relative_error(ours.state["running_mean"], theirs.running_mean.numpy()) < 1e-12
    assert relative_error(ours.state["running_var"], theirs.running_var.numpy()) < 1e-12
    ours.eval()
    theirs.eval()
    X = rng.standard_normal((3,) + shape[1:])
    G = rng.standard_normal(X.shape)
    Xt = torch.tensor(X, requires_grad=True)
    Yt = theirs(Xt)
    Yt.backward(torch.tensor(G))
    assert relative_error(ours.forward(X), Yt.detach().numpy()) < 1e-12
    assert relative_error(ours.backward(G), Xt.grad.numpy()) < 1e-12


@pytest.mark.parametrize("cls, shape", [(BatchNorm1D, (5, 3)), (BatchNorm2D, (3, 2, 3, 2)),
                                        (BatchNorm2D, (1, 2, 2, 3))])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients(cls, shape, training, rng):
    layer = cls(shape[1], dtype=np.float64)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, shape[1])
    layer.params["beta"][...] = rng.standard_normal(shape[1])
    layer.state["running_mean"][...] = rng.standard_normal(shape[1])
    layer.state["running_var"][...] = rng.uniform(0.5, 2.0, shape[1])
    layer.train(training)
    check_layer_gradients(layer, rng.standard_normal(shape) * 2 + 1, rng)


def test_batch_norm_training_output_is_standardised_per_channel(rng):
    X = rng.standard_normal((16, 3, 4, 4)) * np.array([1, 5, 0.1]).reshape(1, 3, 1, 1) + 7
    Y = BatchNorm2D(3, dtype=np.float64).forward(X)
    np.testing.assert_allclose(Y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(Y.var(axis=(0, 2, 3)), 1 / (1 + 1e-5 / X.var(axis=(0, 2, 3))), rtol=1e-10)


@pytest.mark.parametrize("cls, shape", [(BatchNorm1D, (6, 4)), (BatchNorm2D, (2, 4, 3, 3))])
def test_batch_norm_float32_in_float32_out(cls, shape, rng):
    layer = cls(4)
    X = rng.standard_normal(shape).astype(np.float32)
    Y = layer.forward(X)
    assert Y.dtype == np.float32
    assert layer.backward(np.ones_like(Y)).dtype == np.float32
    assert all(a.dtype == np.float32 for a in [*layer.grads.values(), *layer.state.values()])
    assert layer.eval().forward(X).dtype == np.float32


def test_batch_norm_state_convention_arrays_are_updated_in_place(rng):
    layer = BatchNorm1D(3)
    mean, var = layer.state["running_mean"], layer.state["running_var"]
    np.testing.assert_array_equal(mean, 0)
    np.testing.assert_array_equal(var, 1)
    layer.forward(rng.standard_normal((4, 3)) + 2)
    assert layer.state["running_mean"] is mean and layer.state["running_var"] is var
    assert np.all(mean > 0)
    saved = {k: v.copy() for k, v in layer.state.items()}
    restored = BatchNorm1D(3).eval()
    for k, v in saved.items():
        restored.state[k][...] = v  # how a checkpoint restores it
    X = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(restored.forward(X), layer.eval().forward(X))


def _batch_norm_with_random_affine(cls, C):
    layer = cls(C)
    g = np.random.default_rng(3)
    layer.params["gamma"][...] = g.uniform(0.5, 1.5, C)  # γ ≠ 1, β ≠ 0: every term of dx counts
    layer.params["beta"][...] = g.standard_normal(C)
    return layer


@pytest.mark.parametrize("cls, shape", [(BatchNorm1D, (6, 3)), (BatchNorm2D, (3, 2, 4, 4))])
def test_batch_norm_outputs_belong_to_the_caller_and_reuse_is_an_equal_opt_in(cls, shape, rng):
    check_owned_outputs(lambda: _batch_norm_with_random_affine(cls, shape[1]), shape, rng)


def test_batch_norm_eval_does_not_touch_running_statistics(rng):
    layer = BatchNorm2D(2).eval()
    layer.forward(rng.standard_normal((3, 2, 4, 4)).astype(np.float32) + 5)
    np.testing.assert_array_equal(layer.state["running_mean"], 0)
    np.testing.assert_array_equal(layer.state["running_var"], 1)


def test_batch_norm_bad_input_and_hyperparameters():
    with pytest.raises(ShapeError, match=r"BatchNorm1D\(4.*expects input \(N, 4\), got \(2, 3\)"):
        BatchNorm1D(4).forward(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match=r"expects input \(N, 4, H, W\), got \(2, 4\)"):
        BatchNorm2D(4).forward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm1D(4).forward(np.zeros((1, 4)))
    assert BatchNorm1D(4).eval().forward(np.zeros((1, 4), np.float32)).shape == (1, 4)
    with pytest.raises(ValueError, match="num_features must be a positive integer, got 0"):
        BatchNorm1D(0)
    with pytest.raises(ValueError, match="num_features must be a positive integer, got True"):
        BatchNorm1D(True)
    with pytest.raises(ValueError, match="eps must be positive, got 0"):
        BatchNorm2D(3, eps=0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        BatchNorm2D(3, momentum=1.5)
    with pytest.raises(ValueError, match="dtype must be a floating type"):
        BatchNorm1D(3, dtype=np.int64)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        BatchNorm1D(3).backward(np.zeros((2, 3)))
