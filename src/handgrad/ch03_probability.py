"""Chapter 3 of the book: probability and information theory (design report §3.2, eqs. 6–8).

Sections covered: probability mass functions (§3.3.1); marginal probability (§3.4); conditional probability
(§3.5); expectation, variance and covariance (§3.8); sampling from a categorical distribution (§3.9.2, by
the Gumbel-max trick); information theory — entropy, cross-entropy and KL divergence (§3.13).

Distributions are finite: a probability mass function is an array whose last axis (or the ``axis`` asked
for) holds non-negative numbers summing to one, so a batch of distributions is a 2-D array with one per
row. Logarithms are natural (nats). The convention 0·log 0 = 0 is applied exactly, by masking the zero
terms rather than clipping probabilities, so ``kl_divergence`` is +inf exactly where q_i = 0 < p_i.
"""

import numpy as np

from handgrad import ShapeError
from handgrad.ch02_linear_algebra import as_float_array, check_broadcastable, infer_shape

__all__ = [
    "check_probs",
    "normalize",
    "marginal",
    "conditional",
    "expectation",
    "variance",
    "covariance",
    "empirical_mean",
    "empirical_variance",
    "empirical_covariance",
    "entropy",
    "cross_entropy",
    "kl_divergence",
    "sample_categorical",
]


def _float_or_array(x):
    return float(x) if np.ndim(x) == 0 else x


def _first_index(mask):
    return tuple(int(i) for i in np.argwhere(mask)[0])


# --- §3.3–3.5 Mass functions, marginals and conditionals ----------------------------------------------------


def check_probs(p, axis=-1, atol=None):
    """Validate probability mass functions along ``axis`` and return them as a float array (book §3.3.1).

    A PMF P satisfies 0 ≤ P(x) and Σ_x P(x) = 1. Checks that every entry is finite and non-negative and
    that every sum along ``axis`` (``None``: the whole array, e.g. a joint table) is within ``atol`` of 1;
    the default atol is max(1e-6, 10·n·ε) for n terms of the array's precision ε. Raises ValueError naming
    the offending value or sum and where it is; ShapeError for a 0-d or empty input.
    """
    p = as_float_array(p)
    if p.ndim == 0 or p.size == 0:
        raise ShapeError(
            f"check_probs: p must be a non-empty array with at least one axis, got shape {p.shape}"
        )
    if not np.all(np.isfinite(p)):
        at = _first_index(~np.isfinite(p))
        raise ValueError(f"check_probs: p has a non-finite entry {p[at]} at index {at}")
    if np.any(p < 0):
        at = _first_index(p < 0)
        raise ValueError(f"check_probs: p has a negative entry {p[at]} at index {at}")
    n = p.size if axis is None else p.shape[axis]
    if atol is None:
        atol = max(1e-6, 10 * n * float(np.finfo(p.dtype).eps))
    sums = np.sum(p, axis=axis)
    bad = np.abs(sums - 1) > atol
    if np.any(bad):
        where = "" if np.ndim(sums) == 0 else f" at index {_first_index(bad)}"
        value = sums if np.ndim(sums) == 0 else sums[_first_index(bad)]
        raise ValueError(
            f"check_probs: p sums to {float(value):.10g} along axis {axis}{where}, "
            f"expected 1 (atol {atol:.3g})"
        )
    return p


def normalize(counts, axis=-1):
    """Turn non-negative counts into a probability mass function, P(x) = c(x) / Σ_x' c(x') (book §3.3.1).

    Normalises along ``axis`` (the last by default: one distribution per row); ``axis=None`` normalises
    the whole array, turning a table of joint counts into a joint distribution. Raises ValueError for
    negative or non-finite counts and for a total of zero.
    """
    counts = as_float_array(counts)
    if counts.ndim == 0 or counts.size == 0:
        raise ShapeError(
            f"normalize: counts must be a non-empty array with at least one axis, got shape {counts.shape}"
        )
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        at = _first_index(~(np.isfinite(counts) & (counts >= 0)))
        raise ValueError(f"normalize: counts must be finite and non-negative, got {counts[at]} at index {at}")
    totals = np.sum(counts, axis=axis, keepdims=True)
    if np.any(totals == 0):
        where = "" if axis is None else f" at index {_first_index(totals == 0)}"
        raise ValueError(
            f"normalize: counts sum to 0 along axis {axis}{where}; there is nothing to normalise"
        )
    return counts / totals


def marginal(joint, axis):
    """Sum ``axis`` out of a joint distribution: P(x) = Σ_y P(x, y) (book §3.4).

    ``axis`` is an int or a tuple of ints, as in ``np.sum``: ``marginal(P_xy, axis=1)`` is P(x).
    Returns an array, or a float when every axis is summed out.
    """
    joint = check_probs(joint, axis=None)
    return _float_or_array(np.sum(joint, axis=axis))


