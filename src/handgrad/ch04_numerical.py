"""Chapter 4 of the book, *Numerical Computation*: §4.1 overflow and underflow, §4.3 gradients.

Floating point numbers are a finite grid. §4.1 shows the two ways a formula falls off it: ``exp`` of a
large number overflows to ``inf`` and ``exp`` of a very negative one underflows to ``0``, after which
``log``, a division or ``inf - inf`` turns the answer into ``NaN``. The remedy is to rewrite each formula
so that every intermediate stays on the grid (design report §3.3, eqs. 9–11):

- ``logsumexp`` shifts by the maximum before exponentiating (eq. 9);
- ``log_softmax`` is ``x - logsumexp(x)`` rather than ``log(softmax(x))`` (eq. 10);
- ``softplus`` and ``sigmoid`` only ever exponentiate a non-positive number (eq. 11).

§4.3 uses gradients everywhere; to trust a hand-derived gradient we compare it with central finite
differences (eq. 12): ``numerical_gradient`` and ``check_grad``.

Functions keep the float dtype they are given (float32 in, float32 out); integer input is computed in
float64. None of them emits an overflow, underflow or divide-by-zero warning on extreme inputs.
"""

import numpy as np

from handgrad import ShapeError
from handgrad._checks import check_number
from handgrad.ch02_linear_algebra import as_float_array

__all__ = [
    "float_dtype",
    "machine_epsilon",
    "ulp",
    "exp_safe_range",
    "kahan_sum",
    "logsumexp",
    "softmax",
    "log_softmax",
    "softplus",
    "sigmoid",
    "numerical_gradient",
    "check_grad",
]


