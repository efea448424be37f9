"""Chapter 2 of the book: linear algebra (design report §3.1, eqs. 1–5).

Sections covered: scalars, vectors, matrices and tensors (§2.1); multiplying matrices and vectors (§2.2);
norms (§2.5); the singular value decomposition (§2.8); the Moore–Penrose pseudoinverse (§2.9); the trace
(§2.10); the determinant (§2.11); principal components analysis (§2.12).

Every function accepts array-likes and returns NumPy arrays or Python floats. Integer and boolean input is
converted to float64; float32 stays float32. Shape problems raise ``handgrad.ShapeError`` with a message
naming the shapes, and nothing broadcasts where the maths does not: ``mv`` wants a vector, ``mm`` two
matrices, ``affine_map`` a bias of exactly ``(out,)``.
"""

import numpy as np

from handgrad import ShapeError
from handgrad._checks import check_int, check_number

__all__ = [
    "as_float_array",
    "infer_shape",
    "ensure_vector",
    "ensure_matrix",
    "check_same_shape",
    "check_broadcastable",
    "mm",
    "mv",
    "vv",
    "affine_map",
    "norm_l1",
    "norm_l2",
    "norm_frobenius",
    "spectral_norm",
    "svd_thin",
    "condition_number",
    "pinv",
    "lstsq_min_norm",
    "trace",
    "det",
    "logdet",
    "PCA",
]


# --- §2.1 Shapes and validation -----------------------------------------------------------------------------


def as_float_array(x, default_dtype=np.float64):
    """x as an array of a floating dtype: floating inputs keep theirs (no copy), integers and booleans
    become ``default_dtype``. Every later chapter converts its inputs with this one function."""
    x = np.asarray(x)
    if x.dtype.kind not in "fc":  # (a dtype.kind test: np.issubdtype costs microseconds per mini-batch)
        x = x.astype(default_dtype)
    return x


def _with_ndim(x, ndim, who, name):
    x = as_float_array(x)
    if x.ndim != ndim:
        kind = {1: "a vector (1-D)", 2: "a matrix (2-D)"}[ndim]
        raise ShapeError(f"{who}: {name} must be {kind}, got shape {x.shape}")
    return x


def _square(A, who, name="A"):
    A = _with_ndim(A, 2, who, name)
    if A.shape[0] != A.shape[1]:
        raise ShapeError(f"{who}: {name} must be square, got shape {A.shape}")
    return A


def infer_shape(x):
    """The shape of an array-like as a tuple of ints (book §2.1): a scalar is (), a vector (n,), …"""
    return tuple(np.shape(x))


def ensure_vector(x, name="x"):
    """Return x as a 1-D float array, or raise ShapeError naming its shape (book §2.1)."""
    return _with_ndim(x, 1, "ensure_vector", name)


def ensure_matrix(X, name="X"):
    """Return X as a 2-D float array, or raise ShapeError naming its shape (book §2.1)."""
    return _with_ndim(X, 2, "ensure_matrix", name)


def check_same_shape(A, B):
    """Return the common shape of A and B, or raise ShapeError naming both (element-wise ops, book §2.1)."""
    a_shape, b_shape = infer_shape(A), infer_shape(B)
    if a_shape != b_shape:
        raise ShapeError(f"check_same_shape: shapes differ: A is {a_shape}, B is {b_shape}")
    return a_shape


