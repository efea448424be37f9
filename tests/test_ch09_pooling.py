"""Chapter 9, pooling.py: MaxPool2D and AvgPool2D against finite differences, their dtypes and bad input."""

import numpy as np
import pytest
from gradcheck import check_layer_gradients

from handgrad import ShapeError
from handgrad.ch09_convolution import AvgPool2D, Flatten, MaxPool2D

# --------------------------------------------------------------------------------------------------
# Gradient checks (float64, finite differences)
# --------------------------------------------------------------------------------------------------


def distinct_values(rng, shape):
    """Values spaced at least 0.1 apart, so no finite-difference step changes which entry is a maximum."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 + rng.uniform(0, 0.01, shape)


@pytest.mark.parametrize(
    "shape, kernel, stride",
    [((2, 2, 5, 5), 2, None), ((2, 2, 5, 6), 3, 1), ((1, 3, 7, 5), (3, 2), (2, 1)), ((2, 1, 6, 6), 2, 3)],
)
def test_pool_gradients(shape, kernel, stride, rng):
    X = distinct_values(rng, shape)
    check_layer_gradients(MaxPool2D(kernel, stride), X, rng)
    check_layer_gradients(AvgPool2D(kernel, stride), rng.standard_normal(shape), rng)


# --------------------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [MaxPool2D(2), AvgPool2D(2), Flatten()])
def test_parameterless_layers_compute_in_float64_for_float64_input(layer, rng):
    X = rng.standard_normal((1, 1, 4, 4))
    assert layer.forward(X).dtype == np.float64


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def test_pool_and_flatten_reject_bad_input_shapes():
    with pytest.raises(ShapeError, match=r"MaxPool2D.*expects input \(N, C, H, W\)"):
        MaxPool2D(2).forward(np.zeros((4, 4)))
    with pytest.raises(ShapeError, match="larger than the padded input"):
        AvgPool2D(5).forward(np.zeros((1, 1, 4, 6)))
    with pytest.raises(ShapeError, match="at least 2 dimensions"):
        Flatten().forward(np.zeros(5))


def test_pool_validates_hyperparameters_and_order():
    with pytest.raises(ValueError, match="kernel_size must be a positive integer or a pair of them, got 0"):
        MaxPool2D(0)
    with pytest.raises(ValueError, match="stride must be a positive integer or a pair of them, got '2'"):
        AvgPool2D(2, stride="2")
    with pytest.raises(RuntimeError, match="backward called before forward"):
        MaxPool2D(2).backward(np.zeros((1, 1, 1, 1)))


def test_max_pool_eval_mode_builds_no_masks_yet_its_backward_equals_training_modes(rng):
    X = rng.standard_normal((2, 3, 7, 6))
    X[0, 0, :2, :2] = 1.5  # a tie: the first maximum gets the gradient in both modes
    train, ev = MaxPool2D(2), MaxPool2D(2).eval()
    Y = train.forward(X)
    np.testing.assert_array_equal(ev.forward(X), Y)
    assert ev._cache[0] is None and "masks" not in ev._buffers
    G = rng.standard_normal(Y.shape)
    np.testing.assert_array_equal(ev.backward(G), train.backward(G))
