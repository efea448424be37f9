"""Chapter 4: floating point utilities, stable formulations (eqs. 9–11) and gradient checking (eq. 12)."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from handgrad import ShapeError
from handgrad.ch04_numerical import (
    check_grad,
    exp_safe_range,
    kahan_sum,
    log_softmax,
    logsumexp,
    machine_epsilon,
    numerical_gradient,
    sigmoid,
    softmax,
    softplus,
    ulp,
)

FLOATS = [np.float16, np.float32, np.float64]
finite64 = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False)


class strict:
    """Turn every floating point warning into an error for the duration of a block."""

    def __enter__(self):
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("error")
        self._e = np.errstate(over="raise", divide="raise", invalid="raise")
        self._e.__enter__()

    def __exit__(self, *exc):
        self._e.__exit__(*exc)
        self._w.__exit__(*exc)


def naive_logsumexp(x, axis=-1):
    return np.log(np.sum(np.exp(np.asarray(x, dtype=np.float64)), axis=axis))


# --- the floating point grid ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_machine_epsilon_matches_finfo(dtype):
    assert machine_epsilon(dtype) == float(np.finfo(dtype).eps)


def test_machine_epsilon_known_values():
    assert machine_epsilon(np.float64) == 2.0**-52
    assert machine_epsilon(np.float32) == 2.0**-23


def test_machine_epsilon_rejects_integer_dtype():
    with pytest.raises(ValueError, match="int64"):
        machine_epsilon(np.int64)


@pytest.mark.parametrize("dtype", FLOATS)
def test_exp_safe_range_matches_finfo(dtype):
    lo, hi = exp_safe_range(dtype)
    info = np.finfo(dtype)
    assert lo == pytest.approx(math.log(float(info.tiny)), rel=1e-15)
    assert hi == pytest.approx(math.log(float(info.max)), rel=1e-15)


def test_exp_safe_range_float64_numbers():
    lo, hi = exp_safe_range(np.float64)
    assert lo == pytest.approx(-708.3964185322641, abs=1e-12)
    assert hi == pytest.approx(709.782712893384, abs=1e-12)


def test_ulp_is_spacing_made_absolute():
    eps = np.finfo(np.float64).eps
    assert ulp(1.0) == eps
    assert ulp(-2.0) == 2 * eps
    assert ulp(0.0) == np.finfo(np.float64).smallest_subnormal
    x = np.array([1.0, -1024.0, 3e38], dtype=np.float32)
    u = ulp(x)
    assert u.dtype == np.float32
    np.testing.assert_array_equal(u, np.abs(np.spacing(x)))
    assert np.all(u > 0)


# --- Neumaier summation -----------------------------------------------------------------------------


def naive_float32_sum(x):
    return float(np.cumsum(x, dtype=np.float32)[-1])  # strictly left to right, one rounding per term


def test_kahan_sum_small_terms_after_a_large_one():
    x = np.array([1.0] + [1e-8] * 20_000, dtype=np.float32)
    exact = math.fsum(x.astype(np.float64))
    naive_err = abs(naive_float32_sum(x) - exact)
    kahan_err = abs(kahan_sum(x) - exact)
    assert naive_err > 1e-4  # every 1e-8 is rounded away: naive gives 1.0
    assert kahan_err <= np.spacing(np.float32(exact))
    assert kahan_err * 1000 < naive_err


def test_kahan_sum_cancellation():
    # Neumaier's case: the small term is added while the big ones cancel; plain Kahan also fails here.
    x = np.array([1e8, 1.0, -1e8] * 1000, dtype=np.float32)
    exact = math.fsum(x.astype(np.float64))
    assert exact == 1000.0
    assert abs(naive_float32_sum(x) - exact) >= 500
    assert kahan_sum(x) == exact


def test_kahan_sum_random_float64_matches_fsum(rng):
    x = rng.standard_normal(5000) * 10.0 ** rng.integers(-8, 8, 5000)
    assert kahan_sum(x) == pytest.approx(math.fsum(x), rel=1e-15, abs=1e-15)
    assert kahan_sum([1, 2, 3]) == 6.0


# --- logsumexp (eq. 9) ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, axis", [((7,), -1), ((4, 5), -1), ((4, 5), 0), ((2, 3, 4), 1)])
def test_logsumexp_matches_naive_float64(rng, shape, axis):
    x = rng.normal(scale=3.0, size=shape)
    np.testing.assert_allclose(logsumexp(x, axis=axis), naive_logsumexp(x, axis=axis), rtol=1e-13)
    kept = logsumexp(x, axis=axis, keepdims=True)
    assert kept.shape == tuple(1 if i == axis % len(shape) else n for i, n in enumerate(shape))


def test_logsumexp_keeps_float32(rng):
    x = rng.normal(size=(6, 10)).astype(np.float32)
    out = logsumexp(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, naive_logsumexp(x), rtol=1e-6)
    assert logsumexp(np.array([1, 2, 3])) == pytest.approx(math.log(math.exp(1) + math.exp(2) + math.exp(3)))


@pytest.mark.parametrize(
    "x, expected",
    [
        ([1e4, 1e4], 1e4 + math.log(2)),
        ([1e4, -1e4], 1e4),
        ([-1e4, -1e4], -1e4 + math.log(2)),
        ([1e4, 1e4 - 1.0, 1e4 - 2.0], 1e4 + math.log(1 + math.exp(-1) + math.exp(-2))),
        ([-1e300, -1e300, 0.0], 0.0),
    ],
)
def test_logsumexp_extreme_float64_closed_form(x, expected):
    with strict():
        assert logsumexp(np.array(x)) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    "x, expected",
    [([3e38, 3e38], 3e38), ([-3e38, -3e38], -3e38), ([3e38, -3e38], 3e38), ([1e4, -1e4], 1e4)],
)
def test_logsumexp_extreme_float32_finite(x, expected):
    with strict():
        out = logsumexp(np.array(x, dtype=np.float32), keepdims=True)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert out[0] == np.float32(expected)


def test_logsumexp_infinite_rows_follow_the_limits():
    x = np.array([[-np.inf, -np.inf, -np.inf], [np.inf, 1e4, 0.0], [-np.inf, 0.0, -np.inf]], dtype=np.float32)
    with strict():
        out = logsumexp(x)
    assert out[0] == -np.inf
    assert out[1] == np.inf
    assert out[2] == 0.0
    assert not np.isnan(out).any()


# --- softmax and log_softmax (eq. 10) -----------------------------------------------------------------


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-14), (np.float32, 1e-6)])
def test_softmax_rows_sum_to_one(rng, dtype, tol):
    x = (rng.normal(size=(50, 10)) * 10.0 ** rng.integers(-2, 5, (50, 1))).astype(dtype)
    p = softmax(x)
    assert p.dtype == dtype
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=tol)
    assert (p >= 0).all()


def test_softmax_matches_closed_form_and_axis(rng):
    x = rng.normal(size=(3, 4))
    expected = np.exp(x) / np.exp(x).sum(axis=0, keepdims=True)
    np.testing.assert_allclose(softmax(x, axis=0), expected, rtol=1e-14)


def test_softmax_extremes_without_warnings():
    with strict():
        p = softmax(np.array([[1e4, -1e4], [3e38, -3e38]], dtype=np.float32))
        q = softmax(np.array([0.0, math.log(3.0)]) + 1e4)
    np.testing.assert_array_equal(p, [[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(q, [0.25, 0.75], rtol=1e-12)


def test_log_softmax_equals_log_of_softmax(rng):
    x = rng.normal(scale=2.0, size=(5, 7))
    np.testing.assert_allclose(log_softmax(x), np.log(softmax(x)), rtol=1e-13)
    np.testing.assert_allclose(log_softmax(x, axis=0), x - naive_logsumexp(x, axis=0), rtol=1e-13)


def test_log_softmax_invariant_to_a_constant_per_row(rng):
    x = rng.normal(size=(8, 6))
    c = rng.uniform(-1e3, 1e3, size=(8, 1))
    np.testing.assert_allclose(log_softmax(x + c), log_softmax(x), atol=1e-11)


def test_log_softmax_extremes_are_finite():
    with strict():
        out = log_softmax(np.array([1e4, 0.0, -1e4], dtype=np.float32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([0.0, -1e4, -2e4], dtype=np.float32))


# --- softplus (eq. 11) and sigmoid -------------------------------------------------------------------


def test_softplus_matches_closed_form(rng):
    x = rng.uniform(-30, 30, size=200)
    np.testing.assert_allclose(softplus(x), np.log1p(np.exp(x)), rtol=1e-13)
    assert softplus(0.0) == pytest.approx(math.log(2.0), rel=1e-16)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_finite_at_the_dtype_extremes(dtype):
    big = np.finfo(dtype).max
    x = np.array([-big, -1e4, 1e4, big], dtype=dtype)
    with strict():
        out = softplus(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.array([0.0, 0.0, 1e4, big], dtype=dtype))


@given(finite64)
def test_softplus_difference_identity(x):
    # softplus(x) - softplus(-x) = x for all x
    assert softplus(x) - softplus(-x) == pytest.approx(x, rel=1e-15, abs=1e-15)


def test_sigmoid_matches_closed_form(rng):
    x = rng.uniform(-30, 30, size=200)
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    assert sigmoid(0.0) == 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_extremes(dtype):
    big = np.finfo(dtype).max
    with strict():
        out = sigmoid(np.array([-big, -1e4, 1e4, big], dtype=dtype))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, [0.0, 0.0, 1.0, 1.0])
    assert sigmoid(-700.0) == pytest.approx(math.exp(-700.0), rel=1e-13)  # not rounded to 0


@given(finite64)
def test_sigmoid_symmetry(x):
    with strict():
        assert sigmoid(-x) == pytest.approx(1.0 - sigmoid(x), abs=2e-16)


def test_sigmoid_is_the_derivative_of_softplus(rng):
    x = rng.uniform(-5, 5, size=(3, 4))
    np.testing.assert_allclose(numerical_gradient(lambda v: np.sum(softplus(v)), x), sigmoid(x), atol=1e-9)


# --- gradient checking (eq. 12) ----------------------------------------------------------------------


def test_numerical_gradient_of_a_quadratic(rng):
    A = rng.normal(size=(6, 6))
    b = rng.normal(size=6)
    x = rng.normal(size=6)

    def f(v):
        return 0.5 * v @ A @ v + b @ v

    np.testing.assert_allclose(numerical_gradient(f, x), 0.5 * (A + A.T) @ x + b, atol=1e-8)


def test_numerical_gradient_of_sin_on_an_nd_array(rng):
    x = rng.normal(size=(2, 3, 4))
    before = x.copy()
    g = numerical_gradient(lambda v: np.sum(np.sin(v)), x)
    assert g.shape == x.shape
    np.testing.assert_allclose(g, np.cos(x), atol=1e-8)
    np.testing.assert_array_equal(x, before)  # every perturbation was undone


def test_numerical_gradient_perturbs_in_place_for_closures(rng):
    W = rng.normal(size=(3, 2))
    X = rng.normal(size=(4, 3))
    g = numerical_gradient(lambda _: np.sum((X @ W) ** 2), W)
    np.testing.assert_allclose(g, 2 * X.T @ (X @ W), atol=1e-7)


def test_numerical_gradient_restores_x_when_f_raises():
    x = np.array([1.0, 2.0])

    def f(v):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        numerical_gradient(f, x)
    np.testing.assert_array_equal(x, [1.0, 2.0])


def test_numerical_gradient_list_input_and_errors():
    np.testing.assert_allclose(numerical_gradient(lambda v: np.sum(v**2), [1, 2]), [2.0, 4.0], atol=1e-8)
    with pytest.raises(ValueError, match=r"eps must be positive, got 0.0"):
        numerical_gradient(np.sum, np.ones(2), eps=0.0)
    with pytest.raises(ValueError, match="eps must be a positive finite number, got nan"):
        numerical_gradient(np.sum, np.ones(2), eps=float("nan"))
    with pytest.raises(ShapeError, match=r"\(2,\)"):
        numerical_gradient(lambda v: v * 2, np.ones(2))


def test_check_grad_separates_right_from_wrong(rng):
    x = rng.normal(size=(3, 3))

    def f(v):
        return np.sum(np.sin(v))

    assert check_grad(f, np.cos, x) < 1e-8
    assert check_grad(f, lambda v: 2 * np.cos(v), x) > 0.1
    assert check_grad(f, lambda v: -np.sin(v), x) > 0.1
    assert isinstance(check_grad(f, np.cos, x), float)


def test_check_grad_rejects_a_gradient_of_the_wrong_shape():
    with pytest.raises(ShapeError, match=r"\(3,\).*\(2,\)"):
        check_grad(np.sum, lambda v: np.ones(2), np.ones(3))
