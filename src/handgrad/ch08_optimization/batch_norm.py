"""Batch normalisation (book §8.7.1): re-centre and re-scale every feature over the mini-batch.

Normalising a layer's inputs to zero mean and unit variance per feature removes the effect of the
earlier layers on their first two moments, so a gradient step on one layer disturbs the next one less
(§8.7.1's second-order argument); the learned γ and β give the expressive power back (eq. 8.35–8.36).

Layer state convention (read by the application's checkpoints). Besides ``params`` and ``grads``, a layer
whose behaviour depends on arrays that are *not* trained by gradients exposes them as ``layer.state``, a dict
name → ndarray. The arrays are updated in place, so references stay valid; to save a model, store
``layer.state`` beside ``layer.params``; to restore, copy into them (``layer.state[k][...] = saved[k]``).
The batch-norm layers here hold ``state = {"running_mean": (C,), "running_var": (C,)}``, the names of
PyTorch's buffers. Layers without such arrays have no ``state`` attribute (or an empty dict).

Synchronised statistics (§12.1.3, data parallelism). When one batch is split over K replicas, each holding
m_k of the m = Σ_k m_k values of a channel, the batch statistics need sums over all of them. The layer
forms its own replica's sums and passes each through ``sum_across``, a hook that returns the elementwise
sum of an array over the replicas (every replica calls it with the same shape, in the same order). It is
the identity by default, so one process computes exactly the book's equations; a data-parallel trainer
sets it on each instance (``layer.sum_across = allreduce_sum``). This module never knows how the sums
travel.
"""

import numpy as np

from .. import ShapeError
from .._checks import check_int, check_number
from ..ch02_linear_algebra import as_float_array
from ..ch04_numerical import float_dtype
from ..ch06_feedforward import Layer

__all__ = ["BatchNorm1D", "BatchNorm2D"]


