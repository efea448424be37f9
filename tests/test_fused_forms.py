"""The faster formulations in the chapter modules agree with the book's forms they replace.

Each test computes a quantity twice — the way the book writes it (the form shown in the docstring) and
the way the hot path computes it — and asserts they agree: exactly where only the memory layout or the
evaluation order of the same operations changes, and to a few float32 ulps where a sum is reassociated.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from handgrad.ch06_feedforward import (
    Linear,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
    cross_entropy_from_logits,
    cross_entropy_grad,
)
from handgrad.ch07_regularization import add_l2_grad_
from handgrad.ch08_optimization import SGD, Momentum

SEEDS = [0, 1, 2]

floats32 = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
    elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
)


# --------------------------------------------------------------------------------------------------
# Chapter 6
# --------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(floats32)
def test_relu_against_an_array_of_zeros_is_max_0_x_bit_for_bit(X):
    """ReLU's forward takes max(X, zeros) instead of max(X, 0); its mask is 1{X > 0} (±0, inf, NaN)."""
    layer = ReLU()
    Y = layer.forward(X)
    np.testing.assert_array_equal(Y.view(np.uint32), np.maximum(X, np.float32(0)).view(np.uint32))
    dY = np.ones_like(X)
    np.testing.assert_array_equal(layer.backward(dY), np.where(X > 0, dY, np.float32(0)))


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
        np.testing.assert_allclose(layer.grads["b"], book, rtol=rtol, atol=rtol * np.abs(dZ).sum(axis=0).max())
        assert layer.grads["b"].dtype == dtype


def test_bias_gradient_follows_a_change_of_batch_size(rng):
    """The kept vector of ones is rebuilt when the batch size changes (the last, smaller batch)."""
    layer = Linear(3, 2, rng=0, dtype=np.float64)
    for n in (4, 1, 4, 6):
        dZ = rng.standard_normal((n, 2))
        layer.forward(rng.standard_normal((n, 3)))
        layer.backward(dZ)
        np.testing.assert_allclose(layer.grads["b"], dZ.sum(axis=0), rtol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_softmax_cross_entropy_equals_eqs_18_and_19(seed, dtype):
    """One pass for softmax, loss and gradient gives eq. 18's loss and eq. 19's gradient."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((33, 10)) * 5).astype(dtype)
    y = rng.integers(0, 10, 33)
    fused = SoftmaxCrossEntropy()
    loss = fused.forward(logits, y)
    tol = 1e-6 if dtype == np.float32 else 1e-13  # the row sums of e^{L − m} are float32 in a float32 pass
    assert loss == pytest.approx(cross_entropy_from_logits(logits, y), rel=tol)
    np.testing.assert_allclose(fused.backward(), cross_entropy_grad(logits, y), rtol=tol, atol=tol)


@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.uint8, np.uint16])
def test_fused_loss_accepts_every_integer_label_dtype(label_dtype, rng):
    logits = rng.standard_normal((6, 4))
    y = np.array([0, 3, 1, 2, 3, 0], dtype=label_dtype)
    assert SoftmaxCrossEntropy().forward(logits, y) == pytest.approx(cross_entropy_from_logits(logits, y.astype(np.int64)))
    with pytest.raises(ValueError, match="must lie in"):
        SoftmaxCrossEntropy().forward(logits, np.array([0, 4, 1, 2, 3, 0], dtype=label_dtype))


def test_fused_loss_row_index_follows_the_batch_size(rng):
    loss_fn = SoftmaxCrossEntropy()
    for n in (5, 2, 5):
        logits, y = rng.standard_normal((n, 3)), rng.integers(0, 3, n)
        assert loss_fn.forward(logits, y) == pytest.approx(cross_entropy_from_logits(logits, y), rel=1e-12)
        np.testing.assert_allclose(loss_fn.backward(), cross_entropy_grad(logits, y), rtol=1e-12)


def test_a_network_trained_with_the_fast_forms_matches_the_book_step_by_step(rng):
    """Three SGD steps of a small ReLU network against the same steps written with the book's formulas."""
    net = Sequential(Linear(6, 5, rng=1, dtype=np.float64), ReLU(), Linear(5, 3, rng=2, dtype=np.float64))
    W1, b1, W2, b2 = (p.copy() for p in (net[0].params["W"], net[0].params["b"], net[2].params["W"], net[2].params["b"]))
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
    for ours, book in ((net[0].params["W"], W1), (net[0].params["b"], b1), (net[2].params["W"], W2), (net[2].params["b"], b2)):
        np.testing.assert_allclose(ours, book, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------------
# Chapters 7 and 8: weight decay folded into the optimiser's step
# --------------------------------------------------------------------------------------------------


def _model_like_params(rng, dtype):
    shapes = {"0.W": (7, 5), "0.b": (5,), "2.W": (5, 3), "2.b": (3,)}
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    lambda wd: SGD(0.1, weight_decay=wd),
    lambda wd: Momentum(0.2, beta=0.9, weight_decay=wd),
    lambda wd: Momentum(0.2, beta=0.8, nesterov=True, weight_decay=wd),
], ids=["sgd", "momentum", "nesterov"])
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
