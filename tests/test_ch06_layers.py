"""Chapter 6, layers.py: Linear, the initialisers and the layer contract against finite differences
and closed forms.
"""

import re

import numpy as np
import pytest
from gradcheck import check_layer_gradients, check_owned_outputs

from handgrad import ShapeError
from handgrad.ch06_feedforward import (
    Layer,
    LeakyReLU,
    Linear,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    glorot_uniform,
    he_normal,
)

SHAPES = [(1, 3), (4, 5), (7, 2)]


SEEDS = [0, 1, 2]


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


# --------------------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: Linear(6, 3, rng=0), ReLU, LeakyReLU, Sigmoid, Tanh])
def test_float32_in_float32_out(rng, make):
    layer = make()
    X = rng.standard_normal((4, 6)).astype(np.float32)
    Y = layer.forward(X)
    assert Y.dtype == np.float32
    dX = layer.backward(np.ones_like(Y))
    assert dX.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads.values())


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


@pytest.mark.parametrize(
    "make", [lambda: Linear(2, 2, rng=0), ReLU, LeakyReLU, Sigmoid, Tanh, SoftmaxCrossEntropy]
)
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


def test_base_layer_train_eval():
    layer = Layer()
    assert layer.training and layer.eval() is layer and not layer.training and layer.train().training
    assert layer.input_grad and Linear(2, 2).input_grad


# --------------------------------------------------------------------------------------------------
# The bias gradient's fast form (1ᵀ dZ) against eq. 16's sum
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [1, 7, 256])
def test_bias_gradient_as_ones_times_dz_equals_the_sum_over_rows(seed, n):
    """db = 1ᵀ dZ (a matrix-vector product) is eq. 16, db = Σ_i dZ_i."""
    rng = np.random.default_rng(seed)
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        layer = Linear(5, 4, rng=rng, dtype=dtype)
        X = rng.standard_normal((n, 5)).astype(dtype)
        dZ = rng.standard_normal((n, 4)).astype(dtype)
        layer.forward(X)
        layer.backward(dZ)
        book = dZ.astype(np.float64).sum(axis=0)
        np.testing.assert_allclose(
            layer.grads["b"], book, rtol=rtol, atol=rtol * np.abs(dZ).sum(axis=0).max()
        )
        assert layer.grads["b"].dtype == dtype


def test_bias_gradient_follows_a_change_of_batch_size(rng):
    """The kept vector of ones is rebuilt when the batch size changes (the last, smaller batch)."""
    layer = Linear(3, 2, rng=0, dtype=np.float64)
    for n in (4, 1, 4, 6):
        dZ = rng.standard_normal((n, 2))
        layer.forward(rng.standard_normal((n, 3)))
        layer.backward(dZ)
        np.testing.assert_allclose(layer.grads["b"], dZ.sum(axis=0), rtol=1e-12)
