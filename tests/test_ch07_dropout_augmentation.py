"""Chapter 7: dropout (§7.12), dataset augmentation (§7.4) and early stopping (§7.8)."""

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcheck import check_layer_gradients, check_owned_outputs
from handgrad import ShapeError
from handgrad.ch06_feedforward import Layer, Linear, Sequential
from handgrad.ch07_regularization import (
    Augmenter,
    Dropout,
    EarlyStopping,
    augment_batch,
    elastic_displacement,
    transform_images,
)

# --------------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------------


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


def test_dropout_scale_matches_torch(rng):
    """Same kept set as torch's mask, same values: x / (1 − p) for kept units, 0 for dropped ones."""
    X = rng.standard_normal((50, 40))
    torch.manual_seed(0)
    Yt = torch.nn.functional.dropout(torch.tensor(X), p=0.3, training=True).numpy()
    layer = Dropout(0.3, rng=0)
    Y = layer.forward(X)
    kept_t, kept = Yt != 0, Y != 0
    np.testing.assert_allclose(Yt[kept_t], X[kept_t] / 0.7, rtol=1e-15)
    np.testing.assert_allclose(Y[kept], X[kept] / 0.7, rtol=1e-15)


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


@pytest.mark.parametrize("p, expected", [
    (1.0, "in [0, 1), got 1.0"), (-0.1, "in [0, 1), got -0.1"), (1.5, "in [0, 1), got 1.5"),
    ("0.5", "a number in [0, 1), got '0.5'"), (True, "a number in [0, 1), got True"),
    (float("nan"), "a number in [0, 1), got nan"),
])
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


# --------------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------------


def blob_images(n, size=28, rng=None):
    """n images with a bright Gaussian blob away from the border."""
    rng = np.random.default_rng(rng)
    rows, cols = np.mgrid[:size, :size]
    centres = rng.uniform(size * 0.4, size * 0.6, (n, 2))
    d2 = (rows - centres[:, :1, None]) ** 2 + (cols - centres[:, 1:, None]) ** 2
    return np.exp(-d2 / (2 * 1.5**2))


def centre_of_mass(X):
    rows, cols = np.mgrid[: X.shape[-2], : X.shape[-1]]
    m = X.sum(axis=(-2, -1))
    return np.stack([(X * rows).sum(axis=(-2, -1)) / m, (X * cols).sum(axis=(-2, -1)) / m], axis=-1)


def test_zero_shift_and_rotation_is_the_identity(rng):
    X = rng.random((4, 28, 28)).astype(np.float32)
    Y = augment_batch(X, rng, max_shift=0, max_degrees=0.0)
    assert Y.dtype == np.float32 and Y.shape == X.shape
    np.testing.assert_array_equal(Y, X)
    np.testing.assert_array_equal(transform_images(X), X)


def test_integer_shift_moves_the_centre_of_mass_exactly(rng):
    X = blob_images(3, rng=rng)
    shifts = np.array([[2, -1], [0, 3], [-2, -2]])
    Y = transform_images(X, shifts=shifts)
    np.testing.assert_allclose(centre_of_mass(Y) - centre_of_mass(X), shifts, atol=1e-6)
    np.testing.assert_array_equal(Y[0, 2:, :-1], X[0, :-2, 1:])  # pixel for pixel
    np.testing.assert_array_equal(Y[0, :2], 0)  # what came in from outside is the fill value


def test_augment_batch_shifts_by_integers_within_max_shift(rng):
    X = blob_images(64, rng=rng)
    moved = centre_of_mass(augment_batch(X, rng, max_shift=3, max_degrees=0.0)) - centre_of_mass(X)
    np.testing.assert_allclose(moved, np.round(moved), atol=1e-6)
    assert np.abs(moved).max() <= 3 + 1e-6
    assert len({tuple(v) for v in np.round(moved).astype(int)}) > 10  # the shifts really vary


@pytest.mark.parametrize("k", [1, 2, 3, -1])
def test_rotation_by_multiples_of_90_degrees_is_rot90(k, rng):
    for size in (5, 6, 28):
        X = rng.random((3, size, size))
        Y = transform_images(X, degrees=90.0 * k)
        np.testing.assert_allclose(Y, np.rot90(X, k, axes=(1, 2)), rtol=0, atol=1e-12)


def test_rotation_turns_the_centre_of_mass_about_the_centre(rng):
    X = blob_images(4, rng=rng)
    theta = np.array([10.0, -10.0, 5.0, -3.0])
    Y = transform_images(X, degrees=theta)
    c = 27 / 2
    y, x = (centre_of_mass(X) - c).T
    a = np.deg2rad(theta)
    expected = np.stack([c + np.cos(a) * y - np.sin(a) * x, c + np.sin(a) * y + np.cos(a) * x], axis=1)
    # counter-clockwise as displayed means row ← cos·y − sin·x for a point (y, x) about the centre
    np.testing.assert_allclose(centre_of_mass(Y), expected, atol=0.02)
    np.testing.assert_allclose(Y.sum(axis=(1, 2)), X.sum(axis=(1, 2)), rtol=1e-3)  # mass is kept


