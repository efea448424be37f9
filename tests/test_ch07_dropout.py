"""Chapter 7, dropout.py: dropout (§7.12) against finite differences with a fixed mask, its statistics
and the layer contract.
"""

import re

import numpy as np
import pytest
from gradcheck import check_layer_gradients, check_owned_outputs

from handgrad import ShapeError
from handgrad.ch06_feedforward import Layer, Linear, Sequential
from handgrad.ch07_regularization import Dropout


class FixedMaskDropout(Layer):
    """Dropout whose generator is reseeded before every forward, so finite differences see one mask."""

    def __init__(self, p, seed):
        super().__init__()
        self.inner, self.seed = Dropout(p), seed

    def forward(self, X):
        self.inner.rng = np.random.default_rng(self.seed)
        return self.inner.forward(X)

    def backward(self, dY):
        return self.inner.backward(dY)


@pytest.mark.parametrize("p, shape", [(0.5, (4, 6)), (0.2, (2, 3, 4, 4)), (0.0, (3, 5))])
def test_dropout_gradients_with_a_fixed_mask(p, shape, rng):
    check_layer_gradients(FixedMaskDropout(p, seed=3), rng.standard_normal(shape), rng)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_drops_a_fraction_p_and_preserves_the_mean(p):
    layer = Dropout(p, rng=0)
    X = np.ones((400, 500), np.float32)
    Y = layer.forward(X)
    n = X.size
    dropped = np.mean(Y == 0)
    assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / n)  # binomial proportion within 5 standard errors
    # E[y] = x: the sample mean of Y is within 5 standard errors, sd(y) = sqrt(p / (1 − p))
    assert abs(Y.astype(np.float64).mean() - 1.0) < 5 * np.sqrt(p / (1 - p) / n)
    np.testing.assert_array_equal(np.unique(Y), np.array([0, 1 / (1 - p)], np.float32))


def test_dropout_backward_uses_the_forward_mask(rng):
    layer = Dropout(0.5, rng=1)
    X = rng.uniform(1, 2, (8, 9))
    Y = layer.forward(X).copy()
    G = rng.standard_normal(X.shape)
    np.testing.assert_array_equal(layer.backward(G), G * (Y / X))


def test_dropout_is_the_identity_in_eval_mode_and_for_p_zero(rng):
    X = rng.standard_normal((5, 4)).astype(np.float32)
    layer = Dropout(0.7, rng=0).eval()
    assert layer.forward(X) is X
    G = rng.standard_normal((5, 4)).astype(np.float32)
    assert layer.backward(G) is G
    np.testing.assert_array_equal(Dropout(0.0).forward(X), X)
    net = Sequential(Linear(4, 3, rng=0), Dropout(0.9, rng=0))
    net.eval()
    np.testing.assert_array_equal(net.forward(X), net[0].forward(X))


def test_dropout_is_deterministic_for_a_seed_and_keeps_dtype(rng):
    X = rng.standard_normal((6, 7))
    for dtype in (np.float32, np.float64):
        a = Dropout(0.5, rng=42).forward(X.astype(dtype))
        b = Dropout(0.5, rng=42).forward(X.astype(dtype))
        np.testing.assert_array_equal(a, b)
        assert a.dtype == dtype
    layer = Dropout(0.5, rng=42)
    assert not np.array_equal(layer.forward(X).copy(), layer.forward(X))  # a fresh mask per forward


@pytest.mark.parametrize(
    "p, expected",
    [
        (1.0, "in [0, 1), got 1.0"),
        (-0.1, "in [0, 1), got -0.1"),
        (1.5, "in [0, 1), got 1.5"),
        ("0.5", "a number in [0, 1), got '0.5'"),
        (True, "a number in [0, 1), got True"),
        (float("nan"), "a number in [0, 1), got nan"),
    ],
)
def test_dropout_validates_p(p, expected):
    with pytest.raises(ValueError, match=re.escape(f"p (the drop probability) must be {expected}")):
        Dropout(p)


def test_dropout_backward_errors(rng):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        Dropout(0.5).backward(np.zeros(3))
    layer = Dropout(0.5, rng=0)
    layer.forward(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="backward expects dY"):
        layer.backward(np.zeros((3, 2)))


@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 4, 4)])
def test_dropout_outputs_belong_to_the_caller_and_reuse_is_an_equal_opt_in(shape, rng):
    check_owned_outputs(lambda: Dropout(0.5, rng=0), shape, rng)  # the seeded masks must agree too
