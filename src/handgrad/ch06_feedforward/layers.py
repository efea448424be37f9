"""The layer convention, initialisers and the affine layer (book §6.1, §8.4; design report eqs. 13–16).

Every layer follows one convention (``Layer``): named parameters in ``params`` and gradients of the
same names in ``grads``, ``forward(X)`` caching what ``backward(dY)`` needs, and ``backward`` returning
dX while writing the parameter gradients *in place* into the arrays of ``grads``. So the dicts of
references built once (``params, grads = model.params, model.grads``) stay valid for a whole training run.

Outputs belong to the caller. ``forward`` returns a new array and so does ``backward`` (dX), by default:
``a = layer.forward(A); layer.forward(B)`` leaves ``a`` as it was. What a layer keeps only for itself
(masks, im2col columns, the normalised x̂ of batch norm) lives in arrays it reuses while the batch shape
is unchanged; those are never handed out.

Buffer reuse is an explicit opt-in for training loops: after ``layer.reuse_buffers()`` (or
``model.reuse_buffers()`` on a ``Sequential``, which passes it to every layer) a layer in training mode
writes its forward output and its dX into arrays it owns and reuses them, saving an allocation and a pass
over fresh memory per layer and step. Such a result is then valid only until the layer's next ``forward``
(respectively ``backward``) — the caveat PyTorch has for in-place operations; copy it (``Y.copy()``) to
keep it longer. The numbers are the same either way (a test checks it bit for bit);
``reuse_buffers(False)`` switches it off again. In eval mode (``layer.eval()``) every forward returns
fresh arrays whatever the setting, so evaluation code may keep the outputs of many batches.

>>> lin, A, B = Linear(2, 2, rng=0), np.ones((1, 2), np.float32), np.zeros((1, 2), np.float32)
>>> a = lin.forward(A); kept = a.copy(); b = lin.forward(B)
>>> a is b, bool((a == kept).all())
(False, True)
>>> lin.reuse_buffers().forward(A) is lin.forward(B)  # opted in: one array, overwritten by each call
True
"""

import numpy as np

from .. import ShapeError
from .._checks import check_choice, check_int
from ..ch02_linear_algebra import as_float_array
from ..ch04_numerical import float_dtype

__all__ = ["Layer", "Linear", "INITIALISERS", "initialiser", "glorot_uniform", "he_normal"]


# --------------------------------------------------------------------------------------------------
# The layer convention
# --------------------------------------------------------------------------------------------------


class Layer:
    """Base of every layer: named parameters and their gradients, and a train/eval mode (as in PyTorch).

    Subclasses set ``self.params[name]`` and allocate ``self.grads[name]`` (same shape and dtype) once in
    ``__init__``; ``backward`` overwrites the gradient arrays in place and returns dX. When
    ``input_grad`` is False, ``backward`` may skip dX and return None (the first layer of a network
    needs no dX; ``Sequential.backward(dY, need_input_grad=False)`` sets it for that call only).
    """

    input_grad = True
    _reuse = False  # reuse_buffers(): a class default, so a subclass that skips __init__ has it too

    def __init__(self):
        self.params = {}  # name -> ndarray, updated in place by optimisers
        self.grads = {}  # same keys; overwritten in place by each backward
        self.training = True
        self._buffers = {}

    def forward(self, X):
        raise NotImplementedError

    def backward(self, dY):
        raise NotImplementedError

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def reuse_buffers(self, mode=True):
        """Opt in (``mode=True``) or out of reusing the output and dX arrays in training mode (module doc).

        Returns the layer, so that ``model = build(...).reuse_buffers()`` reads as one step.
        """
        self._reuse = bool(mode)
        return self

    def __call__(self, X):
        return self.forward(X)

    def __repr__(self):
        return f"{type(self).__name__}()"

    # helpers for subclasses ----------------------------------------------------------------------

    def _output(self, name, shape, dtype):
        """An array handed to the caller (forward's output, backward's dX): fresh, unless ``reuse_buffers()``
        is on and the layer is in training mode, when it is the reused buffer ``name`` (see module doc)."""
        if not self._reuse:
            return np.empty(shape, dtype)
        return self._buffer(name, shape, dtype)

    def _buffer(self, name, shape, dtype):
        """Internal scratch, never returned to the caller: reused across calls in training mode, fresh in
        eval mode (see module doc)."""
        if not self.training:
            return np.empty(shape, dtype)
        buf = self._buffers.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(shape, dtype)
        return buf

    def _ones(self, n, dtype):
        """A vector of n ones (kept between calls), for sums written as products: Σ_i A_i = 1ᵀ A."""
        ones = self._buffers.get("ones")
        if ones is None or ones.shape[0] != n or ones.dtype != dtype:
            ones = self._buffers["ones"] = np.ones(n, dtype)
        return ones

    def _cached(self, cache):
        if cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        return cache

    def _check_dY(self, dY, expected_shape):
        dY = np.asarray(dY)
        if dY.shape != tuple(expected_shape):
            raise ShapeError(
                f"{self!r}.backward expects dY of the forward output's shape {tuple(expected_shape)}, got {dY.shape}"
            )
        return dY


