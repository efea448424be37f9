"""Dropout (book §7.12): train an implicit ensemble of the sub-networks obtained by removing units.

Each training forward pass multiplies every unit by an independent binary mask μ ~ Bernoulli(1 − p); the
book's weight scaling inference rule (§7.12) then evaluates the full network with the weights scaled by the
keep probability 1 − p. *Inverted* dropout, used here as in PyTorch, moves the scaling into training —
surviving units are multiplied by 1/(1 − p) — so E[output] equals the input and evaluation is the identity.
"""

import numpy as np

from .._checks import check_number
from ..ch02_linear_algebra import as_float_array
from ..ch06_feedforward import Layer

__all__ = ["Dropout"]


class Dropout(Layer):
    """Inverted dropout with drop probability ``p``, as ``torch.nn.Dropout`` (book §7.12).

    Training mode:  m_i ~ Bernoulli(1 − p) independently,   y = x ⊙ m / (1 − p),   dx = dy ⊙ m / (1 − p).
    Eval mode (``layer.eval()``): y = x and dx = dy (the input array itself is returned).

    ``p`` is the probability of *dropping* a unit (0 ≤ p < 1; p = 0 is the identity). ``rng`` is a
    ``np.random.Generator``, a seed or None; masks are drawn from it, so a seeded layer repeats its masks.

    Shapes: X (...) -> Y (...), same dtype (any shape: dense (N, D) or convolutional (N, C, H, W) inputs).
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        self.p = check_number(p, "p (the drop probability)", low=0, high=1, high_open=True)
        self.rng = np.random.default_rng(rng)
        self._cache = None  # (m / (1 − p), or None when the forward was the identity; the input shape)

    def __repr__(self):
        return f"Dropout(p={self.p})"

    def forward(self, X):
        X = as_float_array(X, np.float32)
        if not self.training or self.p == 0.0:
            self._cache = (None, X.shape)
            return X
        draw = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
        u = self._buffer("u", X.shape, draw)
        self.rng.random(dtype=draw, out=u)  # u ~ U[0, 1)
        keep = self._buffer("keep", X.shape, np.bool_)
        np.greater_equal(u, self.p, out=keep)  # P(keep) = 1 − p
        mask = self._buffer("mask", X.shape, X.dtype)
        np.multiply(keep, X.dtype.type(1.0 / (1.0 - self.p)), out=mask)  # m / (1 − p)
        Y = self._output("Y", X.shape, X.dtype)
        np.multiply(X, mask, out=Y)
        self._cache = (mask, X.shape)
        return Y

    def backward(self, dY):
        mask, shape = self._cached(self._cache)
        dY = self._check_dY(dY, shape)
        if not self.input_grad:
            return None
        if mask is None:
            return dY
        dX = self._output("dX", mask.shape, np.result_type(dY, mask))
        return np.multiply(dY, mask, out=dX)