class _BatchNorm(Layer):
    """Batch normalisation over every axis but the channel axis 1 (see ``BatchNorm1D`` for the equations)."""

    _ndim = None  # the input rank: 2 for (N, C), 4 for (N, C, H, W)
    _layout = None

    @staticmethod
    def sum_across(a):
        """The elementwise sum of ``a`` over the replicas sharing the batch: ``a`` itself in one process."""
        return a

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32):
        super().__init__()
        self.num_features = check_int(num_features, "num_features", low=1)
        self.eps = check_number(eps, "eps", low=0, low_open=True)
        self.momentum = check_number(momentum, "momentum", low=0, high=1)
        dtype = float_dtype(dtype)
        C = self.num_features
        self.params["gamma"] = np.ones(C, dtype)
        self.params["beta"] = np.zeros(C, dtype)
        self.grads["gamma"] = np.zeros(C, dtype)
        self.grads["beta"] = np.zeros(C, dtype)
        self.state = {"running_mean": np.zeros(C, dtype), "running_var": np.ones(C, dtype)}
        self._cache = None  # (x̂, 1/σ per channel, training?, m over every replica)

    def __repr__(self):
        return f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum})"

    def forward(self, X):
        X = as_float_array(X, np.float32)
        if X.ndim != self._ndim or X.shape[1] != self.num_features:
            expected = self._layout.format(C=self.num_features)
            raise ShapeError(f"{self!r} expects input {expected}, got {X.shape}")
        axes = (0,) + tuple(range(2, X.ndim))  # every axis but the channels
        bshape = (1, self.num_features) + (1,) * (X.ndim - 2)  # broadcasts a (C,) vector over X
        gamma, beta = self.params["gamma"], self.params["beta"]
        dtype = np.result_type(X, gamma)
        xhat = self._buffer("xhat", X.shape, dtype)
        m = X.size // self.num_features  # values per channel (in this replica's part of the batch)
        if self.training:
            mean, m = self._batch_mean(X, axes, dtype)  # μ_B = (1/m) Σ_i x_i, m over every replica
            if m < 2:
                raise ValueError(
                    f"{self!r} needs more than 1 value per channel in training mode, got {X.shape}"
                )
            np.subtract(X, mean.reshape(bshape), out=xhat)  # x − μ
            (var,) = self._batch_sums(self._channel_sum(np.square(xhat), axes, dtype))
            var /= m  # σ²_B, biased: divides by m
            self._update_running(mean, var, m)
        else:
            mean, var = self.state["running_mean"].astype(dtype), self.state["running_var"].astype(dtype)
            np.subtract(X, mean.reshape(bshape), out=xhat)
        inv_std = 1.0 / np.sqrt(var + dtype.type(self.eps))  # 1/σ, (C,)
        xhat *= inv_std.reshape(bshape)  # x̂ = (x − μ) / σ
        Y = self._output("Y", X.shape, dtype)
        np.multiply(xhat, gamma.reshape(bshape), out=Y)
        Y += beta.reshape(bshape)  # y = γ x̂ + β
        self._cache = (xhat, inv_std, self.training, m)
        return Y

    def _channel_sum(self, A, axes=(0,), dtype=None):
        """Σ of A over the batch (and positions) per channel, (C,), this replica's part: every batch-wide
        sum of the layer goes through here (μ and σ² forward, dβ and dγ backward; also
        ``ch09_convolution.fused``'s). A 2-D (m, C) array is summed as the product 1ᵀ A (BLAS, every core)."""
        if A.ndim == 2 and tuple(axes) == (0,) and (dtype is None or np.dtype(dtype) == A.dtype):
            return self._ones(A.shape[0], A.dtype) @ A
        return A.sum(axis=axes, dtype=dtype)

    def _batch_mean(self, A, axes=(0,), dtype=None):
        """(μ, m): the per-channel mean of A over the whole batch — every replica's part when ``sum_across``
        is set (module docstring) — and the number m of values per channel it averages."""
        local, m = self._channel_sum(A, axes, dtype), A.size // self.num_features
        if "sum_across" not in vars(self):  # one process: (1/m) Σ_i, in the layer's dtype
            return local / m, m
        total = self.sum_across(np.append(local.astype(np.float64), m))  # Σ_i and the count, in one call
        m = int(total[-1])
        return (total[:-1] / m).astype(local.dtype), m

    def _batch_sums(self, *sums):
        """This replica's per-channel sums, each summed over every replica in one ``sum_across`` call (the
        sums themselves in one process)."""
        if "sum_across" not in vars(self):
            return sums
        C = self.num_features
        total = self.sum_across(np.concatenate(sums))
        return tuple(total[i * C : (i + 1) * C] for i in range(len(sums)))

    def _update_running(self, mean, var, m):
        """running ← (1 − momentum) running + momentum · batch statistic (variance unbiased, × m/(m−1))."""
        rm, rv = self.state["running_mean"], self.state["running_var"]
        rm *= 1 - self.momentum
        rm += self.momentum * mean
        rv *= 1 - self.momentum
        rv += self.momentum * var * (m / (m - 1))

    def backward(self, dY):
        xhat, inv_std, training, m = self._cached(self._cache)
        dY = self._check_dY(dY, xhat.shape)
        axes = (0, *tuple(range(2, xhat.ndim)))
        bshape = (1, self.num_features) + (1,) * (xhat.ndim - 2)
        gamma = self.params["gamma"]
        dgamma, dbeta = self.grads["gamma"], self.grads["beta"]
        dbeta[...] = self._channel_sum(dY, axes)  # ∂L/∂β = Σ dy
        tmp = self._output("dX", xhat.shape, np.result_type(dY, xhat))  # scratch first, then dX
        np.multiply(dY, xhat, out=tmp)
        dgamma[...] = self._channel_sum(tmp, axes)  # ∂L/∂γ = Σ dy ⊙ x̂
        if not self.input_grad:
            return None
        dX = tmp
        if not training:  # μ and σ are constants in eval mode: dx = γ dy / σ
            np.multiply(dY, (gamma * inv_std).reshape(bshape), out=dX)
            return dX
        # dβ and dγ over the whole batch: this replica's sums (its own grads) summed over every replica
        dbeta_all, dgamma_all = self._batch_sums(dbeta, dgamma)
        # BatchNorm1D's compact formula: dx = (γ / (m σ̃)) (m dy − dβ − x̂ dγ) = (γ / σ̃) (dy − (dβ + x̂ dγ) / m)
        np.multiply(xhat, dgamma_all.reshape(bshape), out=dX)
        dX += dbeta_all.reshape(bshape)  # dβ + x̂ dγ
        dX *= -1.0 / m
        dX += dY
        dX *= (gamma * inv_std).reshape(bshape)
        return dX


