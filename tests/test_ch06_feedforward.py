"""Chapter 6: layers, cross entropy and Sequential against finite differences, PyTorch and closed forms."""

import re

import numpy as np
import pytest
import torch
from gradcheck import check_layer_gradients, check_owned_outputs, relative_error

from handgrad import ShapeError
from handgrad.ch04_numerical import numerical_gradient, softmax
from handgrad.ch06_feedforward import (
    Layer,
    LeakyReLU,
    Linear,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    cross_entropy_from_logits,
    cross_entropy_grad,
    glorot_uniform,
    he_normal,
)
from handgrad.ch08_optimization import Momentum

SHAPES = [(1, 3), (4, 5), (7, 2)]
SEEDS = [0, 1, 2]


def away_from_zero(rng, shape, margin=0.1):
    """Standard normals pushed at least ``margin`` away from 0, where ReLU's derivative jumps."""
    z = rng.standard_normal(shape)
    return np.sign(z) * (margin + np.abs(z))


def make_activation(name):
    return {"relu": ReLU(), "leaky": LeakyReLU(alpha=0.1), "sigmoid": Sigmoid(), "tanh": Tanh()}[name]


ACTIVATIONS = ["relu", "leaky", "sigmoid", "tanh"]


# --------------------------------------------------------------------------------------------------
# Gradient checks (float64, finite differences)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("init", ["glorot_uniform", "he_normal"])
def test_linear_gradients(shape, seed, init):
    rng = np.random.default_rng(seed)
    n, d_in = shape
    layer = Linear(d_in, 3, init=init, rng=rng, dtype=np.float64)
    layer.params["b"][...] = rng.standard_normal(3)  # a non-zero bias, so db is checked for real
    assert check_layer_gradients(layer, rng.standard_normal((n, d_in)), rng) < 1e-6


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1, 3), (4, 5), (2, 3, 4)])
@pytest.mark.parametrize("seed", SEEDS)
def test_activation_gradients(name, shape, seed):
    rng = np.random.default_rng(seed)
    assert check_layer_gradients(make_activation(name), away_from_zero(rng, shape), rng) < 1e-6


@pytest.mark.parametrize("seed", SEEDS)
def test_sequential_backprop_gradients(seed):
    rng = np.random.default_rng(seed)
    model = Sequential(Linear(4, 6, rng=rng, dtype=np.float64), Tanh(), Linear(6, 3, rng=rng, dtype=np.float64), Sigmoid())
    assert check_layer_gradients(model, rng.standard_normal((5, 4)), rng) < 1e-6


@pytest.mark.parametrize("n,c", [(1, 2), (4, 3), (6, 10)])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("targets", ["labels", "probabilities"])
def test_cross_entropy_gradient_matches_finite_differences(n, c, seed, targets):
    rng = np.random.default_rng(seed)
    logits = 3 * rng.standard_normal((n, c))
    y = rng.integers(0, c, n) if targets == "labels" else softmax(rng.standard_normal((n, c)))
    numeric = numerical_gradient(lambda L: cross_entropy_from_logits(L, y), logits.copy())
    assert relative_error(cross_entropy_grad(logits, y), numeric) < 1e-6
    loss = SoftmaxCrossEntropy()
    loss.forward(logits, y)
    assert relative_error(loss.backward(), numeric) < 1e-6