def conditional(joint, given_axis):
    """Conditional distribution P(others | given) = P(given, others) / P(given) (book §3.5).

    Returns an array of the joint's shape: for a 2-D joint P[i, j] = P(x_i, y_j), ``given_axis=0`` gives
    C[i, j] = P(y_j | x_i) (each row sums to one) and ``given_axis=1`` gives C[i, j] = P(x_i | y_j) (each
    column sums to one). Raises ValueError if a conditioning event has probability zero.
    """
    joint = check_probs(joint, axis=None)
    if joint.ndim < 2:
        raise ShapeError(f"conditional: joint must have at least 2 axes, got shape {joint.shape}")
    if not -joint.ndim <= given_axis < joint.ndim:
        raise ShapeError(
            f"conditional: given_axis {given_axis} is out of range for joint of shape {joint.shape}"
        )
    given_axis %= joint.ndim
    others = tuple(a for a in range(joint.ndim) if a != given_axis)
    p_given = np.sum(joint, axis=others, keepdims=True)
    if np.any(p_given == 0):
        index = _first_index(p_given == 0)[given_axis]
        raise ValueError(
            f"conditional: P(axis {given_axis} = {index}) = 0, so the distribution "
            f"given that event is undefined"
        )
    return joint / p_given


# --- §3.8 Expectation, variance and covariance --------------------------------------------------------------


def _values_and_probs(values, p, who):
    p = check_probs(p)
    values = as_float_array(values)
    if values.shape != p.shape[-1:] and values.shape != p.shape:
        allowed = f"{p.shape}" if p.ndim == 1 else f"{p.shape[-1:]} or {p.shape}"
        raise ShapeError(f"{who}: values must have shape {allowed} to match p {p.shape}, got {values.shape}")
    return values, p


def expectation(values, p):
    """Expectation E[X] = Σ_i P(x_i) x_i of a discrete random variable (book §3.8).

    Shapes: values (n,) or like p; p (n,) -> float, or p (..., n) -> (...) for a batch of distributions.
    """
    values, p = _values_and_probs(values, p, "expectation")
    return _float_or_array(np.sum(p * values, axis=-1))


def variance(values, p):
    """Variance Var(X) = E[(X − E[X])²] = Σ_i P(x_i)(x_i − μ)² (book §3.8).

    Uses the centred form rather than E[X²] − E[X]², which cancels catastrophically when |μ| ≫ σ.
    Shapes as for ``expectation``.
    """
    values, p = _values_and_probs(values, p, "variance")
    mu = np.sum(p * values, axis=-1, keepdims=True)
    return _float_or_array(np.sum(p * (values - mu) ** 2, axis=-1))


def covariance(x_values, y_values, joint):
    """Covariance Cov(X, Y) = Σ_ij P(x_i, y_j)(x_i − E[X])(y_j − E[Y]) (book §3.8).

    Shapes: x_values (n,), y_values (m,), joint (n, m) with joint[i, j] = P(x_i, y_j) -> float
    """
    joint = check_probs(joint, axis=None)
    x, y = as_float_array(x_values), as_float_array(y_values)
    if joint.ndim != 2 or x.ndim != 1 or y.ndim != 1 or joint.shape != (x.shape[0], y.shape[0]):
        raise ShapeError(
            f"covariance: joint must have shape (len(x_values), len(y_values)); got x_values "
            f"{x.shape}, y_values {y.shape}, joint {joint.shape}"
        )
    dx = x - np.sum(joint, axis=1) @ x  # x_i − E[X]
    dy = y - np.sum(joint, axis=0) @ y  # y_j − E[Y]
    return float(dx @ joint @ dy)  # (n,) @ (n, m) @ (m,)


def _samples(x, who, minimum):
    x = as_float_array(x)
    if x.ndim == 0 or x.shape[0] < minimum:
        raise ShapeError(f"{who}: needs at least {minimum} sample(s) along axis 0, got shape {x.shape}")
    return x


def empirical_mean(x):
    """Sample mean x̄ = (1/N) Σ_n x_n over axis 0 (book §3.8; §5.4.2).  Shapes: (N, ...) -> float or (...)."""
    return _float_or_array(np.mean(_samples(x, "empirical_mean", 1), axis=0))


def empirical_variance(x):
    """Unbiased sample variance s² = Σ_n (x_n − x̄)² / (N − 1) over axis 0 (book §5.4.2).

    Shapes: (N, ...) with N ≥ 2 -> float or (...)
    """
    x = _samples(x, "empirical_variance", 2)
    return _float_or_array(np.sum((x - x.mean(axis=0)) ** 2, axis=0) / (x.shape[0] - 1))


def empirical_covariance(x, y):
    """Unbiased sample covariance Σ_n (x_n − x̄)(y_n − ȳ) / (N − 1) of paired samples (book §3.8).

    Shapes: x (N,), y (N,) with N ≥ 2 -> float
    """
    x, y = _samples(x, "empirical_covariance", 2), _samples(y, "empirical_covariance", 2)
    if x.ndim != 1 or x.shape != y.shape:
        raise ShapeError(
            f"empirical_covariance: x and y must be 1-D of the same length, got {x.shape} and {y.shape}"
        )
    return float((x - x.mean()) @ (y - y.mean()) / (x.shape[0] - 1))


# --- §3.13 Information theory -------------------------------------------------------------------------------


