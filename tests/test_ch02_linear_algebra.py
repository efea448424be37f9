"""Chapter 2, linear algebra: checked against NumPy's own linear algebra and closed forms."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from handgrad import ShapeError
from handgrad import ch02_linear_algebra as la

PROPERTY = settings(max_examples=50, deadline=None)


def small_int_matrices(min_side=1, max_side=5):
    """Float matrices with entries in {-4, …, 4}: exact ranks, no near-singular noise to trip tolerances."""
    shapes = hnp.array_shapes(min_dims=2, max_dims=2, min_side=min_side, max_side=max_side)
    return hnp.arrays(np.float64, shapes, elements=st.integers(-4, 4).map(float))


# --- shapes and validation ----------------------------------------------------------------------------------


def test_infer_shape_of_nested_lists_and_scalars():
    assert la.infer_shape(3.0) == ()
    assert la.infer_shape([1, 2, 3]) == (3,)
    assert la.infer_shape([[1, 2, 3], [4, 5, 6]]) == (2, 3)


def test_ensure_vector_and_matrix_convert_and_reject():
    v = la.ensure_vector([1, 2, 3])
    assert v.dtype == np.float64 and v.shape == (3,)
    assert la.ensure_matrix(np.ones((2, 2), np.float32)).dtype == np.float32
    with pytest.raises(ShapeError, match=r"x must be a vector \(1-D\), got shape \(2, 3\)"):
        la.ensure_vector(np.ones((2, 3)))
    with pytest.raises(ShapeError, match=r"X must be a matrix \(2-D\), got shape \(3,\)"):
        la.ensure_matrix([1, 2, 3])


def test_check_same_shape():
    assert la.check_same_shape(np.ones((2, 3)), np.zeros((2, 3))) == (2, 3)
    with pytest.raises(ShapeError, match=r"A is \(2, 3\), B is \(3, 2\)"):
        la.check_same_shape(np.ones((2, 3)), np.ones((3, 2)))


@PROPERTY
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4))
def test_check_broadcastable_agrees_with_numpy(shapes):
    a, b = shapes.input_shapes
    assert la.check_broadcastable(a, b) == np.broadcast_shapes(a, b) == shapes.result_shape


def test_check_broadcastable_errors_name_both_shapes():
    assert la.check_broadcastable((3, 1, 5), (4, 5)) == (3, 4, 5)
    with pytest.raises(ShapeError, match=r"\(2, 3\) and \(4,\) do not broadcast: axis -1 has 3 and 4"):
        la.check_broadcastable((2, 3), (4,))
    with pytest.raises(ShapeError, match=r"negative dimension: \(-1, 2\)"):
        la.check_broadcastable((-1, 2), (2,))
    with pytest.raises(ShapeError, match="not a shape"):
        la.check_broadcastable("ab", (2,))


# --- products -----------------------------------------------------------------------------------------------


def test_products_match_numpy(rng):
    A, B = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    v, w = rng.standard_normal(4), rng.standard_normal(4)
    np.testing.assert_allclose(la.mm(A, B), np.einsum("ik,kj->ij", A, B), rtol=1e-12)
    np.testing.assert_allclose(la.mv(A, v), np.einsum("ij,j->i", A, v), rtol=1e-12)
    assert la.vv(v, w) == pytest.approx(float(np.sum(v * w)), rel=1e-12)
    assert la.vv([1, 2, 3], [4, 5, 6]) == 32.0


def test_affine_map_equals_xw_plus_b_per_row(rng):
    X, W, b = rng.standard_normal((5, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2)
    expected = np.stack([x @ W + b for x in X])
    np.testing.assert_allclose(la.affine_map(X, W, b), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: la.mm(np.ones((2, 3)), np.ones((4, 5))),
            r"mm: inner dimensions differ: A is \(2, 3\), B is \(4, 5\)",
        ),
        (lambda: la.mm(np.ones(3), np.ones((3, 2))), r"mm: A must be a matrix \(2-D\), got shape \(3,\)"),
        (
            lambda: la.mv(np.ones((2, 3)), np.ones((3, 1))),
            r"mv: v must be a vector \(1-D\), got shape \(3, 1\)",
        ),
        (
            lambda: la.mv(np.ones((2, 3)), np.ones(2)),
            r"mv: inner dimensions differ: A is \(2, 3\), v is \(2,\)",
        ),
        (lambda: la.vv(np.ones(3), np.ones(4)), r"vv: lengths differ: a is \(3,\), b is \(4,\)"),
        (lambda: la.vv(np.ones((1, 3)), np.ones(3)), r"vv: a must be a vector \(1-D\), got shape \(1, 3\)"),
        (
            lambda: la.affine_map(np.ones((5, 3)), np.ones((4, 2)), np.ones(2)),
            r"affine_map: inner dimensions differ: X is \(5, 3\), W is \(4, 2\)",
        ),
        (
            lambda: la.affine_map(np.ones((5, 3)), np.ones((3, 2)), np.ones(1)),
            r"b must have shape \(2,\) to match W \(3, 2\), got \(1,\)",
        ),
        (
            lambda: la.affine_map(np.ones((5, 3)), np.ones((3, 2)), np.ones((1, 2))),
            r"affine_map: b must be a vector \(1-D\), got shape \(1, 2\)",
        ),
    ],
)
def test_product_errors_name_the_shapes(call, message):
    with pytest.raises(ShapeError, match=message):
        call()


# --- norms, SVD, conditioning -------------------------------------------------------------------------------


def test_norms_match_numpy(rng):
    x, A = rng.standard_normal(7), rng.standard_normal((4, 3))
    assert la.norm_l1(x) == pytest.approx(np.linalg.norm(x, 1), rel=1e-12)
    assert la.norm_l2(x) == pytest.approx(np.linalg.norm(x, 2), rel=1e-12)
    assert la.norm_frobenius(A) == pytest.approx(np.linalg.norm(A, "fro"), rel=1e-12)
    assert la.spectral_norm(A) == pytest.approx(np.linalg.norm(A, 2), rel=1e-12)
    assert la.norm_l2([3, 4]) == 5.0 and la.norm_l1([3, -4]) == 7.0 and la.norm_l2([0, 0]) == 0.0


def test_l2_norm_neither_overflows_nor_underflows():
    assert la.norm_l2([3e200, 4e200]) == pytest.approx(5e200, rel=1e-14)
    assert la.norm_l2([3e-200, 4e-200]) == pytest.approx(5e-200, rel=1e-14)
    assert la.norm_frobenius([[3e200], [4e200]]) == pytest.approx(5e200, rel=1e-14)


def test_norm_errors():
    with pytest.raises(ShapeError, match=r"norm_l2: x must be a vector \(1-D\), got shape \(2, 2\)"):
        la.norm_l2(np.eye(2))
    with pytest.raises(ShapeError, match=r"norm_frobenius: A must be a matrix \(2-D\), got shape \(4,\)"):
        la.norm_frobenius(np.ones(4))


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (1, 6)])
def test_svd_thin_reconstructs_and_is_orthonormal(rng, shape):
    A = rng.standard_normal(shape)
    U, S, Vt = la.svd_thin(A)
    k = min(shape)
    assert U.shape == (shape[0], k) and S.shape == (k,) and Vt.shape == (k, shape[1])
    np.testing.assert_allclose(U @ np.diag(S) @ Vt, A, atol=1e-12)
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-12)
    np.testing.assert_allclose(Vt @ Vt.T, np.eye(k), atol=1e-12)
    assert np.all(np.diff(S) <= 0)
    np.testing.assert_allclose(S, np.linalg.svd(A, compute_uv=False), rtol=1e-12)


def test_svd_rejects_empty_matrix():
    with pytest.raises(ShapeError, match=r"svd_thin: A is empty, shape \(0, 3\)"):
        la.svd_thin(np.ones((0, 3)))


@pytest.mark.parametrize("shape", [(4, 4), (6, 3), (3, 6)])
def test_condition_number_matches_numpy(rng, shape):
    A = rng.standard_normal(shape)
    assert la.condition_number(A) == pytest.approx(np.linalg.cond(A), rel=1e-10)
    hilbert = 1.0 / (np.arange(6)[:, None] + np.arange(6)[None, :] + 1)
    assert la.condition_number(hilbert) == pytest.approx(np.linalg.cond(hilbert), rel=1e-6)


def test_condition_number_of_singular_matrices_is_inf():
    assert la.condition_number([[1, 2], [2, 4]]) == float("inf")
    assert la.condition_number(np.zeros((3, 3))) == float("inf")
    assert la.condition_number(np.eye(3)) == 1.0
    assert la.condition_number(np.diag([10.0, 1.0, 0.5])) == pytest.approx(20.0)


# --- pseudoinverse and least squares ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)])
def test_pinv_matches_numpy(rng, shape):
    A = rng.standard_normal(shape)
    np.testing.assert_allclose(la.pinv(A), np.linalg.pinv(A), rtol=1e-10, atol=1e-12)


def test_pinv_of_rank_deficient_matrix_matches_numpy():
    A = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]])  # rank 2
    np.testing.assert_allclose(la.pinv(A, rcond=1e-10), np.linalg.pinv(A, rcond=1e-10), atol=1e-12)
    np.testing.assert_allclose(la.pinv(np.zeros((2, 3))), np.zeros((3, 2)))


@PROPERTY
@given(small_int_matrices())
def test_pinv_satisfies_the_four_moore_penrose_conditions(A):
    # rcond=1e-10 separates exact zeros (computed ~1e-15·σ_max) from the smallest true σ of these matrices.
    P = la.pinv(A, rcond=1e-10)
    assert P.shape == A.shape[::-1]
    scale = 1.0 + np.abs(A).max() + np.abs(P).max()
    tol = 1e-9 * scale**3
    np.testing.assert_allclose(A @ P @ A, A, atol=tol)
    np.testing.assert_allclose(P @ A @ P, P, atol=tol)
    np.testing.assert_allclose((A @ P).T, A @ P, atol=tol)
    np.testing.assert_allclose((P @ A).T, P @ A, atol=tol)


def test_pinv_rejects_bad_rcond():
    with pytest.raises(ValueError, match="pinv: rcond must be non-negative, got -1"):
        la.pinv(np.eye(2), rcond=-1)


def test_lstsq_min_norm_on_underdetermined_system(rng):
    A, b = rng.standard_normal((3, 6)), rng.standard_normal(3)
    x = la.lstsq_min_norm(A, b)
    expected = np.linalg.lstsq(A, b, rcond=None)[0]
    np.testing.assert_allclose(x, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(A @ x, b, atol=1e-12)
    # Minimum norm: adding any null-space direction solves Ax = b too but is longer.
    null_direction = np.linalg.svd(A)[2][-1]
    assert la.norm_l2(x) < la.norm_l2(x + 0.1 * null_direction)


def test_lstsq_min_norm_overdetermined_and_matrix_rhs(rng):
    A, B = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    np.testing.assert_allclose(la.lstsq_min_norm(A, B), np.linalg.lstsq(A, B, rcond=None)[0], rtol=1e-10)


def test_lstsq_min_norm_shape_error():
    with pytest.raises(
        ShapeError,
        match=r"b must have shape \(3,\) or \(3, k\) to match A \(3, 6\), "
        r"got \(4,\)",
    ):
        la.lstsq_min_norm(np.ones((3, 6)), np.ones(4))


# --- trace and determinant ----------------------------------------------------------------------------------


def test_trace_det_logdet_match_numpy(rng):
    A = rng.standard_normal((5, 5))
    assert la.trace(A) == pytest.approx(float(np.sum(np.diag(A))), rel=1e-12)
    sign, log_abs = np.linalg.slogdet(A)
    assert la.det(A) == pytest.approx(sign * np.exp(log_abs), rel=1e-10)
    spd = A @ A.T + np.eye(5)
    assert la.logdet(spd) == pytest.approx(np.linalg.slogdet(spd)[1], rel=1e-12)
    assert la.logdet(spd) == pytest.approx(float(np.sum(np.log(np.linalg.eigvalsh(spd)))), rel=1e-10)


def test_logdet_stays_finite_where_det_overflows():
    A = np.eye(400) * 10.0  # det = 1e400 overflows float64
    with np.errstate(over="ignore"):
        assert la.det(A) == float("inf")
    assert la.logdet(A) == pytest.approx(400 * np.log(10.0), rel=1e-12)


def test_logdet_errors_say_zero_or_negative():
    with pytest.raises(ValueError, match=r"det\(A\) = 0 \(A \(2, 2\) is singular\)"):
        la.logdet([[1.0, 2.0], [2.0, 4.0]])
    with pytest.raises(ValueError, match=r"det\(A\) < 0 .*log\|det\(A\)\| = 0.693147.*not real"):
        la.logdet([[0.0, 1.0], [2.0, 0.0]])  # det = -2


@pytest.mark.parametrize("fn", [la.trace, la.det, la.logdet])
def test_square_matrix_functions_reject_non_square(fn):
    with pytest.raises(ShapeError, match=rf"{fn.__name__}: A must be square, got shape \(2, 3\)"):
        fn(np.ones((2, 3)))
    with pytest.raises(ShapeError, match=rf"{fn.__name__}: A must be a matrix \(2-D\), got shape \(4,\)"):
        fn(np.ones(4))


# --- PCA ----------------------------------------------------------------------------------------------------


def correlated_data(rng, n=200, d=5):
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + rng.standard_normal(d)


def test_pca_matches_eigendecomposition_of_covariance(rng):
    X = correlated_data(rng)
    pca = la.PCA(3).fit(X)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(X, rowvar=False))
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    np.testing.assert_allclose(pca.explained_variance_, eigenvalues[:3], rtol=1e-10)
    np.testing.assert_allclose(pca.explained_variance_ratio_, eigenvalues[:3] / eigenvalues.sum(), rtol=1e-10)
    # Components are eigenvectors up to sign: |cos angle| = 1.
    cosines = np.sum(pca.components_ * eigenvectors[:, :3].T, axis=1)
    np.testing.assert_allclose(np.abs(cosines), 1.0, rtol=1e-9)
    np.testing.assert_allclose(pca.mean_, X.mean(axis=0), rtol=1e-12)
    assert pca.components_.shape == (3, 5)


def test_pca_transform_projects_and_is_deterministic(rng):
    X = correlated_data(rng)
    pca = la.PCA(2)
    Z = pca.fit_transform(X)
    assert Z.shape == (200, 2)
    np.testing.assert_allclose(Z, (X - X.mean(axis=0)) @ pca.components_.T, rtol=1e-12)
    np.testing.assert_allclose(Z.var(axis=0, ddof=1), pca.explained_variance_, rtol=1e-10)
    largest = pca.components_[np.arange(2), np.abs(pca.components_).argmax(axis=1)]
    assert np.all(largest > 0)
    np.testing.assert_allclose(la.PCA(2).fit(X[::-1]).components_, pca.components_, atol=1e-10)


def test_pca_all_components_explain_everything(rng):
    pca = la.PCA(5).fit(correlated_data(rng))
    assert pca.explained_variance_ratio_.sum() == pytest.approx(1.0, rel=1e-12)
    assert la.PCA(1).fit(np.ones((4, 3))).explained_variance_ratio_.tolist() == [0.0]


@PROPERTY
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=7),
        elements=st.floats(-100, 100, allow_subnormal=False),
    )
)
def test_pca_with_all_components_reconstructs_x(X):
    pca = la.PCA(min(X.shape)).fit(X)
    np.testing.assert_allclose(pca.inverse_transform(pca.transform(X)), X, atol=1e-9 * (1 + np.abs(X).max()))


def test_pca_errors():
    with pytest.raises(ValueError, match="n_components must be a positive integer, got 0"):
        la.PCA(0)
    with pytest.raises(ValueError, match="n_components must be a positive integer, got 1.5"):
        la.PCA(1.5)
    with pytest.raises(
        ValueError,
        match=r"n_components=4 must be <= min\(n_samples, n_features\) = 3 "
        r"for X of shape \(3, 5\)",
    ):
        la.PCA(4).fit(np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"at least 2 samples.*shape \(1, 5\)"):
        la.PCA(1).fit(np.ones((1, 5)))
    with pytest.raises(ValueError, match="not fitted yet"):
        la.PCA(1).transform(np.ones((3, 5)))
    pca = la.PCA(2).fit(np.random.default_rng(1).standard_normal((10, 4)))
    with pytest.raises(ShapeError, match=r"PCA.transform: expects X of shape \(N, 4\), got \(3, 5\)"):
        pca.transform(np.ones((3, 5)))
    with pytest.raises(ShapeError, match=r"PCA.inverse_transform: expects Z of shape \(N, 2\), got \(3, 3\)"):
        pca.inverse_transform(np.ones((3, 3)))
    with pytest.raises(ShapeError, match=r"PCA.fit: X must be a matrix \(2-D\), got shape \(4,\)"):
        la.PCA(1).fit(np.ones(4))
