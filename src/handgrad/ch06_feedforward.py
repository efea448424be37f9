"""Chapter 6 — Deep feedforward networks: layers, output units, cross entropy and back-propagation.

Book §6.1 (learning XOR with an affine layer and a ReLU), §6.2.2 (softmax output units and the
cross-entropy cost), §6.3 (hidden units), §6.5 (back-propagation); design report §3.5, eqs. 13–19.

Every layer follows one convention (``Layer``): named parameters in ``params`` and gradients of the
same names in ``grads``, ``forward(X)`` caching what ``backward(dY)`` needs, and ``backward`` returning
dX while writing the parameter gradients *in place* into the arrays of ``grads``. So the dicts of
references built once (``params, grads = model.params, model.grads``) stay valid for a whole training run.

Buffers: in training mode a layer writes its forward output and its dX into arrays it owns and reuses
them while the batch shape is unchanged. Such a result is valid until the layer's next ``forward``
(respectively ``backward``) — the caching caveat PyTorch has for in-place operations. Copy it
(``Y.copy()``) to keep it longer. In eval mode (``layer.eval()``) every forward returns fresh arrays, so
evaluation code may keep the outputs of many batches.
"""

import numpy as np

from . import ShapeError
from .ch04_numerical import log_softmax, sigmoid, softmax

__all__ = [
    "Layer",
    "Linear",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "glorot_uniform",
    "he_normal",
    "cross_entropy_from_logits",
    "cross_entropy_grad",
    "SoftmaxCrossEntropy",
    "Sequential",
]


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

    def __call__(self, X):
        return self.forward(X)

    def __repr__(self):
        return f"{type(self).__name__}()"

    # helpers for subclasses ----------------------------------------------------------------------

    def _buffer(self, name, shape, dtype):
        """An output array: reused across calls in training mode, fresh in eval mode (see module doc)."""
        if not self.training:
            return np.empty(shape, dtype)
        buf = self._buffers.get(name)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(shape, dtype)
        return buf

    def _cached(self, cache):
        if cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        return cache

    def _check_dY(self, dY, expected_shape):
        dY = np.asarray(dY)
        if dY.shape != tuple(expected_shape):
            raise ShapeError(f"{self!r}.backward expects dY of the forward output's shape {tuple(expected_shape)}, got {dY.shape}")
        return dY


def _as_float(X):
    """X as a float array: float inputs keep their dtype, anything else becomes float32."""
    X = np.asarray(X)
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float32)
    return X


# --------------------------------------------------------------------------------------------------
# §6.1, §8.4 Initialisation
# --------------------------------------------------------------------------------------------------


def _check_fans(fan_in, fan_out, names=("fan_in", "fan_out")):
    for name, v in zip(names, (fan_in, fan_out)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def glorot_uniform(fan_in, fan_out, rng=None, dtype=np.float32):
    """Glorot (Xavier) uniform weights: W_ij ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (book §8.4).

    Keeps the variance of activations and gradients roughly constant across layers (Var W = 2/(fan_in +
    fan_out)). ``rng`` is a ``np.random.Generator``, a seed or None. Drawn in float64 and rounded, so the
    float32 and float64 weights of one seed agree. Shape (fan_in, fan_out).
    """
    _check_fans(fan_in, fan_out)
    rng = np.random.default_rng(rng)
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=(fan_in, fan_out)).astype(dtype)


