"""Chapter 6, activations.py: ReLU, LeakyReLU, Sigmoid and Tanh against finite differences and the
forms they replace.
"""

import numpy as np
import pytest
from gradcheck import check_layer_gradients
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from handgrad.ch06_feedforward import LeakyReLU, ReLU, Sigmoid, Tanh

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


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1, 3), (4, 5), (2, 3, 4)])
@pytest.mark.parametrize("seed", SEEDS)
def test_activation_gradients(name, shape, seed):
    rng = np.random.default_rng(seed)
    assert check_layer_gradients(make_activation(name), away_from_zero(rng, shape), rng) < 1e-6


# --------------------------------------------------------------------------------------------------
# dtypes and validation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [ReLU, LeakyReLU, Sigmoid, Tanh])
def test_parameterless_layers_keep_float64(rng, make):
    layer = make()
    Y = layer.forward(rng.standard_normal((3, 2)))
    assert Y.dtype == np.float64 and layer.backward(np.ones_like(Y)).dtype == np.float64


def test_leaky_relu_validates_alpha():
    with pytest.raises(ValueError, match=r"alpha must be non-negative, got -0.1"):
        LeakyReLU(alpha=-0.1)
    with pytest.raises(ValueError, match="alpha must be a non-negative finite number, got nan"):
        LeakyReLU(alpha=float("nan"))


# --------------------------------------------------------------------------------------------------
# ReLU's fast form against max(0, x)
# --------------------------------------------------------------------------------------------------


floats32 = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
    elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
)


@settings(max_examples=200, deadline=None)
@given(floats32)
def test_relu_against_an_array_of_zeros_is_max_0_x_bit_for_bit(X):
    """ReLU's forward takes max(X, zeros) instead of max(X, 0); its mask is 1{X > 0} (±0, inf, NaN)."""
    layer = ReLU()
    Y = layer.forward(X)
    np.testing.assert_array_equal(Y.view(np.uint32), np.maximum(X, np.float32(0)).view(np.uint32))
    dY = np.ones_like(X)
    np.testing.assert_array_equal(layer.backward(dY), np.where(X > 0, dY, np.float32(0)))
