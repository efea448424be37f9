"""Softmax output units and the cross-entropy cost (book §6.2.1.1, §6.2.2.3; design report eqs. 18–19).

Notation: Z (N, C) are the logits, the output of the last ``Linear`` (Z = XW + b); 𝓛 is the loss, the
mean over the N rows of the batch; y holds the targets. ``dZ`` is ∂𝓛/∂Z.
"""

import numpy as np

from .. import ShapeError
from ..ch02_linear_algebra import as_float_array
from ..ch04_numerical import log_softmax, softmax

__all__ = ["cross_entropy_from_logits", "cross_entropy_grad", "SoftmaxCrossEntropy"]


def _check_targets(logits, y):
    """Validate (logits, y); return (logits as a float array, y as int labels (N,) or probabilities (N, C))."""
    logits = as_float_array(logits, np.float32)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ShapeError(f"logits must have shape (N, C) with N, C >= 1, got {logits.shape}")
    n, c = logits.shape
    y = np.asarray(y)
    if y.ndim == 1:
        if y.shape[0] != n:
            raise ShapeError(f"{n} rows of logits {logits.shape} but {y.shape[0]} labels {y.shape}")
        if y.dtype.kind not in "iu":  # signed or unsigned integers
            raise ValueError(f"labels of shape (N,) must be integers, got dtype {y.dtype}")
        if (y.dtype.kind == "i" and y.min() < 0) or y.max() >= c:
            bad = y[(y < 0) | (y >= c)]
            raise ValueError(f"labels must lie in [0, {c}) for {c} classes, got {bad[:5].tolist()}")
        return logits, y
    if y.ndim == 2:
        if y.shape != logits.shape:
            raise ShapeError(
                f"one-hot/probability targets must have the logits' shape {logits.shape}, got {y.shape}"
            )
        y = as_float_array(y, np.float32)
        tol = np.sqrt(np.finfo(y.dtype).eps)
        if np.any(y < 0) or not np.allclose(y.sum(axis=1), 1.0, rtol=0, atol=tol):
            raise ValueError("one-hot/probability targets must be non-negative with rows summing to 1")
        return logits, y
    raise ShapeError(f"targets must be labels (N,) or one-hot/probabilities (N, C), got shape {y.shape}")


def cross_entropy_from_logits(logits, y):
    """Mean cross entropy of softmax(logits) against targets (book §6.2.2.3; design report eq. 18).

        𝓛 = −(1/N) Σ_i log softmax(Z)_{i, y_i}                                          (18)
        (with targets q as probabilities: 𝓛 = −(1/N) Σ_i Σ_j q_ij log softmax(Z)_ij)

    log softmax is chapter 4's stable ``log_softmax``; the loss is invariant to adding a constant to a
    row of logits. ``y`` is integer labels (N,) in [0, C) or one-hot/probability rows (N, C). The mean
    is accumulated in float64 (a Python float is returned), so float32 logits as large as ±3e38 still
    give a finite loss.
    """
    logits, y = _check_targets(logits, y)
    logp = log_softmax(logits.astype(np.float64))
    n = logits.shape[0]
    if y.ndim == 1:
        return float(-logp[np.arange(n), y].mean())
    terms = np.where(y > 0, y * logp, 0.0)  # 0 · log 0 = 0
    return float(-terms.sum() / n)


def cross_entropy_grad(logits, y):
    """Gradient of the mean cross entropy w.r.t. the logits (book §6.2.2.3; design report eq. 19).

        ∂𝓛/∂Z_ij = (softmax(Z)_ij − 1{j = y_i}) / N                                      (19)

    (with probability targets q the one-hot is replaced by q). Same shape and dtype as the logits.
    """
    logits, y = _check_targets(logits, y)
    n = logits.shape[0]
    G = softmax(logits)
    if y.ndim == 1:
        G[np.arange(n), y] -= 1
    else:
        G -= y.astype(G.dtype, copy=False)
    G /= n
    return G


class SoftmaxCrossEntropy:
    """Softmax output and mean cross-entropy loss in one object, the fused form (book §6.2.2.3, §6.5).

    ``forward(logits, y)`` computes P = softmax(Z) once (shift by the row max, exponentiate, normalise)
    and the loss of eq. 18 as logsumexp(Z_i) − Z_{i,y_i} from the same pass; ``backward()`` reuses P:

        dZ = ∂𝓛/∂Z = (P − onehot(y)) / N,

    which *is* eq. 19 — the same numbers as ``cross_entropy_grad`` (a test checks it), without a second
    softmax. The returned gradient is a new array, the caller's to keep; after ``reuse_buffers()`` it
    is written into one array reused by every ``backward`` with the same shape (the opt-in of the layer
    convention, ``layers`` module doc; the numbers are the same).
    """

    _reuse = False

    def __init__(self):
        self._cache = None  # (P, y)
        self._buffers = {}
        self._rows = np.arange(0)  # 0, 1, …, N−1: the row index of Z_{i, y_i}, kept between batches

    def _row_index(self, n):
        if self._rows.shape[0] != n:
            self._rows = np.arange(n)
        return self._rows

    def _buffer(self, name, shape, dtype):
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(shape, dtype)
        return buf

    def reuse_buffers(self, mode=True):
        """Opt in (or out, ``mode=False``) of reusing the gradient array of ``backward``; returns self."""
        self._reuse = bool(mode)
        return self

    def __call__(self, logits, y):
        return self.forward(logits, y)

    def forward(self, logits, y):
        logits, y = _check_targets(logits, y)
        n = logits.shape[0]
        m = np.maximum.reduce(logits, axis=1, keepdims=True)  # (N, 1) row maxima
        P = self._buffer("P", logits.shape, logits.dtype)
        with np.errstate(under="ignore", over="ignore"):  # Z − m may overflow to −inf: e^{−inf} = 0 is right
            np.subtract(logits, m, out=P)
            np.exp(P, out=P)  # e^{Z − m}, the largest entry of each row is 1
        s = np.add.reduce(P, axis=1, keepdims=True)  # (N, 1), in [1, C]
        np.divide(P, s, out=P)  # softmax
        # logsumexp(Z_i) = m_i + log s_i; the difference is taken in float64 so it cannot overflow
        lse = m[:, 0].astype(np.float64)
        lse += np.log(s[:, 0].astype(np.float64))
        if y.ndim == 1:
            lse -= logits[self._row_index(n), y]  # − Z_{i, y_i}
        else:
            # −Σ_j q_ij (Z_ij − lse_i) = lse_i − Σ_j q_ij Z_ij   (rows of q sum to 1)
            lse -= np.einsum("ij,ij->i", y.astype(np.float64), logits.astype(np.float64))
        loss = float(np.add.reduce(lse)) / n  # the mean of eq. 18
        self._cache = (P, y)
        return loss

    def backward(self):
        if self._cache is None:
            raise RuntimeError("SoftmaxCrossEntropy: backward called before forward")
        P, y = self._cache
        n = P.shape[0]
        G = self._buffer("G", P.shape, P.dtype) if self._reuse else np.empty(P.shape, P.dtype)
        np.multiply(P, 1.0 / n, out=G)  # P / N
        if y.ndim == 1:
            G[self._row_index(n), y] -= G.dtype.type(1.0 / n)  # − onehot / N
        else:
            G -= y.astype(G.dtype, copy=False) / n
        return G
