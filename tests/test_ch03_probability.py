"""Chapter 3, probability and information theory: closed forms, NumPy's estimators, laws for all p."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from handgrad import ShapeError
from handgrad import ch03_probability as pr

PROPERTY = settings(max_examples=50, deadline=None)


def distributions(n):
    weights = hnp.arrays(np.float64, n, elements=st.floats(0, 1, allow_subnormal=False))
    return weights.filter(lambda w: w.sum() > 0).map(lambda w: w / w.sum())


pairs_of_distributions = st.integers(1, 8).flatmap(lambda n: st.tuples(distributions(n), distributions(n)))

JOINT = np.array([[0.10, 0.20, 0.05], [0.30, 0.15, 0.20]])  # P(x_i, y_j), x in {0, 1}, y in {0, 1, 2}


# --- mass functions, marginals, conditionals ----------------------------------------------------------------


def test_check_probs_accepts_and_converts():
    p = pr.check_probs([0, 1])
    assert p.dtype == np.float64 and p.tolist() == [0.0, 1.0]
    assert pr.check_probs(np.full(3, 1 / 3, np.float32)).dtype == np.float32
    np.testing.assert_array_equal(pr.check_probs(JOINT, axis=None), JOINT)
    columns = JOINT.T / JOINT.sum(axis=1)  # each column a distribution
    np.testing.assert_array_equal(pr.check_probs(columns, axis=0), columns)


@pytest.mark.parametrize(
    "p, kwargs, error, message",
    [
        ([0.5, -0.1, 0.6], {}, ValueError, r"negative entry -0.1 at index \(1,\)"),
        ([0.5, np.nan, 0.5], {}, ValueError, r"non-finite entry nan at index \(1,\)"),
        ([0.5, np.inf], {}, ValueError, r"non-finite entry inf at index \(1,\)"),
        ([0.5, 0.4], {}, ValueError, r"p sums to 0.9 along axis -1, expected 1"),
        ([[0.5, 0.5], [0.2, 0.2]], {}, ValueError, r"p sums to 0.4 along axis -1 at index \(1,\)"),
        (JOINT, {"axis": 0}, ValueError, r"p sums to 0.4 along axis 0 at index \(0,\)"),
        (JOINT * 2, {"axis": None}, ValueError, r"p sums to 2 along axis None, expected 1"),
        (0.5, {}, ShapeError, r"at least one axis, got shape \(\)"),
        ([], {}, ShapeError, r"non-empty array .* got shape \(0,\)"),
    ],
)
def test_check_probs_errors_name_the_value(p, kwargs, error, message):
    with pytest.raises(error, match=message):
        pr.check_probs(p, **kwargs)


def test_check_probs_tolerance():
    pr.check_probs([0.5, 0.5 + 1e-9])
    with pytest.raises(ValueError, match="sums to 1.001"):
        pr.check_probs([0.5, 0.501])
    pr.check_probs([0.5, 0.501], atol=1e-2)


def test_normalize_counts():
    np.testing.assert_allclose(pr.normalize([1, 3]), [0.25, 0.75])
    np.testing.assert_allclose(pr.normalize([[1, 1], [0, 2]]), [[0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(pr.normalize([[1, 1], [0, 2]], axis=None), [[0.25, 0.25], [0.0, 0.5]])
    with pytest.raises(ValueError, match=r"counts sum to 0 along axis -1 at index \(1, 0\)"):
        pr.normalize([[1, 1], [0, 0]])
    with pytest.raises(ValueError, match=r"finite and non-negative, got -1.0 at index \(1,\)"):
        pr.normalize([1, -1])


def test_marginal_sums_out_the_axis():
    np.testing.assert_allclose(pr.marginal(JOINT, axis=1), [0.35, 0.65])
    np.testing.assert_allclose(pr.marginal(JOINT, axis=0), [0.40, 0.35, 0.25])
    assert pr.marginal(JOINT, axis=(0, 1)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sums to 2"):
        pr.marginal(JOINT * 2, axis=0)


def test_conditional_obeys_the_product_rule():
    y_given_x = pr.conditional(JOINT, given_axis=0)  # [i, j] = P(y_j | x_i)
    x_given_y = pr.conditional(JOINT, given_axis=1)  # [i, j] = P(x_i | y_j)
    np.testing.assert_allclose(y_given_x.sum(axis=1), 1.0)
    np.testing.assert_allclose(x_given_y.sum(axis=0), 1.0)
    np.testing.assert_allclose(y_given_x * JOINT.sum(axis=1, keepdims=True), JOINT)
    np.testing.assert_allclose(x_given_y * JOINT.sum(axis=0, keepdims=True), JOINT)
    assert y_given_x[1, 2] == pytest.approx(0.20 / 0.65)


def test_conditional_on_a_three_way_table(rng):
    joint = rng.random((2, 3, 4))
    joint /= joint.sum()
    c = pr.conditional(joint, given_axis=-2)  # P(x, z | y)
    np.testing.assert_allclose(c.sum(axis=(0, 2)), 1.0)
    np.testing.assert_allclose(c * joint.sum(axis=(0, 2), keepdims=True), joint)


def test_conditional_errors():
    joint = np.array([[0.5, 0.0], [0.5, 0.0]])
    with pytest.raises(ValueError, match=r"P\(axis 1 = 1\) = 0"):
        pr.conditional(joint, given_axis=1)
    with pytest.raises(ShapeError, match=r"given_axis 2 is out of range for joint of shape \(2, 2\)"):
        pr.conditional(joint, given_axis=2)
    with pytest.raises(ShapeError, match=r"at least 2 axes, got shape \(2,\)"):
        pr.conditional([0.5, 0.5], given_axis=0)


# --- expectation, variance, covariance ----------------------------------------------------------------------


def test_fair_die_moments():
    faces, uniform = np.arange(1, 7), np.full(6, 1 / 6)
    assert pr.expectation(faces, uniform) == pytest.approx(3.5)
    assert pr.variance(faces, uniform) == pytest.approx(35 / 12)


def test_batched_expectation_and_variance():
    values = np.array([0.0, 1.0])
    p = np.array([[0.5, 0.5], [0.1, 0.9], [1.0, 0.0]])  # Bernoulli(φ): mean φ, variance φ(1 − φ)
    np.testing.assert_allclose(pr.expectation(values, p), [0.5, 0.9, 0.0])
    np.testing.assert_allclose(pr.variance(values, p), [0.25, 0.09, 0.0], atol=1e-15)
    np.testing.assert_allclose(pr.expectation(np.tile(values, (3, 1)), p), [0.5, 0.9, 0.0])


def test_variance_does_not_cancel_for_large_means():
    values = 1e9 + np.array([0.0, 1.0])
    assert pr.variance(values, [0.5, 0.5]) == pytest.approx(0.25, rel=1e-12)


def test_covariance_matches_definition_by_loops():
    x, y = np.array([-1.0, 2.0]), np.array([0.0, 1.0, 5.0])
    e_xy = sum(JOINT[i, j] * x[i] * y[j] for i in range(2) for j in range(3))
    e_x, e_y = JOINT.sum(axis=1) @ x, JOINT.sum(axis=0) @ y
    assert pr.covariance(x, y, JOINT) == pytest.approx(e_xy - e_x * e_y, rel=1e-12)
    independent = np.outer([0.3, 0.7], [0.2, 0.5, 0.3])
    assert pr.covariance(x, y, independent) == pytest.approx(0.0, abs=1e-15)


def test_moment_errors_name_shapes():
    with pytest.raises(
        ShapeError,
        match=r"expectation: values must have shape \(3,\) to match p \(3,\), "
        r"got \(2,\)",
    ):
        pr.expectation([1, 2], [0.2, 0.3, 0.5])
    with pytest.raises(
        ShapeError,
        match=r"variance: values must have shape \(2,\) or \(3, 2\) "
        r"to match p \(3, 2\), got \(3,\)",
    ):
        pr.variance([1, 2, 3], np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="negative entry"):
        pr.variance([1, 2], [1.5, -0.5])
    with pytest.raises(ShapeError, match=r"got x_values \(3,\), y_values \(3,\), joint \(2, 3\)"):
        pr.covariance([1, 2, 3], [1, 2, 3], JOINT)


def test_empirical_estimators_match_numpy(rng):
    x, y = rng.standard_normal(50), rng.standard_normal(50)
    X = rng.standard_normal((40, 3))
    assert pr.empirical_mean(x) == pytest.approx(np.mean(x), rel=1e-12)
    assert pr.empirical_variance(x) == pytest.approx(np.var(x, ddof=1), rel=1e-12)
    assert pr.empirical_covariance(x, y) == pytest.approx(np.cov(x, y)[0, 1], rel=1e-12)
    assert pr.empirical_covariance(x, x) == pytest.approx(pr.empirical_variance(x), rel=1e-12)
    np.testing.assert_allclose(pr.empirical_mean(X), X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(pr.empirical_variance(X), X.var(axis=0, ddof=1), rtol=1e-12)
    assert pr.empirical_variance([1.0, 3.0]) == 2.0  # unbiased: 2 / (2 − 1), not 2 / 2


def test_empirical_estimator_errors():
    with pytest.raises(
        ShapeError,
        match=r"empirical_variance: needs at least 2 sample\(s\) along axis 0, "
        r"got shape \(1,\)",
    ):
        pr.empirical_variance([1.0])
    with pytest.raises(ShapeError, match=r"empirical_mean: needs at least 1 sample\(s\).*got shape \(0,\)"):
        pr.empirical_mean([])
    with pytest.raises(ShapeError, match=r"same length, got \(3,\) and \(4,\)"):
        pr.empirical_covariance([1, 2, 3], [1, 2, 3, 4])


# --- information theory -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_entropy_of_uniform_is_log_n(n):
    assert pr.entropy(np.full(n, 1 / n)) == pytest.approx(np.log(n), abs=1e-12)


def test_known_values_and_zero_conventions():
    assert pr.entropy([1.0, 0.0]) == 0.0  # 0 log 0 = 0
    assert pr.entropy([0.5, 0.5, 0.0]) == pytest.approx(np.log(2))
    assert pr.kl_divergence([0.5, 0.5], [1.0, 0.0]) == float("inf")  # q = 0 < p
    assert pr.cross_entropy([0.5, 0.5], [1.0, 0.0]) == float("inf")
    assert pr.kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(np.log(2))  # p = 0 terms vanish
    assert pr.cross_entropy([0.0, 1.0], [0.0, 1.0]) == 0.0
    # Bernoulli closed form: KL(φ‖θ) = φ log(φ/θ) + (1 − φ) log((1 − φ)/(1 − θ)).
    phi, theta = 0.3, 0.6
    closed = phi * np.log(phi / theta) + (1 - phi) * np.log((1 - phi) / (1 - theta))
    assert pr.kl_divergence([phi, 1 - phi], [theta, 1 - theta]) == pytest.approx(closed, rel=1e-12)


def test_kl_divergence_with_tiny_q_does_not_overflow():
    q = np.array([1e-320, 1.0 - 1e-320])
    expected = 0.5 * (np.log(0.5) - np.log(1e-320)) + 0.5 * np.log(0.5)  # p/q = 5e319 would overflow
    assert pr.kl_divergence([0.5, 0.5], q) == pytest.approx(expected, rel=1e-9)


def test_information_measures_work_along_the_last_axis():
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.9, 0.1]])
    q = np.array([[0.5, 0.5], [0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(pr.entropy(p), [np.log(2), 0.0, -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))])
    np.testing.assert_allclose(pr.kl_divergence(p, q), [0.0, np.log(2), np.inf])
    np.testing.assert_allclose(pr.cross_entropy(p, q), [np.log(2), np.log(2), np.inf])


def test_information_measure_errors():
    with pytest.raises(
        ShapeError,
        match=r"kl_divergence: p and q must have the same shape, "
        r"got p \(2,\) and q \(3,\)",
    ):
        pr.kl_divergence([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(
        ShapeError,
        match=r"cross_entropy: p and q must have the same shape, "
        r"got p \(2, 2\) and q \(2,\)",
    ):
        pr.cross_entropy([[0.5, 0.5], [0.5, 0.5]], [0.5, 0.5])
    with pytest.raises(ValueError, match="p sums to 0.8"):
        pr.entropy([0.4, 0.4])


@PROPERTY
@given(pairs_of_distributions)
def test_kl_is_non_negative_and_zero_on_the_diagonal(pq):
    p, q = pq
    assert pr.kl_divergence(p, q) >= 0.0
    assert pr.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)


@PROPERTY
@given(st.integers(1, 10).flatmap(distributions))
def test_entropy_is_between_zero_and_log_n(p):
    assert -1e-12 <= pr.entropy(p) <= np.log(len(p)) + 1e-12


@PROPERTY
@given(pairs_of_distributions)
def test_cross_entropy_is_entropy_plus_kl(pq):
    p, q = pq
    np.testing.assert_allclose(
        pr.cross_entropy(p, q), pr.entropy(p) + pr.kl_divergence(p, q), rtol=1e-9, atol=1e-12
    )


# --- Gumbel-max sampling ------------------------------------------------------------------------------------


def softmax(z):
    e = np.exp(z - np.max(z))
    return e / e.sum()


def chi_square(draws, probs):
    counts = np.bincount(draws, minlength=len(probs))
    expected = len(draws) * np.asarray(probs)
    return float(np.sum((counts - expected) ** 2 / expected))


CHI2_DF4_P001 = 18.467  # upper 0.1% point of χ² with 4 degrees of freedom
CHI2_DF2_P001 = 13.816


def test_gumbel_max_frequencies_match_softmax():
    logits = np.array([1.0, 0.5, -0.3, 2.0, 0.0])
    draws = pr.sample_categorical(logits, size=200_000, rng=np.random.default_rng(12345))
    assert draws.shape == (200_000,) and draws.dtype == np.int64
    assert chi_square(draws, softmax(logits)) < CHI2_DF4_P001
    # The test has power: the same draws are far from the uniform distribution.
    assert chi_square(draws, np.full(5, 0.2)) > 100 * CHI2_DF4_P001


def test_gumbel_max_batched_rows_each_match_their_softmax():
    logits = np.array([[0.0, 1.0, -np.inf, 2.0], [3.0, -np.inf, 0.0, 0.0]])
    draws = pr.sample_categorical(logits, size=(100_000, 2), rng=np.random.default_rng(7))
    assert draws.shape == (100_000, 2)
    for row in range(2):
        probs = softmax(logits[row])
        assert not np.any(probs[draws[:, row]] == 0)  # a class with logit −inf is never drawn
        finite = probs > 0
        relabel = np.cumsum(finite) - 1
        assert chi_square(relabel[draws[:, row]], probs[finite]) < CHI2_DF2_P001


def test_sample_categorical_shapes_and_determinism():
    logits = [0.1, 0.2, 0.3]
    one = pr.sample_categorical(logits, rng=np.random.default_rng(0))
    assert isinstance(one, int) and 0 <= one < 3
    assert pr.sample_categorical(logits, size=(4, 5), rng=np.random.default_rng(0)).shape == (4, 5)
    np.testing.assert_array_equal(
        pr.sample_categorical(logits, size=50, rng=np.random.default_rng(3)),
        pr.sample_categorical(logits, size=50, rng=np.random.default_rng(3)),
    )
    batch = pr.sample_categorical(np.zeros((6, 3)), rng=np.random.default_rng(0))
    assert batch.shape == (6,) and batch.dtype == np.int64
    assert pr.sample_categorical([[0.0, -np.inf]], size=10, rng=np.random.default_rng(0)).tolist() == [0] * 10
    assert pr.sample_categorical([5.0]) == 0


@pytest.mark.parametrize(
    "logits, kwargs, error, message",
    [
        (
            np.zeros((2, 3)),
            {"size": 5},
            ShapeError,
            r"size \(5,\) must end with the batch shape \(2,\) of logits \(2, 3\)",
        ),
        (
            np.zeros((2, 3)),
            {"size": (5, 1)},
            ShapeError,
            r"size \(5, 1\) must end with the batch shape \(2,\)",
        ),
        (
            np.zeros((2, 3, 4)),
            {},
            ShapeError,
            r"logits must have shape \(K,\) or \(B, K\) with K >= 1, got \(2, 3, 4\)",
        ),
        (np.zeros(0), {}, ShapeError, r"got \(0,\)"),
        ([0.0, np.nan], {}, ValueError, r"finite or -inf, got nan at index \(1,\)"),
        ([0.0, np.inf], {}, ValueError, r"finite or -inf, got inf at index \(1,\)"),
        ([-np.inf, -np.inf], {}, ValueError, "all -inf"),
        ([0.0, 1.0], {"rng": 0}, TypeError, "rng must be a numpy.random.Generator or None, got int"),
    ],
)
def test_sample_categorical_errors(logits, kwargs, error, message):
    with pytest.raises(error, match=message):
        pr.sample_categorical(logits, **kwargs)
