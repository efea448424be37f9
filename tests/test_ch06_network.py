"""Chapter 6, network.py: Sequential against finite differences, the chain rule by hand and §6.1's XOR."""

import numpy as np
import pytest
from gradcheck import check_layer_gradients

from handgrad import ShapeError
from handgrad.ch06_feedforward import (
    Linear,
    ReLU,
    Sequential,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    cross_entropy_grad,
)
from handgrad.ch08_optimization import Momentum

SEEDS = [0, 1, 2]


# --------------------------------------------------------------------------------------------------
# Gradient checks (float64, finite differences)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_sequential_backprop_gradients(seed):
    rng = np.random.default_rng(seed)
    model = Sequential(
        Linear(4, 6, rng=rng, dtype=np.float64), Tanh(), Linear(6, 3, rng=rng, dtype=np.float64), Sigmoid()
    )
    assert check_layer_gradients(model, rng.standard_normal((5, 4)), rng) < 1e-6


# --------------------------------------------------------------------------------------------------
# Sequential
# --------------------------------------------------------------------------------------------------


def mlp(rng, dtype=np.float32):
    return Sequential(Linear(4, 8, rng=rng, dtype=dtype), ReLU(), Linear(8, 3, rng=rng, dtype=dtype))


def test_sequential_parameter_names_and_container(rng):
    model = mlp(rng)
    names = [name for name, _, _ in model.parameters()]
    assert names == ["0.W", "0.b", "2.W", "2.b"]
    assert (
        model.parameters()[2][1] is model[2].params["W"] and model.parameters()[2][2] is model[2].grads["W"]
    )
    assert len(model) == 3 and isinstance(model[1], ReLU) and next(iter(model)) is model[0]
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


def test_sequential_reuse_buffers_reaches_every_layer_and_switches_off():
    net = Sequential(Linear(3, 2, rng=0), ReLU(), Sequential(Linear(2, 2, rng=1), Tanh()))
    leaves = [net[0], net[1], net[2][0], net[2][1]]
    assert net.reuse_buffers() is net and all(layer._reuse for layer in leaves)
    assert net.reuse_buffers(False) is net and not any(layer._reuse for layer in leaves)


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


# --------------------------------------------------------------------------------------------------
# The fast forms in a network against the book's formulas, step by step
# --------------------------------------------------------------------------------------------------


def test_a_network_trained_with_the_fast_forms_matches_the_book_step_by_step(rng):
    """Three SGD steps of a small ReLU network against the same steps written with the book's formulas."""
    net = Sequential(Linear(6, 5, rng=1, dtype=np.float64), ReLU(), Linear(5, 3, rng=2, dtype=np.float64))
    W1, b1, W2, b2 = (
        p.copy() for p in (net[0].params["W"], net[0].params["b"], net[2].params["W"], net[2].params["b"])
    )
    loss_fn = SoftmaxCrossEntropy()
    for _ in range(3):
        X, y = rng.standard_normal((8, 6)), rng.integers(0, 3, 8)
        loss_fn.forward(net.forward(X), y)
        net.backward(loss_fn.backward(), need_input_grad=False)
        for layer in (net[0], net[2]):
            for k in ("W", "b"):
                layer.params[k] -= 0.1 * layer.grads[k]
        # the book: Z1 = XW1 + b1, H = max(0, Z1), L = HW2 + b2; eqs. 14–17, 19
        Z1 = X @ W1 + b1
        H = np.maximum(0, Z1)
        G = cross_entropy_grad(H @ W2 + b2, y)
        dH = G @ W2.T
        dZ1 = dH * (Z1 > 0)
        W2 -= 0.1 * (H.T @ G)
        b2 -= 0.1 * G.sum(axis=0)
        W1 -= 0.1 * (X.T @ dZ1)
        b1 -= 0.1 * dZ1.sum(axis=0)
    for ours, book in (
        (net[0].params["W"], W1),
        (net[0].params["b"], b1),
        (net[2].params["W"], W2),
        (net[2].params["b"], b2),
    ):
        np.testing.assert_allclose(ours, book, rtol=1e-12, atol=1e-14)