def _p_log_q(p, q):
    """p·log q term by term, with 0·log q = 0 for every q (also q = 0) and p·log 0 = −inf for p > 0."""
    out = np.zeros(np.broadcast_shapes(p.shape, q.shape))
    positive = p > 0
    with np.errstate(divide="ignore"):
        out[positive] = p[positive] * np.log(q[positive])
    return out


def _pair(p, q, who):
    p, q = check_probs(p), check_probs(q)
    if p.shape != q.shape:
        raise ShapeError(f"{who}: p and q must have the same shape, got p {p.shape} and q {q.shape}")
    return p, q


def entropy(p):
    """Shannon entropy H(p) = −Σ_i p_i log p_i in nats, with 0·log 0 = 0 (book §3.13; design report eq. 6).

    0 ≤ H(p) ≤ log n, with equality on the right for the uniform distribution.
    Shapes: p (n,) -> float, or (..., n) -> (...)
    """
    p = check_probs(p)
    return _float_or_array(-np.sum(_p_log_q(p, p), axis=-1))


def cross_entropy(p, q):
    """Cross-entropy H(p, q) = −Σ_i p_i log q_i (book §3.13; design report eq. 7).

    Terms with p_i = 0 contribute 0; a term with q_i = 0 < p_i makes it +inf. H(p, q) = H(p) + D_KL(p‖q).
    Shapes: p, q (n,) -> float, or (..., n) -> (...)
    """
    p, q = _pair(p, q, "cross_entropy")
    return _float_or_array(-np.sum(_p_log_q(p, q), axis=-1))


def kl_divergence(p, q):
    """Kullback–Leibler divergence D_KL(p‖q) = Σ_i p_i log(p_i / q_i) (book §3.13; design report eq. 8).

    Each term is computed as p_i (log p_i − log q_i), so a tiny q_i does not overflow p_i / q_i; terms with
    p_i = 0 are 0 and a term with q_i = 0 < p_i is +inf. D_KL ≥ 0 (Gibbs' inequality), so rounding
    residues below zero are clamped to 0. Shapes: p, q (n,) -> float, or (..., n) -> (...)
    """
    p, q = _pair(p, q, "kl_divergence")
    divergence = np.sum(_p_log_q(p, p) - _p_log_q(p, q), axis=-1)
    return _float_or_array(np.maximum(divergence, 0.0))


# --- §3.9.2 Sampling ----------------------------------------------------------------------------------------


def sample_categorical(logits, size=None, rng=None):
    """Draw from Categorical(softmax(logits)) by the Gumbel-max trick (book §3.9.2).

    With g_k = −log(−log u_k), u_k ~ U(0, 1) independent standard Gumbel noise,
        argmax_k (logits_k + g_k)  ~  Categorical(p),  p_k = exp(logits_k) / Σ_j exp(logits_j),
    so no softmax and no normalisation are needed, and a logit of −inf is a class of probability zero.

    ``size`` follows NumPy's Generator conventions: it is the shape of the result, and the distribution's
    batch shape broadcasts against its trailing axes. For logits (K,): ``size=None`` returns one int,
    otherwise an int64 array of shape ``size``. For a batch of logits (B, K): ``size=None`` returns shape
    (B,), one draw per row; ``size=(S, B)`` returns S draws per row with out[s, b] from row b; a ``size``
    whose last axis is not B (or 1 when B = 1) raises ShapeError. ``rng`` is a ``np.random.Generator``
    (None: a fresh unseeded one).
    """
    if rng is None:
        rng = np.random.default_rng()
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"sample_categorical: rng must be a numpy.random.Generator or None, got {type(rng).__name__}"
        )
    logits = as_float_array(logits)
    if logits.ndim not in (1, 2) or logits.shape[-1] == 0:
        raise ShapeError(
            f"sample_categorical: logits must have shape (K,) or (B, K) with K >= 1, got {logits.shape}"
        )
    if np.any(np.isnan(logits) | (logits == np.inf)):
        at = _first_index(np.isnan(logits) | (logits == np.inf))
        raise ValueError(f"sample_categorical: logits must be finite or -inf, got {logits[at]} at index {at}")
    if np.any(np.all(logits == -np.inf, axis=-1)):
        raise ValueError(
            "sample_categorical: a row of logits is all -inf, so no class has positive probability"
        )

    batch = logits.shape[:-1]
    if size is None:
        shape = batch
    else:
        shape = (int(size),) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
        try:
            fits = check_broadcastable(shape, batch) == shape
        except ShapeError:
            fits = False
        if not fits:
            raise ShapeError(
                f"sample_categorical: size {shape} must end with the batch shape {batch} "
                f"of logits {infer_shape(logits)}"
            )
    u = rng.random(shape + logits.shape[-1:])
    with np.errstate(divide="ignore"):  # u = 0 (probability 2⁻⁵³) gives g = −inf: that class just loses
        gumbel = -np.log(-np.log(u))
    draws = np.argmax(logits + gumbel, axis=-1).astype(np.int64)
    return int(draws) if draws.ndim == 0 else draws