# --------------------------------------------------------------------------------------------------
# PyTorch oracle (float64)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_linear_matches_torch(seed):
    rng = np.random.default_rng(seed)
    layer = Linear(5, 4, rng=rng, dtype=np.float64)
    layer.params["b"][...] = rng.standard_normal(4)
    X = rng.standard_normal((6, 5))
    dZ = rng.standard_normal((6, 4))

    tl = torch.nn.Linear(5, 4, dtype=torch.float64)
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(layer.params["W"].T.copy()))
        tl.bias.copy_(torch.from_numpy(layer.params["b"]))
    tX = torch.from_numpy(X).requires_grad_(True)
    tZ = tl(tX)
    tZ.backward(torch.from_numpy(dZ))

    Z = layer.forward(X).copy()
    dX = layer.backward(dZ)
    np.testing.assert_allclose(Z, tZ.detach().numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(dX, tX.grad.numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(layer.grads["W"], tl.weight.grad.numpy().T, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(layer.grads["b"], tl.bias.grad.numpy(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("seed", SEEDS)
def test_activations_match_torch(name, seed):
    rng = np.random.default_rng(seed)
    X = away_from_zero(rng, (5, 7)) * 3
    dY = rng.standard_normal((5, 7))
    torch_fn = {
        "relu": torch.nn.ReLU(),
        "leaky": torch.nn.LeakyReLU(negative_slope=0.1),
        "sigmoid": torch.nn.Sigmoid(),
        "tanh": torch.nn.Tanh(),
    }[name]
    tX = torch.from_numpy(X).requires_grad_(True)
    tY = torch_fn(tX)
    tY.backward(torch.from_numpy(dY))
    layer = make_activation(name)
    Y = layer.forward(X).copy()
    dX = layer.backward(dY)
    np.testing.assert_allclose(Y, tY.detach().numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(dX, tX.grad.numpy(), rtol=1e-6, atol=1e-12)


def torch_cross_entropy(logits, y):
    tL = torch.from_numpy(logits).requires_grad_(True)
    target = torch.from_numpy(y) if y.ndim == 2 else torch.from_numpy(y.astype(np.int64))
    loss = torch.nn.functional.cross_entropy(tL, target)
    loss.backward()
    return loss.item(), tL.grad.numpy()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("targets", ["labels", "onehot", "probabilities"])
def test_cross_entropy_matches_torch(seed, targets):
    rng = np.random.default_rng(seed)
    n, c = 8, 5
    logits = 4 * rng.standard_normal((n, c))
    labels = rng.integers(0, c, n)
    y = {
        "labels": labels,
        "onehot": np.eye(c)[labels],
        "probabilities": softmax(rng.standard_normal((n, c))),
    }[targets]
    t_loss, t_grad = torch_cross_entropy(logits, y)
    assert cross_entropy_from_logits(logits, y) == pytest.approx(t_loss, rel=1e-6, abs=1e-12)
    np.testing.assert_allclose(cross_entropy_grad(logits, y), t_grad, rtol=1e-6, atol=1e-12)
    fused = SoftmaxCrossEntropy()
    assert fused.forward(logits, y) == pytest.approx(t_loss, rel=1e-6, abs=1e-12)
    np.testing.assert_allclose(fused.backward(), t_grad, rtol=1e-6, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Numerical invariants and dtypes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [-1e3, -5.0, 7.5, 1e3])
def test_loss_invariant_to_a_constant_per_row(rng, shift):
    logits = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, 6)
    row_shift = shift * rng.random((6, 1))
    base = cross_entropy_from_logits(logits, y)
    assert cross_entropy_from_logits(logits + row_shift, y) == pytest.approx(base, rel=1e-9, abs=1e-9)
    assert SoftmaxCrossEntropy().forward(logits + row_shift, y) == pytest.approx(base, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(cross_entropy_grad(logits + row_shift, y), cross_entropy_grad(logits, y), atol=1e-12)


@pytest.mark.parametrize("dtype,big", [(np.float64, 1e4), (np.float32, 3e38)])
def test_extreme_logits_give_finite_loss_and_gradient(dtype, big):
    logits = np.array([[big, -big, 0.0], [-big, big, big], [0.0, 0.0, -big]], dtype=dtype)
    y = np.array([1, 0, 2])  # every row's label is a hopeless class: the loss is huge but finite
    onehot = np.eye(3, dtype=dtype)[y]
    for target in (y, onehot):
        loss = cross_entropy_from_logits(logits, target)
        fused = SoftmaxCrossEntropy()
        assert np.isfinite(loss) and loss > big / 3
        assert fused.forward(logits, target) == pytest.approx(loss, rel=1e-6)
        for grad in (cross_entropy_grad(logits, target), fused.backward()):
            assert grad.dtype == dtype and np.all(np.isfinite(grad))
            np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-6)  # softmax and one-hot both sum to 1


def test_fused_backward_equals_eq19(rng):
    logits = rng.standard_normal((9, 4)).astype(np.float32)
    y = rng.integers(0, 4, 9)
    loss = SoftmaxCrossEntropy()
    loss.forward(logits, y)
    G = loss.backward()
    P = softmax(logits.astype(np.float64))
    expected = (P - np.eye(4)[y]) / 9  # eq. 19, written out
    np.testing.assert_allclose(G, expected, atol=1e-7)
    np.testing.assert_allclose(G, cross_entropy_grad(logits, y), atol=1e-7)
    np.testing.assert_array_equal(loss.backward(), G)  # backward twice gives the same


@pytest.mark.parametrize("make", [lambda: Linear(6, 3, rng=0), ReLU, LeakyReLU, Sigmoid, Tanh])
def test_float32_in_float32_out(rng, make):
    layer = make()
    X = rng.standard_normal((4, 6)).astype(np.float32)
    Y = layer.forward(X)
    assert Y.dtype == np.float32
    dX = layer.backward(np.ones_like(Y))
    assert dX.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads.values())


@pytest.mark.parametrize("make", [ReLU, LeakyReLU, Sigmoid, Tanh])
def test_parameterless_layers_keep_float64(rng, make):
    layer = make()
    Y = layer.forward(rng.standard_normal((3, 2)))
    assert Y.dtype == np.float64 and layer.backward(np.ones_like(Y)).dtype == np.float64


def test_loss_gradients_keep_the_logits_dtype(rng):
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    assert cross_entropy_grad(logits, y).dtype == np.float32
    loss = SoftmaxCrossEntropy()
    assert isinstance(loss.forward(logits, y), float)
    assert loss.backward().dtype == np.float32


def test_linear_float64_layer_accepts_float32_input(rng):
    layer = Linear(3, 2, rng=0, dtype=np.float64)
    Z = layer.forward(rng.standard_normal((4, 3)).astype(np.float32))
    assert Z.dtype == np.float64


# --------------------------------------------------------------------------------------------------
# Initialisers and the layer contract
# --------------------------------------------------------------------------------------------------


def test_glorot_uniform_bounds_and_variance():
    W = glorot_uniform(300, 200, np.random.default_rng(0))
    a = np.sqrt(6 / 500)
    assert W.shape == (300, 200) and W.dtype == np.float32
    assert np.abs(W).max() <= a
    assert W.var() == pytest.approx(a**2 / 3, rel=0.02)  # Var U(-a, a) = a²/3 = 2/(fan_in + fan_out)


def test_he_normal_variance():
    W = he_normal(400, 300, np.random.default_rng(0), dtype=np.float64)
    assert W.shape == (400, 300) and W.dtype == np.float64
    assert W.mean() == pytest.approx(0, abs=0.01)
    assert W.var() == pytest.approx(2 / 400, rel=0.02)


def test_initialisers_are_seeded_and_validated():
    np.testing.assert_array_equal(glorot_uniform(3, 4, 7), glorot_uniform(3, 4, 7))
    with pytest.raises(ValueError, match="fan_in"):
        glorot_uniform(0, 3, 0)
    with pytest.raises(ValueError, match="fan_out"):
        he_normal(3, 2.5, 0)


def test_linear_parameters_and_init_choice():
    layer = Linear(5, 3, init="he_normal", rng=1)
    assert layer.params["W"].shape == (5, 3) and layer.params["b"].shape == (3,)
    assert np.all(layer.params["b"] == 0)
    assert set(layer.grads) == {"W", "b"}
    np.testing.assert_array_equal(layer.params["W"], he_normal(5, 3, np.random.default_rng(1)))
    choices = "init must be one of glorot_uniform, he_normal; got "
    with pytest.raises(ValueError, match=choices + "'zeros'"):
        Linear(5, 3, init="zeros")
    with pytest.raises(ValueError, match=re.escape(choices + "['he_normal']")):  # unhashable: no TypeError
        Linear(5, 3, init=["he_normal"])
    with pytest.raises(ValueError, match="in_features must be a positive integer, got 0"):
        Linear(0, 3)
    with pytest.raises(ValueError, match="out_features must be a positive integer, got 3.0"):
        Linear(2, 3.0)
    with pytest.raises(ValueError, match="fan_out must be a positive integer, got True"):
        he_normal(2, True)


def test_linear_shape_error_names_the_shapes():
    with pytest.raises(ShapeError, match=r"Linear\(784, 512\) expects input \(N, 784\), got \(32, 28, 28\)"):
        Linear(784, 512, rng=0).forward(np.zeros((32, 28, 28), np.float32))
    layer = Linear(3, 2, rng=0)
    layer.forward(np.zeros((4, 3), np.float32))
    with pytest.raises(ShapeError, match=r"\(4, 2\)"):
        layer.backward(np.zeros((4, 3), np.float32))


@pytest.mark.parametrize("make", [lambda: Linear(2, 2, rng=0), ReLU, LeakyReLU, Sigmoid, Tanh, SoftmaxCrossEntropy])
def test_backward_before_forward_raises(make):
    layer = make()
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward() if isinstance(layer, SoftmaxCrossEntropy) else layer.backward(np.zeros((1, 2)))


def test_grads_are_overwritten_in_place(rng):
    layer = Linear(3, 2, rng=0)
    refs = dict(layer.grads)
    for _ in range(2):
        X = rng.standard_normal((4, 3)).astype(np.float32)
        layer.forward(X)
        layer.backward(np.ones((4, 2), np.float32))
        assert all(layer.grads[k] is refs[k] for k in refs)
        np.testing.assert_allclose(refs["W"], X.T @ np.ones((4, 2)), rtol=1e-6)  # not accumulated


def test_eval_mode_returns_fresh_arrays_train_mode_reuses(rng):
    layer = Linear(3, 2, rng=0)
    X1, X2 = rng.standard_normal((2, 4, 3)).astype(np.float32)
    layer.eval()
    Y1 = layer.forward(X1)
    Y2 = layer.forward(X2)
    assert Y1 is not Y2
    np.testing.assert_allclose(Y1, X1 @ layer.params["W"], rtol=1e-6)
    layer.train()
    Y1 = layer.forward(X1)
    assert Y1 is not layer.forward(X2)  # outputs belong to the caller by default
    np.testing.assert_allclose(Y1, X1 @ layer.params["W"], rtol=1e-6)
    layer.reuse_buffers()
    assert layer.forward(X1) is layer.forward(X2)  # the documented opt-in buffer reuse in training mode
    layer.eval()
    assert layer.forward(X1) is not layer.forward(X2)  # eval mode stays fresh whatever the setting


OWNERSHIP_CASES = {
    "linear": (lambda: Linear(5, 3, rng=0), {}),
    "relu": (ReLU, {}),
    "leaky": (lambda: LeakyReLU(alpha=0.1), {}),
    "sigmoid": (Sigmoid, {"reuses_forward": False}),  # σ comes from chapter 4 as a new array, as before
    "tanh": (Tanh, {}),
    "sequential": (lambda: Sequential(Linear(5, 4, rng=0), ReLU(), Linear(4, 3, rng=1), Tanh()), {}),
}


@pytest.mark.parametrize("name", list(OWNERSHIP_CASES))
def test_outputs_belong_to_the_caller_and_reuse_is_an_equal_opt_in(name, rng):
    make_layer, flags = OWNERSHIP_CASES[name]
    check_owned_outputs(make_layer, (6, 5), rng, **flags)


def test_sequential_reuse_buffers_reaches_every_layer_and_switches_off():
    net = Sequential(Linear(3, 2, rng=0), ReLU(), Sequential(Linear(2, 2, rng=1), Tanh()))
    leaves = [net[0], net[1], net[2][0], net[2][1]]
    assert net.reuse_buffers() is net and all(layer._reuse for layer in leaves)
    assert net.reuse_buffers(False) is net and not any(layer._reuse for layer in leaves)


def test_loss_gradient_belongs_to_the_caller_and_reuse_is_an_equal_opt_in(rng):
    (A, B), y = rng.standard_normal((2, 6, 4)).astype(np.float32), rng.integers(0, 4, 6)
    grads = {}
    for reuse in (False, True):
        loss_fn = SoftmaxCrossEntropy().reuse_buffers(reuse)
        loss_fn.forward(A, y)
        g1 = loss_fn.backward()
        kept = g1.copy()
        loss_fn.forward(B, y)
        g2 = loss_fn.backward()
        assert (g1 is g2) == reuse
        grads[reuse] = (kept, g2.copy())
    np.testing.assert_allclose(grads[False][0], cross_entropy_grad(A, y), rtol=1e-6)  # the first one intact
    np.testing.assert_array_equal(grads[True][0], grads[False][0])
    np.testing.assert_array_equal(grads[True][1], grads[False][1])


def test_leaky_relu_validates_alpha():
    with pytest.raises(ValueError, match="alpha must be non-negative, got -0.1"):
        LeakyReLU(alpha=-0.1)
    with pytest.raises(ValueError, match="alpha must be a non-negative finite number, got nan"):
        LeakyReLU(alpha=float("nan"))


def test_base_layer_train_eval():
    layer = Layer()
    assert layer.training and layer.eval() is layer and not layer.training and layer.train().training
    assert layer.input_grad and Linear(2, 2).input_grad


# --------------------------------------------------------------------------------------------------
# Cross-entropy input validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "logits,y,error,match",
    [
        (np.zeros((3, 4)), np.array([0, 1]), ShapeError, "3 rows"),
        (np.zeros((3, 4)), np.array([0, 1, 4]), ValueError, r"\[0, 4\)"),
        (np.zeros((3, 4)), np.array([0, -1, 2]), ValueError, r"\[0, 4\)"),
        (np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), ValueError, "integers"),
        (np.zeros(4), np.array([0]), ShapeError, r"\(N, C\)"),
        (np.zeros((3, 4)), np.zeros((3, 3)), ShapeError, r"\(3, 4\)"),
        (np.zeros((3, 4)), np.full((3, 4), 0.5), ValueError, "summing to 1"),
        (np.zeros((3, 4)), np.zeros((3, 4, 1)), ShapeError, "targets"),
    ],
)
def test_cross_entropy_rejects_bad_input(logits, y, error, match):
    for fn in (cross_entropy_from_logits, cross_entropy_grad, SoftmaxCrossEntropy().forward):
        with pytest.raises(error, match=match):
            fn(logits, y)


# --------------------------------------------------------------------------------------------------
# Sequential
# --------------------------------------------------------------------------------------------------


def mlp(rng, dtype=np.float32):
    return Sequential(Linear(4, 8, rng=rng, dtype=dtype), ReLU(), Linear(8, 3, rng=rng, dtype=dtype))


def test_sequential_parameter_names_and_container(rng):
    model = mlp(rng)
    names = [name for name, _, _ in model.parameters()]
    assert names == ["0.W", "0.b", "2.W", "2.b"]
    assert model.parameters()[2][1] is model[2].params["W"] and model.parameters()[2][2] is model[2].grads["W"]
    assert len(model) == 3 and isinstance(model[1], ReLU) and list(model)[0] is model[0]
    assert isinstance(model[1:], Sequential) and len(model[1:]) == 2
    nested = Sequential(model, Tanh())
    assert [n for n, _, _ in nested.parameters()] == ["0.0.W", "0.0.b", "0.2.W", "0.2.b"]


def test_sequential_train_eval_propagate(rng):
    model = mlp(rng)
    assert model.eval() is model
    assert not model.training and not any(layer.training for layer in model)
    model.train()
    assert model.training and all(layer.training for layer in model)


def test_predict_is_argmax_of_forward_and_restores_mode(rng):
    model = mlp(rng)
    X = rng.standard_normal((37, 4)).astype(np.float32)
    expected = np.argmax(model.forward(X).copy(), axis=1)
    model[1].eval()  # a mixed state must come back as it was
    for batch_size in (None, 1, 5, 100):
        np.testing.assert_array_equal(model.predict(X, batch_size=batch_size), expected)
    assert model.training and model[0].training and not model[1].training and model[2].training
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None, got 0"):
        model.predict(X, batch_size=0)


def test_sequential_backward_matches_chain_rule_and_can_skip_input_grad(rng):
    model = mlp(rng, np.float64)
    X = rng.standard_normal((5, 4))
    dY = rng.standard_normal((5, 3))
    model.forward(X)
    dX = model.backward(dY).copy()
    grads = {k: g.copy() for k, g in model.grads.items()}
    # by hand: eqs. 13–17
    W1, b1, W2 = model[0].params["W"], model[0].params["b"], model[2].params["W"]
    H = np.maximum(X @ W1 + b1, 0)
    dH = (dY @ W2.T) * (X @ W1 + b1 > 0)
    np.testing.assert_allclose(grads["2.W"], H.T @ dY, rtol=1e-12)
    np.testing.assert_allclose(grads["0.W"], X.T @ dH, rtol=1e-12)
    np.testing.assert_allclose(dX, dH @ W1.T, rtol=1e-12)
    # skipping dX leaves every parameter gradient the same, and restores the first layer's flag
    model.forward(X)
    assert model.backward(dY, need_input_grad=False) is None
    assert model[0].input_grad
    for k, g in model.grads.items():
        np.testing.assert_array_equal(g, grads[k])


def test_sequential_leading_activation_is_skipped_without_input_grad(rng):
    model = Sequential(Tanh(), Linear(3, 2, rng=0, dtype=np.float64))
    model.forward(rng.standard_normal((4, 3)))
    model[0]._cache = None  # were Tanh's backward called, it would now raise
    assert model.backward(np.ones((4, 2)), need_input_grad=False) is None


def test_sequential_errors(rng):
    model = mlp(rng)
    with pytest.raises(ShapeError, match=r"Linear\(4, 8\) expects input \(N, 4\), got \(2, 5\)"):
        model.forward(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="argument 1"):
        Sequential(Linear(2, 2), "relu")


# --------------------------------------------------------------------------------------------------
# End to end: §6.1's XOR
# --------------------------------------------------------------------------------------------------


def test_mlp_learns_xor_with_momentum():
    rng = np.random.default_rng(0)
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    labels = np.array([0, 1, 1, 0])  # XOR: not linearly separable (book §6.1)
    X = np.repeat(corners, 50, axis=0) + 0.1 * rng.standard_normal((200, 2)).astype(np.float32)
    y = np.repeat(labels, 50)
    model = Sequential(Linear(2, 16, init="he_normal", rng=rng), ReLU(), Linear(16, 2, rng=rng))
    loss_fn = SoftmaxCrossEntropy()
    opt = Momentum(lr=0.1, beta=0.9)
    params, grads = model.params, model.grads  # built once: grads are overwritten in place
    for _ in range(300):
        loss = loss_fn.forward(model.forward(X), y)
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step(params, grads)
    assert loss < 0.05
    assert np.mean(model.predict(X) == y) == 1.0
    np.testing.assert_array_equal(model.predict(corners), labels)