class BatchNorm1D(_BatchNorm):
    """Batch normalisation of (N, C) inputs, as ``torch.nn.BatchNorm1d`` (book §8.7.1, eqs. 8.35–8.36).

    Training mode, per feature c over the m = N values of the batch:

        μ = (1/m) Σ_i x_i,    σ² = (1/m) Σ_i (x_i − μ)²    (biased),    x̂_i = (x_i − μ) / √(σ² + eps),
        y_i = γ x̂_i + β,

    and the running statistics move towards the batch's (momentum 0.1 weights the new value, as PyTorch):

        running_mean ← (1 − momentum) running_mean + momentum μ
        running_var  ← (1 − momentum) running_var  + momentum σ² m / (m − 1)    (unbiased)

    Eval mode (``layer.eval()``) normalises with running_mean and running_var instead.

    Backward, for upstream gradient dy (training mode). With σ̃ = √(σ² + eps), x̂ depends on x_j directly and
    through μ and σ²: ∂μ/∂x_j = 1/m, ∂σ²/∂x_j = 2 (x_j − μ)/m, so

        ∂L/∂x̂_i = γ dy_i
        ∂L/∂σ²  = Σ_i ∂L/∂x̂_i (x_i − μ) · (−½) σ̃⁻³
        ∂L/∂μ   = −Σ_i ∂L/∂x̂_i / σ̃            (the σ² term's Σ_i (x_i − μ) vanishes)
        ∂L/∂x_j = ∂L/∂x̂_j / σ̃ + ∂L/∂σ² · 2 (x_j − μ)/m + ∂L/∂μ / m.

    Substituting x_i − μ = σ̃ x̂_i and collecting the terms gives the compact form the code uses:

        dγ = Σ_i dy_i x̂_i,     dβ = Σ_i dy_i,
        dx_j = (γ / (m σ̃)) (m dy_j − dβ − x̂_j dγ).

    In eval mode μ and σ are constants: dx = γ dy / σ̃.

    Across K replicas (module docstring; §12.1.3), replica k holding the values i ∈ I_k, m = Σ_k m_k:

        μ  = (1/m) Σ_k S_k(x),           σ² = (1/m) Σ_k S_k((x − μ)²),       S_k(v) = Σ_{i ∈ I_k} v_i,
        dβ = Σ_k S_k(dy),                dγ = Σ_k S_k(dy ⊙ x̂),

    each Σ_k one ``sum_across`` call (μ with the count m, then σ², then dβ and dγ together), so every
    replica's x̂, y and dx are the rows a single process computes on the whole batch. The layer's
    ``grads`` keep this replica's own S_k(dy) and S_k(dy ⊙ x̂): the trainer's all-reduce of every
    gradient adds them up like any other parameter's.

    Shapes: X (N, C) -> Y (N, C); gamma, beta (C,); ``state`` = {"running_mean": (C,), "running_var": (C,)}
    (module docstring). Computes in the result dtype of X and gamma (float32 by default).
    """

    _ndim = 2
    _layout = "(N, {C})"


class BatchNorm2D(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs per channel, as ``torch.nn.BatchNorm2d`` (book §8.7.1).

    The equations of ``BatchNorm1D`` with each channel's statistics taken over all m = N·H·W values of the
    batch, so a convolutional feature map is normalised the same way at every position (§9.2's parameter
    sharing carries over to the normalisation).

    Shapes: X (N, C, H, W) -> Y (N, C, H, W); gamma, beta (C,); ``state`` as for ``BatchNorm1D``.
    """

    _ndim = 4
    _layout = "(N, {C}, H, W)"