def _as_shape(shape, name):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ShapeError(f"check_broadcastable: {name} is not a shape (a tuple of ints): {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ShapeError(f"check_broadcastable: {name} has a negative dimension: {dims}")
    return dims


def check_broadcastable(a_shape, b_shape):
    """The shape NumPy broadcasting gives for shapes a and b (book §2.1), or ShapeError naming both.

    Align the shapes at their last axis (missing leading axes count as 1); each aligned pair must be equal
    or contain a 1, and the result takes the larger. ``(3, 1, 5)`` and ``(4, 5)`` give ``(3, 4, 5)``.
    """
    a, b = _as_shape(a_shape, "a_shape"), _as_shape(b_shape, "b_shape")
    n = max(len(a), len(b))
    a_padded, b_padded = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for axis, (da, db) in enumerate(zip(a_padded, b_padded)):
        if da != db and 1 not in (da, db):
            raise ShapeError(
                f"check_broadcastable: shapes {a} and {b} do not broadcast: axis {axis - n} has {da} and {db}"
            )
        out.append(db if da == 1 else da)
    return tuple(out)


# --- §2.2 Products ------------------------------------------------------------------------------------------


def mm(A, B):
    """Matrix product C = AB, C_ij = Σ_k A_ik B_kj (book §2.2).  Shapes: (m, n) @ (n, p) -> (m, p)."""
    A, B = _with_ndim(A, 2, "mm", "A"), _with_ndim(B, 2, "mm", "B")
    if A.shape[1] != B.shape[0]:
        raise ShapeError(f"mm: inner dimensions differ: A is {A.shape}, B is {B.shape}")
    return A @ B


def mv(A, v):
    """Matrix-vector product Av, (Av)_i = Σ_j A_ij v_j (book §2.2).  Shapes: (m, n) @ (n,) -> (m,)."""
    A, v = _with_ndim(A, 2, "mv", "A"), _with_ndim(v, 1, "mv", "v")
    if A.shape[1] != v.shape[0]:
        raise ShapeError(f"mv: inner dimensions differ: A is {A.shape}, v is {v.shape}")
    return A @ v


def vv(a, b):
    """Dot product aᵀb = Σ_i a_i b_i of two vectors of the same length (book §2.2), as a float."""
    a, b = _with_ndim(a, 1, "vv", "a"), _with_ndim(b, 1, "vv", "b")
    if a.shape != b.shape:
        raise ShapeError(f"vv: lengths differ: a is {a.shape}, b is {b.shape}")
    return float(a @ b)


def affine_map(X, W, b):
    """Affine map XW + b, the linear layer's forward pass (book §2.2, §6.1; design report eq. 1).

    The bias is added to every row: (XW + b)_ij = Σ_k X_ik W_kj + b_j.
    Shapes: X (N, D_in), W (D_in, D_out), b (D_out,) -> (N, D_out)
    """
    X, W = _with_ndim(X, 2, "affine_map", "X"), _with_ndim(W, 2, "affine_map", "W")
    b = _with_ndim(b, 1, "affine_map", "b")
    if X.shape[1] != W.shape[0]:
        raise ShapeError(f"affine_map: inner dimensions differ: X is {X.shape}, W is {W.shape}")
    if b.shape[0] != W.shape[1]:
        raise ShapeError(f"affine_map: b must have shape ({W.shape[1]},) to match W {W.shape}, got {b.shape}")
    return X @ W + b


# --- §2.5 Norms ---------------------------------------------------------------------------------------------


def norm_l1(x):
    """L¹ norm ‖x‖₁ = Σ_i |x_i| of a vector (book §2.5; design report eq. 2)."""
    x = _with_ndim(x, 1, "norm_l1", "x")
    return float(np.sum(np.abs(x)))


def _scaled_root_sum_squares(x):
    # sqrt(Σ x²) written as m·sqrt(Σ (x/m)²) with m = max|x|: the same number, but squares of entries
    # near 1e200 no longer overflow and squares near 1e-200 no longer underflow to zero.
    m = np.max(np.abs(x), initial=0.0)
    if m == 0 or not np.isfinite(m):
        return float(m)
    return float(m * np.sqrt(np.sum((x / m) ** 2)))


def norm_l2(x):
    """Euclidean norm ‖x‖₂ = sqrt(Σ_i x_i²) of a vector (book §2.5; design report eq. 3).

    Computed as m·sqrt(Σ (x_i/m)²) with m = max_i |x_i| so that it neither overflows nor underflows.
    """
    return _scaled_root_sum_squares(_with_ndim(x, 1, "norm_l2", "x"))


def norm_frobenius(A):
    """Frobenius norm ‖A‖_F = sqrt(Σ_ij A_ij²) of a matrix (book §2.5; design report eq. 4)."""
    return _scaled_root_sum_squares(_with_ndim(A, 2, "norm_frobenius", "A"))


def spectral_norm(A):
    """Spectral norm ‖A‖₂ = σ_max(A) = max_{‖x‖₂=1} ‖Ax‖₂, the largest singular value (book §2.5, §2.8)."""
    return float(svd_thin(A)[1][0])


# --- §2.8–2.9 SVD, conditioning and the pseudoinverse -------------------------------------------------------


def svd_thin(A):
    """Thin singular value decomposition A = U diag(S) Vᵀ (book §2.8).

    S holds the k = min(m, n) singular values in descending order; U and V have orthonormal columns.
    Shapes: A (m, n) -> U (m, k), S (k,), Vt (k, n)
    """
    A = _with_ndim(A, 2, "svd_thin", "A")
    if A.size == 0:
        raise ShapeError(f"svd_thin: A is empty, shape {A.shape}")
    U, S, Vt = np.linalg.svd(A, full_matrices=False)
    return U, S, Vt


def condition_number(A):
    """2-norm condition number κ₂(A) = σ_max / σ_min (book §4.2; design report §3.1.3).

    σ_min is the smallest of the min(m, n) singular values. A matrix that is singular to working precision
    (σ_min ≤ max(m, n)·ε·σ_max, NumPy's ``matrix_rank`` tolerance; this includes the zero matrix) gives
    ``inf``: its computed σ_min is rounding noise, so a finite ratio would be meaningless.
    """
    S = svd_thin(A)[1]
    A_shape = infer_shape(A)
    tol = S[0] * max(A_shape) * np.finfo(S.dtype).eps
    if S[-1] <= tol:
        return float("inf")
    return float(S[0] / S[-1])


def pinv(A, rcond=1e-15):
    """Moore–Penrose pseudoinverse A⁺ = V D⁺ Uᵀ via the SVD (book §2.9; design report §3.1.3).

    D⁺ inverts every singular value σ_i > rcond·σ_max and sets the rest to zero, the cut-off
    ``numpy.linalg.pinv`` uses.  Shapes: A (m, n) -> A⁺ (n, m)
    """
    rcond = check_number(rcond, "pinv: rcond", low=0)
    U, S, Vt = svd_thin(A)
    keep = rcond * S[0] < S
    S_plus = np.zeros_like(S)
    S_plus[keep] = 1.0 / S[keep]
    return (Vt.T * S_plus) @ U.T  # (n, k) diag(k) @ (k, m) -> (n, m)


def lstsq_min_norm(A, b, rcond=1e-15):
    """Least-squares solution of smallest norm, x* = A⁺b (book §2.9; design report eq. 5).

    Among all x minimising ‖Ax − b‖₂ it is the one with the smallest ‖x‖₂; for an underdetermined system
    with full row rank it solves Ax = b exactly.
    Shapes: A (m, n), b (m,) or (m, k) -> x (n,) or (n, k)
    """
    A = _with_ndim(A, 2, "lstsq_min_norm", "A")
    b = as_float_array(b)
    if b.ndim not in (1, 2) or b.shape[0] != A.shape[0]:
        raise ShapeError(
            f"lstsq_min_norm: b must have shape ({A.shape[0]},) or ({A.shape[0]}, k) "
            f"to match A {A.shape}, got {b.shape}"
        )
    return pinv(A, rcond) @ b


# --- §2.10–2.11 Trace and determinant -----------------------------------------------------------------------


def trace(A):
    """Trace Tr(A) = Σ_i A_ii of a square matrix (book §2.10)."""
    return float(np.trace(_square(A, "trace")))


def det(A):
    """Determinant det(A) = Π_i λ_i of a square matrix, via LU factorisation (book §2.11)."""
    return float(np.linalg.det(_square(A, "det")))


def logdet(A):
    """Natural log of the determinant, log det(A), of a square matrix with det(A) > 0 (book §2.11).

    Computed as Σ_i log |U_ii| of an LU factorisation (``slogdet``), which stays finite where det(A)
    itself would overflow or underflow. Raises ValueError when det(A) = 0 (log det would be −∞) or
    det(A) < 0 (no real logarithm), saying which.
    """
    sign, log_abs = np.linalg.slogdet(_square(A, "logdet"))
    if sign == 0:
        raise ValueError(f"logdet: det(A) = 0 (A {infer_shape(A)} is singular), so log det(A) = -inf")
    if sign < 0:
        raise ValueError(
            f"logdet: det(A) < 0 (sign -1, log|det(A)| = {float(log_abs):.6g}), so log det(A) is not real"
        )
    return float(log_abs)


# --- §2.12 Principal components analysis --------------------------------------------------------------------


class PCA:
    """Principal components analysis by the thin SVD of centred data (book §2.12; design report §3.1.4).

    With X̃ = X − μ (μ the column means) and X̃ = U diag(S) Vᵀ, the principal directions are the rows of
    Vᵀ, the variance along direction i is S_i² / (N − 1), and the code of a point x is z = (x − μ) V_k.
    Follows scikit-learn: ``fit`` returns self; ``components_`` (k, D), ``mean_`` (D,),
    ``explained_variance_`` (k,), ``explained_variance_ratio_`` (k,), ``singular_values_`` (k,).
    Each component's largest-magnitude entry is made positive, so results are deterministic. If X has
    zero total variance, every explained-variance ratio is 0.

    Shapes: fit X (N, D); transform X (M, D) -> Z (M, k); inverse_transform Z (M, k) -> X (M, D)
    """

    def __init__(self, n_components):
        self.n_components = check_int(n_components, "PCA: n_components", low=1)

    def fit(self, X):
        X = _with_ndim(X, 2, "PCA.fit", "X")
        n, D = X.shape
        k = self.n_components
        if n < 2:
            raise ValueError(f"PCA.fit: need at least 2 samples to estimate variance, X has shape {X.shape}")
        if k > min(n, D):
            raise ValueError(
                f"PCA.fit: n_components={k} must be <= min(n_samples, n_features) = "
                f"{min(n, D)} for X of shape {X.shape}"
            )
        self.mean_ = X.mean(axis=0)
        _U, S, Vt = svd_thin(X - self.mean_)
        signs = np.sign(Vt[np.arange(len(S)), np.argmax(np.abs(Vt), axis=1)])
        signs[signs == 0] = 1
        Vt = Vt * signs[:, None]
        variance = S**2 / (n - 1)
        total = variance.sum()
        self.components_ = Vt[:k]
        self.singular_values_ = S[:k]
        self.explained_variance_ = variance[:k]
        self.explained_variance_ratio_ = variance[:k] / total if total > 0 else np.zeros_like(variance[:k])
        return self

    def _check_fitted(self, who):
        if not hasattr(self, "components_"):
            raise ValueError(f"PCA.{who}: this PCA is not fitted yet; call fit(X) first")

    def transform(self, X):
        """Codes z = (x − μ) V_k for each row x of X."""
        self._check_fitted("transform")
        X = _with_ndim(X, 2, "PCA.transform", "X")
        _k, D = self.components_.shape
        if X.shape[1] != D:
            raise ShapeError(f"PCA.transform: expects X of shape (N, {D}), got {X.shape}")
        return (X - self.mean_) @ self.components_.T  # (N, D) @ (D, k) -> (N, k)

    def inverse_transform(self, Z):
        """Reconstructions x̂ = z V_kᵀ + μ for each row z of Z (exact when k = rank of the centred data)."""
        self._check_fitted("inverse_transform")
        Z = _with_ndim(Z, 2, "PCA.inverse_transform", "Z")
        k, _D = self.components_.shape
        if Z.shape[1] != k:
            raise ShapeError(f"PCA.inverse_transform: expects Z of shape (N, {k}), got {Z.shape}")
        return Z @ self.components_ + self.mean_  # (N, k) @ (k, D) -> (N, D)

    def fit_transform(self, X):
        return self.fit(X).transform(X)