# --------------------------------------------------------------------------------------------------
# §6.1, §8.4 Initialisation
# --------------------------------------------------------------------------------------------------


def glorot_uniform(fan_in, fan_out, rng=None, dtype=np.float32):
    """Glorot (Xavier) uniform weights: W_ij ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (book §8.4).

    Keeps the variance of activations and gradients roughly constant across layers (Var W = 2/(fan_in +
    fan_out)). ``rng`` is a ``np.random.Generator``, a seed or None. Drawn in float64 and rounded, so the
    float32 and float64 weights of one seed agree. Shape (fan_in, fan_out).
    """
    fan_in, fan_out = check_int(fan_in, "fan_in", low=1), check_int(fan_out, "fan_out", low=1)
    rng = np.random.default_rng(rng)
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=(fan_in, fan_out)).astype(dtype)


def he_normal(fan_in, fan_out, rng=None, dtype=np.float32):
    """He (Kaiming) normal weights: W_ij ~ N(0, 2 / fan_in), suited to ReLU units (book §8.4).

    A ReLU zeroes half of its inputs on average, so twice the variance keeps activations from shrinking
    layer after layer. Shape (fan_in, fan_out).
    """
    fan_in, fan_out = check_int(fan_in, "fan_in", low=1), check_int(fan_out, "fan_out", low=1)
    rng = np.random.default_rng(rng)
    return (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(dtype)


INITIALISERS = {"glorot_uniform": glorot_uniform, "he_normal": he_normal}  # by the name layers take as init=


def initialiser(name):
    """The initialiser a layer's ``init=name`` selects from INITIALISERS; ValueError naming the choices."""
    return INITIALISERS[check_choice(name, "init", sorted(INITIALISERS))]


# --------------------------------------------------------------------------------------------------
# §6.1 Affine layer (eqs. 13–16)
# --------------------------------------------------------------------------------------------------


class Linear(Layer):
    """Fully connected layer, Z = XW + b (book §6.1; design report eqs. 13–16).

    Forward:   Z = XW + b                                                        (13)
    Backward, for upstream gradient dZ:
               dX = dZ Wᵀ                                                        (14)
               dW = Xᵀ dZ                                                        (15)
               db = Σ_i dZ_i                                                     (16)

    The sum of eq. 16 is computed as the product 1ᵀ dZ with a vector of ones, (1, N) @ (N, D_out):
    the same numbers (a test checks it), but BLAS runs it on every core, where ``np.sum`` uses one.

    Shapes: X (N, D_in) -> Z (N, D_out); W (D_in, D_out); b (D_out,)

    W is drawn by ``init`` ("glorot_uniform" or "he_normal"), b starts at zero. Computes in
    the result dtype of X and W: a float32 layer maps float32 to float32 (integer inputs are read as
    float32); build it with ``dtype=np.float64`` for gradient checks.

    >>> Linear(3, 2, rng=0)(np.ones((4, 3), np.float32)).shape
    (4, 2)
    """

    def __init__(self, in_features, out_features, init="glorot_uniform", rng=None, dtype=np.float32):
        super().__init__()
        self.in_features = check_int(in_features, "in_features", low=1)
        self.out_features = check_int(out_features, "out_features", low=1)
        init_W = initialiser(init)
        dtype = float_dtype(dtype)
        self.params["W"] = init_W(self.in_features, self.out_features, rng, dtype)
        self.params["b"] = np.zeros(self.out_features, dtype)
        self.grads["W"] = np.zeros_like(self.params["W"])
        self.grads["b"] = np.zeros_like(self.params["b"])
        self._X = None  # the cache: the input, for dW = Xᵀ dZ

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features})"

    def forward(self, X):
        X = as_float_array(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.in_features:
            raise ShapeError(f"{self!r} expects input (N, {self.in_features}), got {X.shape}")
        W, b = self.params["W"], self.params["b"]
        Z = self._output("Z", (X.shape[0], self.out_features), np.result_type(X, W))
        np.matmul(X, W, out=Z)  # (N, D_in) @ (D_in, D_out) -> (N, D_out)
        Z += b  # broadcast over the rows
        self._X = X
        return Z

    def backward(self, dZ):
        X = self._cached(self._X)
        dZ = self._check_dY(dZ, (X.shape[0], self.out_features))
        np.matmul(X.T, dZ, out=self.grads["W"])  # dW = Xᵀ dZ: (D_in, N) @ (N, D_out) -> (D_in, D_out)
        np.matmul(self._ones(X.shape[0], dZ.dtype), dZ, out=self.grads["b"])  # db = Σ_i dZ_i = 1ᵀ dZ
        if not self.input_grad:
            return None
        W = self.params["W"]
        dX = self._output("dX", X.shape, np.result_type(dZ, W))
        return np.matmul(dZ, W.T, out=dX)  # dX = dZ Wᵀ: (N, D_out) @ (D_out, D_in) -> (N, D_in)
