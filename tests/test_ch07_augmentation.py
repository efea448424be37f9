"""Chapter 7, augmentation.py: dataset augmentation (§7.4) against exact shifts, rot90 and the centre of
mass.
"""

import numpy as np
import pytest

from handgrad import ShapeError
from handgrad.ch07_regularization import Augmenter, augment_batch, elastic_displacement, transform_images
from handgrad.ch07_regularization.augmentation import _bilinear, _source_points


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


def four_weight_bilinear(flat, ys, xs, H, W, fill):
    """The bilinear read as ``_bilinear``'s docstring writes it: the four neighbours' weighted sum, each
    neighbour outside the image masked out and its weight given to ``fill``."""
    y0, x0 = np.floor(ys), np.floor(xs)
    u, v = ys - y0, xs - x0
    y0, x0 = y0.astype(int), x0.astype(int)
    out = np.zeros(flat.shape[:2] + ys.shape[1:])
    for dy, w_y in ((0, 1 - u), (1, u)):
        for dx, w_x in ((0, 1 - v), (1, v)):
            iy, ix = y0 + dy, x0 + dx
            inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
            index = np.clip(iy, 0, H - 1) * W + np.clip(ix, 0, W - 1)
            value = np.where(inside[:, None, :], np.take_along_axis(flat, index[:, None, :], axis=2), fill)
            out += value * (w_y * w_x)[:, None, :]
    return out


@pytest.mark.parametrize("channels, H, W", [(1, 28, 28), (3, 5, 7), (2, 1, 4)])
@pytest.mark.parametrize("fill", [0.0, -0.42])
def test_padded_bilinear_equals_the_four_weight_form(channels, H, W, fill, rng):
    """Points inside, on the border, just outside and far outside (where the fast form clips them)."""
    N, P = 6, 300
    flat = rng.standard_normal((N, channels, H * W))
    ys = rng.uniform(-4, H + 3, (N, P))
    xs = rng.uniform(-4, W + 3, (N, P))
    ys[:, :20], xs[:, 20:40] = np.round(ys[:, :20]), -1.0  # integer rows, and the column just outside
    ys[:, 40:60], xs[:, 60:80] = H - 1, W - 0.5
    np.testing.assert_allclose(
        _bilinear(flat, ys, xs, H, W, fill), four_weight_bilinear(flat, ys, xs, H, W, fill), atol=1e-13
    )
    flat32 = flat.astype(np.float32)
    got = _bilinear(flat32, ys, xs, H, W, fill)
    assert got.dtype == np.float32
    np.testing.assert_allclose(
        got, four_weight_bilinear(flat32.astype(np.float64), ys, xs, H, W, fill), atol=2e-6
    )


def test_source_points_are_the_docstrings_affine_map(rng):
    """s(p) = c + R(θ)ᵀ (p − c − t) for every pixel, against the formula evaluated point by point."""
    N, H, W = 4, 5, 7
    t, theta = rng.uniform(-2, 2, (N, 2)), rng.uniform(-np.pi, np.pi, N)
    ys, xs = _source_points(H, W, t, theta)
    c = np.array([(H - 1) / 2, (W - 1) / 2])
    for n in range(N):
        cos, sin = np.cos(theta[n]), np.sin(theta[n])
        R = np.array([[cos, -sin], [sin, cos]])
        for r in range(H):
            for col in range(W):
                s = c + R.T @ (np.array([r, col]) - c - t[n])
                np.testing.assert_allclose((ys[n, r * W + col], xs[n, r * W + col]), s, atol=1e-12)