def float_dtype(dtype):
    """``dtype`` as a NumPy floating dtype (float16/32/64, …); ValueError for any other (book §4.1)."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating type, got {dtype}")
    return dtype


def _result(y):
    """A 0-d result as a Python float, anything else as the array it is."""
    return float(y) if np.ndim(y) == 0 else y


# --------------------------------------------------------------------------------------------------
# §4.1 The floating point grid
# --------------------------------------------------------------------------------------------------


def machine_epsilon(dtype=np.float64):
    """Machine epsilon of ``dtype``: the gap between 1 and the next representable number (book §4.1).

    Found the way the definition reads: halve ε while 1 + ε/2 still differs from 1 in that dtype. The
    result equals ``np.finfo(dtype).eps`` (2⁻⁵² for float64, 2⁻²³ for float32).
    """
    dtype = float_dtype(dtype)
    one, eps = dtype.type(1), dtype.type(1)
    while one + eps / dtype.type(2) != one:
        eps = eps / dtype.type(2)
    return float(eps)


def ulp(x):
    """Unit in the last place of ``x``: the distance from |x| to the next larger float (book §4.1).

    ulp(x) = |np.spacing(x)|, e.g. ulp(1.0) = ε and ulp(2.0) = 2ε. Always non-negative; keeps x's float
    dtype; a scalar gives a Python float.
    """
    x = as_float_array(x)
    return _result(np.abs(np.spacing(x)))


def exp_safe_range(dtype=np.float64):
    """The interval (lo, hi) on which exp(x) is a finite normal number of ``dtype`` (book §4.1).

    lo = log(smallest positive normal) and hi = log(largest finite value): below lo, exp underflows into
    the subnormals and then to 0; above hi it overflows to inf. For float64 that is about (-708.4, 709.8),
    for float32 about (-87.3, 88.7) — which is why eq. 9 shifts by the maximum before exponentiating.
    """
    info = np.finfo(float_dtype(dtype))
    return float(np.log(np.float64(info.tiny))), float(np.log(np.float64(info.max)))


def kahan_sum(x):
    """Compensated sum of all elements of ``x`` (Neumaier's variant of Kahan summation; book §4.1).

    Each addition s + v rounds away a small error; the algorithm recovers that error exactly,

        t = s + v;   c += (s - t) + v  if |s| ≥ |v|  else  (v - t) + s;   s = t,

    and adds the accumulated correction c once at the end. The arithmetic is done in x's own dtype (no
    hidden float64), so for float32 it is far more accurate than naive float32 summation: the error no
    longer grows with the number of terms. Returns a Python float.
    """
    x = as_float_array(x).ravel()
    s = c = x.dtype.type(0)
    for v in x:
        t = s + v
        if abs(s) >= abs(v):
            c += (s - t) + v
        else:
            c += (v - t) + s
        s = t
    return float(s + c)


# --------------------------------------------------------------------------------------------------
# §4.1 Stable formulations (design report eqs. 9–11)
# --------------------------------------------------------------------------------------------------


def logsumexp(x, axis=-1, keepdims=False):
    """log Σ_i exp(x_i) along ``axis``, without overflow (book §4.1; design report eq. 9).

        logsumexp(x) = log Σ_i e^{x_i} = m + log Σ_i e^{x_i - m},   m = max_i x_i.      (9)

    After the shift the largest exponent is e⁰ = 1, so the sum is in [1, n] and cannot overflow, and
    the log never sees 0. Edge cases follow the limits: a row of all -inf (an empty sum) gives -inf,
    never NaN; a row holding +inf gives +inf; NaN propagates. float32 in gives float32 out.

    Shapes: x (..., n, ...) -> the same with ``axis`` removed (kept as 1 if ``keepdims``).
    """
    x = as_float_array(x)
    m = np.max(x, axis=axis, keepdims=True)
    # Where the maximum is ±inf the shift would make inf - inf = NaN; shift by 0 there instead, so an
    # all -inf row sums exp(-inf) = 0 to log 0 = -inf, and a row with +inf sums to inf.
    shift = np.where(np.isfinite(m), m, 0).astype(x.dtype)
    # Overflow in x - shift can only go to -inf (x ≥ -max, shift ≤ max), whose exp is the exact 0.
    with np.errstate(over="ignore", under="ignore", divide="ignore"):
        out = np.log(np.sum(np.exp(x - shift), axis=axis, keepdims=True)) + shift
    if not keepdims:
        out = np.squeeze(out, axis=axis)
    return _result(out)


def softmax(x, axis=-1):
    """softmax(x)_i = e^{x_i} / Σ_j e^{x_j} along ``axis`` (book §4.1, §6.2.2.3).

    Computed as e^{x_i - m} / Σ_j e^{x_j - m} with m = max_j x_j, the same shift as eq. 9: equal in exact
    arithmetic, and the largest term is exactly 1 so nothing overflows. Each row sums to one. A row of
    all -inf (or holding +inf) has no defined distribution and gives NaN — without a warning.

    Shapes: x (..., n) -> (..., n), same dtype.
    """
    x = as_float_array(x)
    m = np.max(x, axis=axis, keepdims=True)
    shift = np.where(np.isfinite(m), m, 0).astype(x.dtype)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(x - shift)
        e /= np.sum(e, axis=axis, keepdims=True)
    return e


def log_softmax(x, axis=-1):
    """log softmax(x)_i = x_i - logsumexp(x) along ``axis`` (book §4.1; design report eq. 10).

        log softmax(x)_i = x_i - logsumexp(x).                                            (10)

    Never forms softmax(x) and takes its log, which would give log 0 = -inf as soon as a probability
    underflows; here a very unlikely class gets a large negative, finite number. Adding a constant to
    every entry of a row leaves the result unchanged. The building block of the cross entropy from
    logits (chapter 6). A row of all -inf gives NaN (no distribution), without a warning.

    Shapes: x (..., n) -> (..., n), same dtype.
    """
    x = as_float_array(x)
    lse = logsumexp(x, axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        return x - lse


def softplus(x):
    """softplus(x) = log(1 + e^x), a smooth ReLU (book §3.10, §6.3.3; design report eq. 11).

        softplus(x) = log(1 + e^{-|x|}) + max(x, 0).                                      (11)

    Equal to log(1 + e^x) (for x > 0 factor e^x out of the sum), but the exponent is never positive, so
    it cannot overflow: finite for every finite x of the dtype, softplus(x) = x for large x and e^x
    for very negative x. Keeps x's float dtype; a scalar gives a Python float.
    """
    x = as_float_array(x)
    with np.errstate(under="ignore"):
        return _result(np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0))


def sigmoid(x):
    """The logistic sigmoid σ(x) = 1 / (1 + e^{-x}), stable for both signs (book §3.10, §4.1).

    With z = e^{-|x|} ∈ (0, 1]:  σ(x) = 1 / (1 + z) for x ≥ 0  and  σ(x) = z / (1 + z) for x < 0
    (multiply the textbook form by e^x/e^x). Only a non-positive number is exponentiated, so nothing
    overflows; σ(-x) = 1 - σ(x). Keeps x's float dtype; a scalar gives a Python float.
    """
    x = as_float_array(x)
    with np.errstate(under="ignore"):
        z = np.exp(-np.abs(x))
    return _result(np.where(x >= 0, 1 / (1 + z), z / (1 + z)).astype(x.dtype, copy=False))


# --------------------------------------------------------------------------------------------------
# §4.3 Gradient checking (design report eq. 12)
# --------------------------------------------------------------------------------------------------


def _scalar(value, what):
    value = np.asarray(value)
    if value.size != 1:
        raise ShapeError(f"{what} must return a scalar, got an array of shape {value.shape}")
    return float(value.reshape(()))


def numerical_gradient(f, x, eps=1e-6):
    """Central-difference estimate of ∇f at ``x`` (book §4.3; design report eq. 12).

        ∂f/∂x_i ≈ (f(x + ε e_i) - f(x - ε e_i)) / (2ε),                                    (12)

    with e_i the i-th standard basis vector, for every element of an n-d array. The truncation error is
    O(ε²) and the rounding error about ε_machine·|f| / ε, so use float64 and ε ≈ 1e-6 (float32 cannot
    resolve such a step).

    ``f`` takes an array of x's shape and returns a scalar. A float ndarray ``x`` is perturbed in place,
    one element at a time, and restored after each evaluation (also if ``f`` raises) — so ``f`` may
    equally read the array through a closure, e.g. a layer's weight matrix. Other input is first copied
    to float64.

    Shapes: x (...) -> gradient of the same shape and dtype.
    """
    eps = check_number(eps, "eps", low=0, low_open=True)
    if not (isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)):
        x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        try:
            x[i] = old + eps
            f_plus = _scalar(f(x), "f")
            x[i] = old - eps
            f_minus = _scalar(f(x), "f")
        finally:
            x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def check_grad(f, grad_f, x, eps=1e-6):
    """Max |grad_f(x) - numerical_gradient(f, x)| over all elements (book §4.3; report eq. 12).

    A hand-derived gradient that is right gives a number near the finite-difference error (≈1e-9 for
    well-scaled float64 problems); a wrong one gives something of the size of the gradient itself.
    Returns a Python float; raises ShapeError if grad_f(x) does not have x's shape.
    """
    x = as_float_array(x)
    analytic = np.asarray(grad_f(x.copy()), dtype=np.float64)
    if analytic.shape != x.shape:
        raise ShapeError(f"grad_f must return the shape of x {x.shape}, got {analytic.shape}")
    numeric = numerical_gradient(f, x.copy(), eps=eps)
    return float(np.max(np.abs(analytic - numeric), initial=0.0))
