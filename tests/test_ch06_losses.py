"""Chapter 6, losses.py: cross entropy and the fused SoftmaxCrossEntropy against finite differences,
eqs. 18–19 and their invariants.
"""

import numpy as np
import pytest
from gradcheck import relative_error

from handgrad import ShapeError
from handgrad.ch04_numerical import numerical_gradient, softmax
from handgrad.ch06_feedforward import SoftmaxCrossEntropy, cross_entropy_from_logits, cross_entropy_grad

SEEDS = [0, 1, 2]


# --------------------------------------------------------------------------------------------------
# Gradient checks (float64, finite differences)
# --------------------------------------------------------------------------------------------------


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
    np.testing.assert_allclose(
        cross_entropy_grad(logits + row_shift, y), cross_entropy_grad(logits, y), atol=1e-12
    )


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


def test_loss_gradients_keep_the_logits_dtype(rng):
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    assert cross_entropy_grad(logits, y).dtype == np.float32
    loss = SoftmaxCrossEntropy()
    assert isinstance(loss.forward(logits, y), float)
    assert loss.backward().dtype == np.float32


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
# The fused pass against eqs. 18 and 19
# --------------------------------------------------------------------------------------------------


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
    assert SoftmaxCrossEntropy().forward(logits, y) == pytest.approx(
        cross_entropy_from_logits(logits, y.astype(np.int64))
    )
    with pytest.raises(ValueError, match="must lie in"):
        SoftmaxCrossEntropy().forward(logits, np.array([0, 4, 1, 2, 3, 0], dtype=label_dtype))


def test_fused_loss_row_index_follows_the_batch_size(rng):
    loss_fn = SoftmaxCrossEntropy()
    for n in (5, 2, 5):
        logits, y = rng.standard_normal((n, 3)), rng.integers(0, 3, n)
        assert loss_fn.forward(logits, y) == pytest.approx(cross_entropy_from_logits(logits, y), rel=1e-12)
        np.testing.assert_allclose(loss_fn.backward(), cross_entropy_grad(logits, y), rtol=1e-12)