def test_a_constant_displacement_field_is_a_shift_the_other_way(rng):
    X = rng.random((2, 9, 8))
    D = np.zeros((2, 2, 9, 8))
    D[:, 0], D[:, 1] = 1.0, -2.0
    np.testing.assert_array_equal(transform_images(X, displacement=D), transform_images(X, shifts=(-1, 2)))


def test_elastic_displacement_is_smooth_scales_with_alpha_and_is_deterministic():
    D = elastic_displacement(0, 16, 28, 28, alpha=34.0, sigma=4.0)
    assert D.shape == (16, 2, 28, 28) and D.dtype == np.float64
    np.testing.assert_array_equal(D, elastic_displacement(0, 16, 28, 28, alpha=34.0, sigma=4.0))
    np.testing.assert_allclose(elastic_displacement(0, 16, 28, 28, alpha=17.0, sigma=4.0), D / 2, rtol=1e-13)
    neighbour = np.corrcoef(D[..., :-1].ravel(), D[..., 1:].ravel())[0, 1]
    raw = np.random.default_rng(0).uniform(-1, 1, D.shape)
    assert neighbour > 0.9 and abs(np.corrcoef(raw[..., :-1].ravel(), raw[..., 1:].ravel())[0, 1]) < 0.05
    assert 0.3 < np.abs(D).mean() < 5  # pixels, the order of magnitude Simard et al. use


@pytest.mark.parametrize("shape", [(5, 28, 28), (5, 1, 28, 28), (3, 2, 13, 17)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_augment_batch_keeps_shape_and_dtype_and_is_deterministic(shape, dtype, rng):
    X = (rng.random(shape) * 255).astype(dtype)
    kwargs = dict(max_shift=2, max_degrees=15.0, elastic_alpha=34.0, elastic_sigma=4.0)
    A = augment_batch(X, np.random.default_rng(7), **kwargs)
    B = augment_batch(X, 7, **kwargs)
    assert A.shape == X.shape and A.dtype == X.dtype
    np.testing.assert_array_equal(A, B)
    assert not np.array_equal(A, augment_batch(X, 8, **kwargs))
    if len(shape) == 4 and shape[1] == 2:  # every channel gets its image's transformation
        np.testing.assert_array_equal(A[:, 1], augment_batch(X[:, 1], 7, **kwargs))


def test_augmenter_draws_fresh_transformations_reproducibly(rng):
    X = blob_images(4, rng=rng).astype(np.float32)
    a, b = Augmenter(max_shift=2, max_degrees=10, rng=3), Augmenter(max_shift=2, max_degrees=10, rng=3)
    first, second = a(X), a(X)
    np.testing.assert_array_equal(first, b(X))
    np.testing.assert_array_equal(second, b(X))
    assert not np.array_equal(first, second)


def test_fill_value_for_standardised_images(rng):
    X = np.full((2, 6, 6), -0.5)
    np.testing.assert_allclose(transform_images(X, shifts=(2, 1), degrees=7.0, fill=-0.5), X, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_shift=-1), "max_shift must be a non-negative integer, got -1"),
        (dict(max_shift=1.5), "max_shift must be a non-negative integer, got 1.5"),
        (dict(max_degrees=200), r"max_degrees must be in \[0, 180\], got 200"),
        (dict(max_degrees=True), r"max_degrees must be a number in \[0, 180\], got True"),
        (dict(elastic_alpha=-1.0), "elastic_alpha must be non-negative, got -1.0"),
        (dict(elastic_sigma=0.0), "elastic_sigma must be positive, got 0.0"),
        (dict(fill=float("nan")), "fill must be a finite number, got nan"),
    ],
)
def test_augmentation_validates_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        augment_batch(np.zeros((1, 4, 4)), 0, **kwargs)
    with pytest.raises(ValueError, match=message):
        Augmenter(**kwargs)


def test_augmentation_rejects_bad_shapes():
    with pytest.raises(ShapeError, match=r"image batch \(N, H, W\) or \(N, C, H, W\), got shape \(28, 28\)"):
        augment_batch(np.zeros((28, 28)), 0)
    with pytest.raises(ShapeError, match=r"shifts must be a scalar or have shape \(3, 2\)"):
        transform_images(np.zeros((3, 4, 4)), shifts=np.zeros((2, 2)))
    with pytest.raises(ShapeError, match=r"displacement must have shape \(3, 2, 4, 4\)"):
        transform_images(np.zeros((3, 4, 4)), displacement=np.zeros((3, 2, 4, 5)))


# --------------------------------------------------------------------------------------------------
# Early stopping (Algorithm 7.1)
# --------------------------------------------------------------------------------------------------