def he_normal(fan_in, fan_out, rng=None, dtype=np.float32):
    """He (Kaiming) normal weights: W_ij ~ N(0, 2 / fan_in), suited to ReLU units (book §8.4).

    A ReLU zeroes half of its inputs on average, so twice the variance keeps activations from shrinking
    layer after layer. Shape (fan_in, fan_out).
    """
    _check_fans(fan_in, fan_out)
    rng = np.random.default_rng(rng)
    return (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(dtype)


_INITIALISERS = {"glorot_uniform": glorot_uniform, "he_normal": he_normal}


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

    Shapes: X (N, D_in) -> Z (N, D_out); W (D_in, D_out); b (D_out,)

    W is drawn by ``init`` ("glorot_uniform" or "he_normal"), b starts at zero. Computes in
    the result dtype of X and W: a float32 layer maps float32 to float32 (integer inputs are read as
    float32); build it with ``dtype=np.float64`` for gradient checks.

    >>> Linear(3, 2, rng=0)(np.ones((4, 3), np.float32)).shape
    (4, 2)
    """

    def __init__(self, in_features, out_features, init="glorot_uniform", rng=None, dtype=np.float32):
        super().__init__()
        _check_fans(in_features, out_features, ("in_features", "out_features"))
        if init not in _INITIALISERS:
            raise ValueError(f"init must be one of {sorted(_INITIALISERS)}, got {init!r}")
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise ValueError(f"dtype must be a floating type, got {dtype}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.params["W"] = _INITIALISERS[init](self.in_features, self.out_features, rng, dtype)
        self.params["b"] = np.zeros(self.out_features, dtype)
        self.grads["W"] = np.zeros_like(self.params["W"])
        self.grads["b"] = np.zeros_like(self.params["b"])
        self._X = None  # the cache: the input, for dW = Xᵀ dZ

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features})"

    def forward(self, X):
        X = _as_float(X)
        if X.ndim != 2 or X.shape[1] != self.in_features:
            raise ShapeError(f"{self!r} expects input (N, {self.in_features}), got {X.shape}")
        W, b = self.params["W"], self.params["b"]
        Z = self._buffer("Z", (X.shape[0], self.out_features), np.result_type(X, W))
        np.matmul(X, W, out=Z)  # (N, D_in) @ (D_in, D_out) -> (N, D_out)
        Z += b  # broadcast over the rows
        self._X = X
        return Z

    def backward(self, dZ):
        X = self._cached(self._X)
        dZ = self._check_dY(dZ, (X.shape[0], self.out_features))
        np.matmul(X.T, dZ, out=self.grads["W"])  # dW = Xᵀ dZ: (D_in, N) @ (N, D_out) -> (D_in, D_out)
        np.sum(dZ, axis=0, out=self.grads["b"])  # db = Σ_i dZ_i
        if not self.input_grad:
            return None
        W = self.params["W"]
        dX = self._buffer("dX", X.shape, np.result_type(dZ, W))
        return np.matmul(dZ, W.T, out=dX)  # dX = dZ Wᵀ: (N, D_out) @ (D_out, D_in) -> (N, D_in)


# --------------------------------------------------------------------------------------------------
# §6.3 Hidden units
# --------------------------------------------------------------------------------------------------


class ReLU(Layer):
    """Rectified linear unit, ReLU(z) = max(0, z) elementwise (book §6.3.1; design report eq. 17).

    Forward: Y = max(0, X), recording the mask 1{X > 0}.   Backward: dX = dY ⊙ 1{X > 0}.
    (At exactly 0 the derivative is taken as 0, as PyTorch does.)

    Shapes: X (...) -> Y (...), same dtype.
    """

    def __init__(self):
        super().__init__()
        self._mask = None  # the cache

    def forward(self, X):
        X = _as_float(X)
        mask = self._buffer("mask", X.shape, np.bool_)
        np.greater(X, 0, out=mask)
        Y = self._buffer("Y", X.shape, X.dtype)
        np.maximum(X, 0, out=Y)  # eq. 17
        self._mask = mask
        return Y

    def backward(self, dY):
        mask = self._cached(self._mask)
        dY = self._check_dY(dY, mask.shape)
        if not self.input_grad:
            return None
        dX = self._buffer("dX", mask.shape, dY.dtype)
        return np.multiply(dY, mask, out=dX)


class LeakyReLU(Layer):
    """Leaky ReLU, max(0, z) + α min(0, z) with a small slope α for z < 0 (book §6.3.2).

    Forward: Y = X ⊙ s with s = 1 where X > 0 and α elsewhere.   Backward: dX = dY ⊙ s.

    Shapes: X (...) -> Y (...), same dtype.
    """

    def __init__(self, alpha=0.01):
        super().__init__()
        if not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a non-negative number, got {alpha!r}")
        self.alpha = float(alpha)
        self._slope = None  # the cache: the local derivative s

    def __repr__(self):
        return f"LeakyReLU(alpha={self.alpha})"

    def forward(self, X):
        X = _as_float(X)
        slope = self._buffer("slope", X.shape, X.dtype)
        slope[...] = np.where(X > 0, X.dtype.type(1), X.dtype.type(self.alpha))
        Y = self._buffer("Y", X.shape, X.dtype)
        np.multiply(X, slope, out=Y)
        self._slope = slope
        return Y

    def backward(self, dY):
        slope = self._cached(self._slope)
        dY = self._check_dY(dY, slope.shape)
        if not self.input_grad:
            return None
        dX = self._buffer("dX", slope.shape, np.result_type(dY, slope))
        return np.multiply(dY, slope, out=dX)


class Sigmoid(Layer):
    """Logistic sigmoid unit, σ(z) = 1 / (1 + e^{-z}) (book §6.2.2.2, §6.3.2), via chapter 4's stable σ.

    Forward: Y = σ(X).   Backward: dX = dY ⊙ Y ⊙ (1 − Y)   (σ' = σ(1 − σ)).

    Shapes: X (...) -> Y (...), same dtype.
    """

    def __init__(self):
        super().__init__()
        self._Y = None  # the cache: the output

    def forward(self, X):
        X = _as_float(X)
        Y = np.asarray(sigmoid(X), dtype=X.dtype)
        self._Y = Y
        return Y

    def backward(self, dY):
        Y = self._cached(self._Y)
        dY = self._check_dY(dY, Y.shape)
        if not self.input_grad:
            return None
        dX = self._buffer("dX", Y.shape, np.result_type(dY, Y))
        np.subtract(1, Y, out=dX)  # 1 − Y
        dX *= Y  # Y (1 − Y)
        dX *= dY
        return dX


class Tanh(Layer):
    """Hyperbolic tangent unit, tanh(z) = 2σ(2z) − 1 (book §6.3.2).

    Forward: Y = tanh(X).   Backward: dX = dY ⊙ (1 − Y²).

    Shapes: X (...) -> Y (...), same dtype.
    """

    def __init__(self):
        super().__init__()
        self._Y = None  # the cache: the output

    def forward(self, X):
        X = _as_float(X)
        Y = self._buffer("Y", X.shape, X.dtype)
        np.tanh(X, out=Y)
        self._Y = Y
        return Y

    def backward(self, dY):
        Y = self._cached(self._Y)
        dY = self._check_dY(dY, Y.shape)
        if not self.input_grad:
            return None
        dX = self._buffer("dX", Y.shape, np.result_type(dY, Y))
        np.multiply(Y, Y, out=dX)  # Y²
        np.subtract(1, dX, out=dX)  # 1 − Y²
        dX *= dY
        return dX


# --------------------------------------------------------------------------------------------------
# §6.2.2 Softmax output units and the cross-entropy cost (eqs. 18–19)
# --------------------------------------------------------------------------------------------------


def _check_targets(logits, y):
    """Validate (logits, y); return (logits as a float array, y as int labels (N,) or probabilities (N, C))."""
    logits = _as_float(logits)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ShapeError(f"logits must have shape (N, C) with N, C >= 1, got {logits.shape}")
    n, c = logits.shape
    y = np.asarray(y)
    if y.ndim == 1:
        if y.shape[0] != n:
            raise ShapeError(f"{n} rows of logits {logits.shape} but {y.shape[0]} labels {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels of shape (N,) must be integers, got dtype {y.dtype}")
        if y.min() < 0 or y.max() >= c:
            bad = y[(y < 0) | (y >= c)]
            raise ValueError(f"labels must lie in [0, {c}) for {c} classes, got {bad[:5].tolist()}")
        return logits, y
    if y.ndim == 2:
        if y.shape != logits.shape:
            raise ShapeError(f"one-hot/probability targets must have the logits' shape {logits.shape}, got {y.shape}")
        y = _as_float(y)
        tol = np.sqrt(np.finfo(y.dtype).eps)
        if np.any(y < 0) or not np.allclose(y.sum(axis=1), 1.0, rtol=0, atol=tol):
            raise ValueError("one-hot/probability targets must be non-negative with rows summing to 1")
        return logits, y
    raise ShapeError(f"targets must be labels (N,) or one-hot/probabilities (N, C), got shape {y.shape}")


def cross_entropy_from_logits(logits, y):
    """Mean cross entropy of softmax(logits) against targets (book §6.2.2.3; design report eq. 18).

        L = −(1/B) Σ_i log softmax(L)_{i, y_i}                                          (18)
        (with targets q as probabilities: L = −(1/B) Σ_i Σ_j q_ij log softmax(L)_ij)

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

        ∂L/∂L_ij = (softmax(L)_ij − 1{j = y_i}) / B                                      (19)

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

    ``forward(logits, y)`` computes P = softmax(L) once (shift by the row max, exponentiate, normalise)
    and the loss of eq. 18 as logsumexp(L_i) − L_{i,y_i} from the same pass; ``backward()`` reuses P:

        dL = (P − onehot(y)) / B,

    which *is* eq. 19 — the same numbers as ``cross_entropy_grad`` (a test checks it), without a second
    softmax. The returned gradient lives in a buffer reused by the next ``backward`` with the same shape.
    """

    def __init__(self):
        self._cache = None  # (P, y)
        self._buffers = {}

    def _buffer(self, name, shape, dtype):
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(shape, dtype)
        return buf

    def __call__(self, logits, y):
        return self.forward(logits, y)

    def forward(self, logits, y):
        logits, y = _check_targets(logits, y)
        n = logits.shape[0]
        m = logits.max(axis=1, keepdims=True)  # (N, 1) row maxima
        P = self._buffer("P", logits.shape, logits.dtype)
        with np.errstate(under="ignore", over="ignore"):  # L − m may overflow to −inf: e^{−inf} = 0 is right
            np.subtract(logits, m, out=P)
            np.exp(P, out=P)  # e^{L − m}, the largest entry of each row is 1
        s = P.sum(axis=1, keepdims=True)  # (N, 1), in [1, C]
        P /= s  # softmax
        # logsumexp(L_i) = m_i + log s_i; the difference is taken in float64 so it cannot overflow
        lse = m[:, 0].astype(np.float64) + np.log(s[:, 0].astype(np.float64))
        if y.ndim == 1:
            picked = logits[np.arange(n), y].astype(np.float64)  # L_{i, y_i}
            loss = float(np.mean(lse - picked))
        else:
            # −Σ_j q_ij (L_ij − lse_i) = lse_i − Σ_j q_ij L_ij   (rows of q sum to 1)
            loss = float(np.mean(lse - np.einsum("ij,ij->i", y.astype(np.float64), logits.astype(np.float64))))
        self._cache = (P, y)
        return loss

    def backward(self):
        if self._cache is None:
            raise RuntimeError("SoftmaxCrossEntropy: backward called before forward")
        P, y = self._cache
        n = P.shape[0]
        G = self._buffer("G", P.shape, P.dtype)
        np.multiply(P, 1.0 / n, out=G)  # P / B
        if y.ndim == 1:
            G[np.arange(n), y] -= G.dtype.type(1.0 / n)  # − onehot / B
        else:
            G -= y.astype(G.dtype, copy=False) / n
        return G


# --------------------------------------------------------------------------------------------------
# §6.5 Back-propagation through a chain of layers
# --------------------------------------------------------------------------------------------------


class Sequential(Layer):
    """A chain of layers applied in order, back-propagated in reverse (book §6.5; as PyTorch's Sequential).

    ``forward`` composes the layers' forwards; ``backward(dY)`` runs the chain rule from the last layer
    to the first and returns dX of the first (eq. 14 for each Linear). With
    ``backward(dY, need_input_grad=False)`` the layers before the first parameterised one are skipped
    and that one computes only its parameter gradients (saving one matrix product), returning None.

    ``parameters()`` lists (name, param, grad) with dotted names "<index>.<param>" such as "0.W"; the
    arrays are the layers' own, so updating them in place updates the model. ``params``/``grads`` give
    the same as dicts, so a Sequential is itself a Layer.
    """

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            if not all(hasattr(layer, m) for m in ("forward", "backward", "train")):
                raise TypeError(f"Sequential expects layers (forward, backward, train); argument {i} is {layer!r}")
        self.layers = list(layers)
        self.training = True

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner})"

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def parameters(self):
        out = []
        for i, layer in enumerate(self.layers):
            if hasattr(layer, "parameters"):
                out.extend((f"{i}.{name}", p, g) for name, p, g in layer.parameters())
            else:
                out.extend((f"{i}.{name}", p, layer.grads[name]) for name, p in layer.params.items())
        return out

    @property
    def params(self):
        return {name: p for name, p, _ in self.parameters()}

    @property
    def grads(self):
        return {name: g for name, _, g in self.parameters()}

    def train(self, mode=True):
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def forward(self, X):
        for layer in self.layers:
            X = layer.forward(X)
        return X

    def backward(self, dY, need_input_grad=True):
        stop = 0
        if not need_input_grad:
            has_params = [bool(getattr(layer, "params", None)) for layer in self.layers]
            stop = has_params.index(True) if any(has_params) else len(self.layers)
        for i in range(len(self.layers) - 1, stop - 1, -1):
            layer = self.layers[i]
            if i == stop and not need_input_grad:
                saved = layer.input_grad
                layer.input_grad = False
                try:
                    layer.backward(dY)
                finally:
                    layer.input_grad = saved
                return None
            dY = layer.backward(dY)
        return None if not need_input_grad else dY

    def predict(self, X, batch_size=None):
        """Class indices argmax_j f(X)_j, evaluated in eval mode in batches; the previous modes are restored."""
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        X = np.asarray(X)
        modes = [layer.training for layer in self.layers]
        own = self.training
        self.eval()
        try:
            n = X.shape[0] if X.ndim else 0
            step = n if batch_size is None else int(batch_size)
            parts = [np.argmax(self.forward(X[i:i + step]), axis=1) for i in range(0, n, max(step, 1))]
        finally:
            self.training = own
            for layer, mode in zip(self.layers, modes):
                layer.train(mode)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)
