"""A table of learned vectors looked up by integer index: the word (or character) embedding of §12.4.

An embedding is a Linear layer without bias applied to one-hot inputs, Y = onehot(i) W, computed by
indexing: Y = W[i]. The gradient of a row is the sum of the upstream gradients of every position that
looked it up: dW_v = Σ_{positions p with i_p = v} dY_p. It is computed with one ``np.bincount`` over the
flat positions (row · E + column) of dW: the same sums as ``np.add.at(dW, i, dY)`` (a test checks it),
two to five times faster here (``benchmarks/embedding_speed.py`` times both).
"""

import numpy as np

from .._checks import check_int
from ..ch04_numerical import float_dtype
from ..ch06_feedforward import Layer

__all__ = ["Embedding"]


def add_at_rows(indices, dY, V):
    """dW (V, E) with dW_v = Σ_{p: indices_p = v} dY_p, by ``np.add.at`` (the readable form)."""
    dW = np.zeros((V, dY.shape[-1]), dY.dtype)
    np.add.at(dW, indices.ravel(), dY.reshape(-1, dY.shape[-1]))
    return dW


def bincount_rows(indices, dY, V, out=None):
    """The same sums by one bincount: entry (v, e) of dW is bin v·E + e; the weights are dY's entries."""
    E = dY.shape[-1]
    flat = (indices.reshape(-1, 1) * E + np.arange(E)).ravel()
    sums = np.bincount(flat, weights=dY.reshape(-1), minlength=V * E).reshape(V, E)
    if out is None:
        return sums.astype(dY.dtype)
    out[...] = sums
    return out


class Embedding(Layer):
    """Embedding table W (V, E): integer indices of any shape (...) -> vectors (..., E), Y = W[indices].

    Backward: dW_v = Σ_{p: i_p = v} dY_p (repeated indices add up); there is no gradient for the indices,
    so ``backward`` returns None. W starts as N(0, 1), as ``torch.nn.Embedding``.

    Shapes: indices (...) int -> Y (..., E); W (V, E)

    >>> Embedding(10, 3, rng=0).forward(np.array([[1, 2], [2, 9]])).shape
    (2, 2, 3)
    """

    input_grad = False

    def __init__(self, num_embeddings, embedding_dim, rng=None, dtype=np.float32):
        super().__init__()
        self.num_embeddings = check_int(num_embeddings, "num_embeddings", low=1)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", low=1)
        rng = np.random.default_rng(rng)
        W = rng.standard_normal((self.num_embeddings, self.embedding_dim)).astype(float_dtype(dtype))
        self.params["W"], self.grads["W"] = W, np.zeros_like(W)
        self._indices = None

    def __repr__(self):
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"

    def forward(self, indices):
        indices = np.asarray(indices)
        if indices.dtype.kind not in "iu":
            raise ValueError(f"{self!r} expects integer indices, got dtype {indices.dtype}")
        if indices.size and (indices.min() < 0 or indices.max() >= self.num_embeddings):
            bad = indices[(indices < 0) | (indices >= self.num_embeddings)]
            raise ValueError(
                f"{self!r}: indices must lie in [0, {self.num_embeddings}), got {bad[:5].tolist()}"
            )
        W = self.params["W"]
        Y = self._output("Y", (*indices.shape, self.embedding_dim), W.dtype)
        np.take(W, indices, axis=0, out=Y)
        self._indices = indices
        return Y

    def backward(self, dY):
        indices = self._cached(self._indices)
        dY = self._check_dY(dY, (*indices.shape, self.embedding_dim))
        bincount_rows(indices, dY, self.num_embeddings, out=self.grads["W"])
        return None