def test_stops_after_patience_bad_epochs_and_restores_the_best_parameters():
    W, b = np.zeros((2, 2)), np.zeros(2)
    params = {"W": W, "b": b}
    stopper = EarlyStopping(patience=3, mode="max")
    decisions = []
    for epoch, acc in enumerate([0.50, 0.60, 0.55, 0.60, 0.59, 0.70], start=1):
        W[...] = epoch  # the parameters after this epoch
        b[...] = -epoch
        decisions.append(stopper.step(acc, params))
        if decisions[-1]:
            break
    assert decisions == [False, False, False, False, True]  # 0.60 again is no improvement
    assert stopper.best_epoch == 2 and stopper.best_metric == 0.60 and stopper.stopped
    stopper.restore(params)
    assert params["W"] is W and params["b"] is b  # in place
    np.testing.assert_array_equal(W, 2)
    np.testing.assert_array_equal(b, -2)


def test_min_mode_with_min_delta_and_explicit_epochs():
    stopper = EarlyStopping(patience=2, mode="min", min_delta=0.01)
    params = [np.zeros(3)]
    assert not stopper.step(1.00, params, epoch=10)
    params[0][...] = 1
    assert not stopper.step(0.995, params, epoch=11)  # better, but not by more than min_delta
    params[0][...] = 2
    assert not stopper.step(0.98, params, epoch=12)  # a real improvement resets the count
    params[0][...] = 3
    assert not stopper.step(0.975, params, epoch=13)
    assert stopper.step(float("nan"), params, epoch=14)  # NaN never improves
    stopper.restore(params)
    np.testing.assert_array_equal(params[0], 2)
    assert stopper.best_epoch == 12 and stopper.best_metric == 0.98


def test_kept_parameters_are_copies():
    W = np.ones(3)
    stopper = EarlyStopping(patience=1)
    stopper.step(0.9, {"W": W})
    W[...] = 7
    stopper.step(0.5, {"W": W})
    stopper.restore({"W": W})
    np.testing.assert_array_equal(W, 1)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30), st.integers(1, 5))
def test_stop_time_and_best_follow_algorithm_7_1(metrics, patience):
    stopper = EarlyStopping(patience=patience)
    stop_at = None
    for i, m in enumerate(metrics, start=1):
        if stopper.step(m, [np.array([m])]):
            stop_at = i
            break
    seen = metrics[: stop_at or len(metrics)]
    assert stopper.best_metric == max(seen)
    assert stopper.best_epoch == seen.index(max(seen)) + 1  # the first time the best was reached
    if stop_at is not None:
        assert stop_at - stopper.best_epoch == patience
    else:
        assert len(metrics) - stopper.best_epoch < patience
    restored = [np.zeros(1)]
    stopper.restore(restored)
    assert restored[0][0] == max(seen)


def test_state_dict_round_trip_through_savez(tmp_path):
    stopper = EarlyStopping(patience=3, mode="min", min_delta=0.001)
    params = {"W": np.arange(4.0).reshape(2, 2)}
    stopper.step(1.0, params)
    params["W"] += 1
    stopper.step(0.5, params)
    params["W"] += 1
    stopper.step(0.7, params)
    np.savez(tmp_path / "es.npz", **stopper.state_dict())
    with np.load(tmp_path / "es.npz") as saved:
        resumed = EarlyStopping(patience=1)
        resumed.load_state_dict(dict(saved))
    assert repr(resumed) == repr(stopper)
    assert (resumed.best_metric, resumed.best_epoch, resumed.bad_epochs) == (0.5, 2, 1)
    assert not resumed.step(0.8, params) and resumed.step(0.9, params)
    resumed.restore(params)
    np.testing.assert_array_equal(params["W"], np.arange(4.0).reshape(2, 2) + 1)


def test_early_stopping_validation():
    for kwargs, message in [
        (dict(patience=0), "patience must be a positive integer, got 0"),
        (dict(patience=2.5), "patience must be a positive integer, got 2.5"),
        (dict(patience=2, mode="best"), "mode must be one of max, min; got 'best'"),
        (dict(patience=2, min_delta=-0.1), "min_delta must be non-negative, got -0.1"),
        (dict(patience=2, min_delta=float("inf")), "min_delta must be a non-negative finite number, got inf"),
    ]:
        with pytest.raises(ValueError, match=message):
            EarlyStopping(**kwargs)
    stopper = EarlyStopping(patience=2)
    with pytest.raises(RuntimeError, match="nothing to restore"):
        stopper.restore([np.zeros(1)])
    with pytest.raises(TypeError, match="must be a NumPy array"):
        stopper.step(0.5, [[1.0, 2.0]])
    stopper.step(0.5, {"W": np.zeros(2)})
    with pytest.raises(ValueError, match="params have names"):
        stopper.restore({"V": np.zeros(2)})
    with pytest.raises(ShapeError, match="has shape"):
        stopper.restore({"W": np.zeros(3)})
