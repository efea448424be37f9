"""A fast path: convolution → batch norm → ReLU → 2×2 max-pool as one block (§9.1, §8.7.1, §6.3.1, §9.3).

The four layers of a classic convolutional block, composed as the book writes them, are

    y = conv(x) + b        x̂ = (y − μ) / σ        z = γ x̂ + β        h = max(0, z)        out = maxpool₂ₓ₂(h)

with μ, σ the batch statistics of each channel of y. ``ConvBNReLUPool`` computes the same numbers with
fewer passes over the full-size maps, using three facts:

1. ReLU is monotone, so it commutes with the max: maxpool(max(0, z)) = max(0, maxpool(z)).
2. Batch norm is a per-channel affine map z = a·(y − μ) + β with a = γ/σ. Where a > 0 it is increasing, so
   maxpool(z) = a·(maxpool(y − μ)) + β; where γ < 0 it is decreasing and the maximum of z is at the
   *minimum* of y: maxpool(z) = a·(minpool(y − μ)) + β. So the block pools y and never writes x̂, z or h
   at full size.
3. The bias b cancels in y − μ (μ includes it), so the product's output is used without adding it (it
   still enters the running mean, and its gradient 1ᵀ dy is computed as the convolution's is).
4. The pool commutes with subtracting μ too, and σ² = (1/m) Σ y² − μ², so the block reads y for the two
   sums and pools y itself: y − μ is never written at full size. That one-pass form loses relative
   precision 1 + μ²/σ² times the sum's rounding, so it is used only where μ² ≤ 10 σ² (the recipe's
   blocks stay below 4); elsewhere the two-pass form of §8.7.1 runs over a centred copy (``_variance``).

Backward, with g = d out ⊙ 1{maxpool(z) > 0} at the pooled size and P = the pooled y − μ there: only the
window's chosen position receives dz, so the sums of §8.7.1 run over the pooled size,

    dβ = Σ g,     dγ = Σ g ⊙ P / σ,

and batch norm's dx = (γ/σ)(dz − dβ/m − x̂ dγ/m) becomes, at full size, one affine map of y − μ plus a·g
added at each window's chosen position:

    dy = −(a dγ / (m σ)) (y − μ) − a dβ / m   (+ a g at the argmax)

which then goes through ``Conv2D``'s backward (dW = colsᵀ dy, db = 1ᵀ dy, dX one kernel offset at a time).

The first block of an image network (one input channel, even output sizes) orders the column matrix's
rows — and so y's — by window offset: row (k, b, p, q) is output pixel (2p + i, 2q + j) of example b for
window offset k = 2i + j. The four offsets of every window are then four contiguous quarters of y, so the
pool, its masks and the gradient's placement read and write whole arrays, not strided slabs; batch norm's
sums and dW = colsᵀ dy do not depend on the order of the rows. Its backward, when no dX is asked for (the
first layer's) and σ² came from the one-pass form, never writes dy: with E = [cols 1]ᵀ,

    [dW_matᵀ; dbᵀ] = E dy = (E y) diag(c) + (E 1) dᵀ + Σ_k E_k (a g ⊙ mask_k)

for dy = c ⊙ y + d + (a g at the argmax), where E_k is the quarter of E's columns of window offset k
(``_grads_without_dy``): one product reads y, and four products over quarters place the argmax terms.

Inside the block the maps are channels-last (N, H, W, C): that is the order the im2col product writes,
so no transposes are needed; ``FusedSequential`` passes channels-last maps from one block to the next
and gives the last block's output back in NCHW before ``Flatten``. In eval mode the batch norm is folded
into the convolution (W' = W·γ/σ, b' = (b − running mean)·γ/σ + β) and nothing is kept for backward.

Ties and rounding. Exact ties of y inside a window route the gradient to the first position in
row-major order, the same position the composition (and PyTorch) picks; where γ = 0 every z of a window
is equal and the first position gets it, as in the composition. Two *different* values of y that round
to the same z in the composition are a tie there (first position) but not here (the larger y): the
gradient then goes to another position of the same window, an O(rounding) case the tests leave out. NaN
inputs are not routed as ``MaxPool2D`` routes them. Everything else equals the composition of the separate
layers to rounding (tests: float64 to 1e-9, float32 to float32 tolerance, negative γ, ties).
"""

import itertools
from types import SimpleNamespace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import ShapeError
from ..ch02_linear_algebra import as_float_array
from ..ch06_feedforward import Layer, ReLU, Sequential
from ..ch08_optimization import BatchNorm2D
from .convolution import (
    Conv2D,
    _check_nchw,
    _columns,
    _geometry,
    _im2col_nhwc,
    _input_grad_nhwc,
    _store_weight_grad,
    _weight_matrix,
)
from .pooling import MaxPool2D

__all__ = ["ConvBNReLUPool", "FusedSequential", "fusable"]


def _im2col_window_major(Xp, kernel, stride, out_hw, out):
    """The column matrix of a one-channel padded batch Xp (N, H̃, W̃, 1), transposed into ``out`` (kh·kw, M),
    with its M = N·OH·OW rows ordered (window offset (i, j), b, p, q) for output pixel (2p + i, 2q + j):
    each 2×2 pooling window's four offsets are then four contiguous quarters (module doc)."""
    (kh, kw), (sh, sw), (OH, OW) = kernel, stride, out_hw
    N, PH, PW = Xp.shape[0], OH // 2, OW // 2
    win = sliding_window_view(Xp[..., 0], kernel, axis=(1, 2))  # (N, H̃−kh+1, W̃−kw+1, kh, kw), a view
    quarters = out.reshape(kh, kw, 4, N, PH, PW)
    for i in (0, 1):
        for j in (0, 1):
            src = win[:, sh * i :: 2 * sh, sw * j :: 2 * sw][:, :PH, :PW]  # (N, PH, PW, kh, kw)
            np.copyto(quarters[:, :, 2 * i + j], src.transpose(3, 4, 0, 1, 2))
    return out


def _channel_sum_squares(rows, OW, C):
    """Σ y² per channel of the (N·OH, OW·C) rows of a channels-last map: one read, nothing written."""
    return np.einsum("ij,ij->j", rows, rows).reshape(OW, C).sum(axis=0)


def fusable(layers):
    """True if ``layers`` are Conv2D, BatchNorm2D (of its channels), ReLU, MaxPool2D(2) in that order."""
    if len(layers) != 4:
        return False
    conv, bn, act, pool = layers
    return (
        type(conv) is Conv2D
        and type(bn) is BatchNorm2D
        and type(act) is ReLU
        and type(pool) is MaxPool2D
        and bn.num_features == conv.out_channels
        and pool.kernel_size == (2, 2)
        and pool.stride == (2, 2)
    )


class ConvBNReLUPool(Layer):
    """Conv2D → BatchNorm2D → ReLU → MaxPool2D(2) in one pass, sharing the four layers' arrays (module doc).

    Forward:  out = maxpool₂ₓ₂(max(0, γ (conv(x) + b − μ)/σ + β)), computed as
              max(0, (γ/σ) · pool(conv(x) − μ') + β) with pool = max-pool where γ ≥ 0, min-pool where γ < 0.
    Backward: the composition's gradients, dy = c·(y − μ) + d + (γ/σ) g at each window's argmax (module doc).

    ``params``/``grads`` are the layers' own arrays (a training step through the block updates the
    layers); batch norm's running statistics are updated as ``BatchNorm2D`` does.

    Shapes: X (N, C_in, H, W), or (N, H, W, C_in) with ``channels_last_in`` -> (N, C_out, H'/2, W'/2), or
    channels-last with ``channels_last_out``; H', W' the convolution's output size (odd sizes floor).
    """

    def __init__(self, conv, bn, relu, pool, channels_last_in=False, channels_last_out=False):
        if not fusable([conv, bn, relu, pool]):
            raise ValueError(
                "ConvBNReLUPool fuses Conv2D, BatchNorm2D(C_out), ReLU and MaxPool2D(2), got "
                f"{conv!r}, {bn!r}, {relu!r}, {pool!r}"
            )
        self.layers = (conv, bn, relu, pool)
        super().__init__()
        self.conv, self.bn = conv, bn
        self.in_channels = conv.in_channels
        self.channels_last_in, self.channels_last_out = bool(channels_last_in), bool(channels_last_out)
        self.params = {
            "W": conv.params["W"],
            "b": conv.params["b"],
            "gamma": bn.params["gamma"],
            "beta": bn.params["beta"],
        }
        self.grads = {
            "W": conv.grads["W"],
            "b": conv.grads["b"],
            "gamma": bn.grads["gamma"],
            "beta": bn.grads["beta"],
        }
        self._cache = None

    # the mode is the layers' own, so that setting it on them (Sequential.predict) sets it here
    @property
    def training(self):
        return self.layers[1].training

    @training.setter
    def training(self, mode):
        for layer in getattr(self, "layers", ()):
            layer.training = bool(mode)

    def __repr__(self):
        return f"ConvBNReLUPool({self.conv!r}, {self.bn!r})"

    # --- forward -----------------------------------------------------------------------------------

    def _nchw_shape(self, X):
        if self.channels_last_in:
            if X.ndim != 4 or X.shape[3] != self.in_channels:
                raise ShapeError(
                    f"{self!r} expects channels-last input (N, H, W, {self.in_channels}), got {X.shape}"
                )
            return (X.shape[0], X.shape[3], X.shape[1], X.shape[2])
        _check_nchw(self.conv, X, self.in_channels, self.conv.kernel_size, self.conv.padding)
        return X.shape

    def _conv_rows(self, X, W):
        """The padded channels-last input, its column matrix and the product cols @ W_matᵀ (no bias)."""
        conv = self.conv
        x_shape = self._nchw_shape(X)
        if self.channels_last_in:
            _check_nchw(conv, np.empty((0, *x_shape[1:])), None, conv.kernel_size, conv.padding)
        padded, (OH, OW) = _geometry(x_shape, conv.kernel_size, conv.stride, conv.padding)
        if OH < 2 or OW < 2:
            raise ShapeError(f"{self!r}: the convolution's {(OH, OW)} output is smaller than the 2×2 window")
        dtype = np.result_type(X, W)
        Xp = self._buffer("Xp", padded, dtype)
        (ph, pw), (N, _, H, Wd) = conv.padding, x_shape
        if ph:
            Xp[:, :ph] = 0
            Xp[:, H + ph :] = 0
        if pw:
            Xp[:, ph : H + ph, :pw] = 0
            Xp[:, ph : H + ph, Wd + pw :] = 0
        np.copyto(Xp[:, ph : H + ph, pw : Wd + pw], X if self.channels_last_in else X.transpose(0, 2, 3, 1))
        M, K = N * OH * OW, W[0].size
        if self._window_major((OH, OW)):
            cols_ext = self._buffer("cols_ext", (K + 1, M), dtype)  # [cols 1]ᵀ, for backward's E dy
            cols_ext[K] = 1
            _im2col_window_major(Xp, conv.kernel_size, conv.stride, (OH, OW), out=cols_ext[:K])
            cols = cols_ext[:K].T
        else:
            cols_ext, cols = None, _columns(self, M, K, dtype)
            _im2col_nhwc(Xp, conv.kernel_size, conv.stride, (OH, OW), out=cols)
        Y = self._buffer("Y_mat", (M, W.shape[0]), dtype)
        np.matmul(cols, _weight_matrix(W).T, out=Y)  # (N·OH·OW, K) @ (K, C_out)
        return x_shape, (OH, OW), cols, cols_ext, Y

    def _window_major(self, out_hw):
        """Whether the block orders its rows by window offset (module doc): one input channel, even OH, OW."""
        return self.in_channels == 1 and out_hw[0] % 2 == 0 and out_hw[1] % 2 == 0

    def _slabs(self, Y, N, out_hw):
        """The four 2×2 window offsets of the (N·OH·OW, C) map Y as (N, OH//2, OW//2, C) views: strided in
        the image's row order, contiguous quarters in the window-major order."""
        (OH, OW), C = out_hw, Y.shape[1]
        PH, PW = OH // 2, OW // 2
        if self._window_major(out_hw):
            return list(Y.reshape(4, N, PH, PW, C))
        Y4 = Y.reshape(N, OH, OW, C)
        return [Y4[:, m : 2 * PH : 2, n : 2 * PW : 2] for m in (0, 1) for n in (0, 1)]

    def _pool(self, slabs, reduce, out, masks=None):
        """out = reduce over the four slabs; masks[k] = 1{offset k is the first (row-major) attaining it}."""
        reduce(slabs[0], slabs[1], out=out)
        reduce(out, slabs[2], out=out)
        reduce(out, slabs[3], out=out)
        if masks is not None:
            claimed = np.zeros(out.shape, np.bool_)  # windows whose offset is already chosen (ties)
            for k in range(4):
                np.equal(slabs[k], out, out=masks[k])
                np.greater(masks[k], claimed, out=masks[k])  # equal and not yet claimed
                claimed |= masks[k]
            masks[3] |= ~claimed  # (only a NaN leaves a window unclaimed)
        return out

    def _finish(self, Z, y_shape):
        """The block's output from the pooled, activated channels-last map Z."""
        if self.channels_last_out:
            return Z
        out = self._output("out", (y_shape[0], y_shape[3], y_shape[1], y_shape[2]), Z.dtype)
        np.copyto(out, Z.transpose(0, 3, 1, 2))
        return out

    def forward(self, X):
        X = as_float_array(X, np.float32)
        bn = self.bn
        W, b, gamma, beta = (self.params[k] for k in ("W", "b", "gamma", "beta"))
        if not self.training:
            return self._forward_eval(X)
        x_shape, out_hw, cols, cols_ext, Y = self._conv_rows(X, W)
        N, C, dtype = x_shape[0], W.shape[0], Y.dtype
        mean0, m = bn._batch_mean(Y)  # the mean of conv(x) without its bias: μ = mean0 + b (every replica's)
        if m < 2:
            raise ValueError(f"{bn!r} needs more than 1 value per channel in training mode, got {Y.shape}")
        rows = Y.reshape(-1, out_hw[1] * C)  # (N·OH, OW·C): long rows for per-channel vectors
        centred, offset, var = self._variance(bn, Y, rows, mean0, m, out_hw[1])
        bn._update_running(mean0 + b, var, m)
        inv_std = 1.0 / np.sqrt(var + dtype.type(bn.eps))
        PH, PW = out_hw[0] // 2, out_hw[1] // 2
        y_shape = (N, PH, PW, C)
        slabs = self._slabs(Y, N, out_hw)
        P = self._buffer("P", y_shape, dtype)  # pooled y − μ: max where γ ≥ 0, min where γ < 0
        masks = self._buffer("masks", (4, *y_shape), np.bool_)
        self._pool(slabs, np.maximum, P, masks)
        neg = gamma < 0
        if neg.any():  # a decreasing affine map: the maximum of z lies at the minimum of y
            masks_min = np.empty_like(masks)
            Pmin = self._pool(slabs, np.minimum, np.empty(y_shape, dtype), masks_min)
            np.copyto(P, Pmin, where=neg)
            np.copyto(masks, masks_min, where=neg)
        zero = gamma == 0
        if zero.any():  # z constant over the window: the composition routes to the first offset
            masks[0][..., zero] = True
            masks[1:][..., zero] = False
            np.copyto(P, slabs[0], where=zero)  # the x̂ of that offset, for dγ
        P -= mean0  # pooled y − μ (the bias cancels): the pool commutes with the per-channel shift
        scale = gamma * inv_std  # a = γ / σ
        Z = self._output("Z", y_shape, dtype) if self.channels_last_out else self._buffer("Z", y_shape, dtype)
        np.multiply(P, scale, out=Z)
        Z += beta  # the pooled z = a (y − μ) + β
        pos = self._buffer("pos", y_shape, np.bool_)
        np.greater(Z, 0, out=pos)  # ReLU's 1{z > 0} at the pooled size
        np.maximum(Z, self._zeros(Z), out=Z)  # ReLU, after the pool
        self._cache = SimpleNamespace(
            cols=cols,
            cols_ext=cols_ext,
            Y=Y,
            centred=centred,
            offset=offset,
            mean0=mean0,
            P=P,
            masks=masks,
            pos=pos,
            inv_std=inv_std,
            x_shape=x_shape,
            out_hw=out_hw,
            y_shape=y_shape,
            m=m,
        )
        return self._finish(Z, y_shape)

    # one-pass statistics are used where they lose at most log2(1 + VARIANCE_GUARD) bits to cancellation
    VARIANCE_GUARD = 10.0

    def _variance(self, bn, Y, rows, mean0, m, OW):
        """σ² of each channel of Y and the map the backward pass reads as y − μ: (centred, offset, σ²).

        One pass (Y read once, nothing written): σ² = (1/m) Σ y² − μ², exact in real arithmetic. In
        floating point its relative error is the sum's, ε, times 1 + μ²/σ² (cancellation), so it is kept
        only where μ² ≤ ``VARIANCE_GUARD`` · σ² (the recipe's blocks stay below 4); otherwise, in every
        channel, the two-pass form σ² = (1/m) Σ (y − μ)² of ``BatchNorm2D`` over a centred copy, which
        the backward pass then reads. Returns (Y, μ, σ²) or (Y − μ, 0, σ²): y − μ = centred − offset.
        """
        C = Y.shape[1]
        (sumsq,) = bn._batch_sums(_channel_sum_squares(rows, OW, C))
        var = sumsq / m - mean0 * mean0
        if np.all(mean0 * mean0 <= self.VARIANCE_GUARD * var):
            return Y, mean0, var
        centred = self._buffer("full", Y.shape, Y.dtype)
        np.subtract(rows, np.tile(mean0, OW), out=centred.reshape(rows.shape))  # y − μ
        (sumsq,) = bn._batch_sums(_channel_sum_squares(centred.reshape(rows.shape), OW, C))
        return centred, np.zeros_like(mean0), sumsq / m

    def _forward_eval(self, X):
        """Eval mode: batch norm folded into the convolution, pool before ReLU, nothing kept for backward."""
        bn, W, b = self.bn, self.params["W"], self.params["b"]
        gamma, beta = self.params["gamma"], self.params["beta"]
        dtype = np.result_type(X, W)
        inv_std = 1.0 / np.sqrt(bn.state["running_var"].astype(dtype) + dtype.type(bn.eps))
        scale = gamma * inv_std  # a = γ / σ
        W_folded = W * scale[:, None, None, None]  # W' = a W: conv(x; W') = a conv(x; W)
        b_folded = (b - bn.state["running_mean"]) * scale + beta  # b' = a (b − μ) + β
        x_shape, out_hw, _, _, Y = self._conv_rows(X, W_folded)  # a conv(x), the folded z minus b'
        y_shape = (x_shape[0], out_hw[0] // 2, out_hw[1] // 2, W.shape[0])
        Z = np.empty(y_shape, dtype)
        self._pool(self._slabs(Y, x_shape[0], out_hw), np.maximum, Z)  # the sign of a is in W'
        Z += b_folded
        np.maximum(Z, self._zeros(Z), out=Z)  # ReLU, after the pool
        self._cache = None
        return self._finish(Z, y_shape)

    def _zeros(self, like):
        """Zeros kept between calls: ``np.maximum`` against them vectorises (``ReLU``'s docstring)."""
        zeros = self._buffers.get("zeros")
        if zeros is None or zeros.shape != like.shape or zeros.dtype != like.dtype:
            zeros = self._buffers["zeros"] = np.zeros(like.shape, like.dtype)
        return zeros

    # --- backward ----------------------------------------------------------------------------------

    def backward(self, dOut):
        if self._cache is None:
            raise RuntimeError(
                f"{self!r}: backward needs a forward in training mode first (eval mode keeps "
                "nothing for backward)"
            )
        c = self._cache
        P, masks, pos, inv_std, y_shape, m = c.P, c.masks, c.pos, c.inv_std, c.y_shape, c.m
        centred, out_hw = c.centred, c.out_hw
        N, PH, PW, C = y_shape
        expected = y_shape if self.channels_last_out else (N, C, PH, PW)
        dOut = self._check_dY(dOut, expected)
        if not self.channels_last_out:
            dOut = dOut.transpose(0, 2, 3, 1)
        bn, gamma = self.bn, self.params["gamma"]
        dtype = np.result_type(dOut, centred)
        g = self._buffer("g", y_shape, dtype)
        np.multiply(dOut, pos, out=g)  # dz at the window's chosen position (ReLU's mask applied)
        g2 = g.reshape(-1, C)
        dbeta = bn._channel_sum(g2)  # dβ = Σ dz
        tmp = self._buffer("gP", y_shape, dtype)
        np.multiply(g, P, out=tmp)
        dgamma = bn._channel_sum(tmp.reshape(-1, C)) * inv_std  # dγ = Σ dz x̂ = Σ g P / σ
        self.grads["beta"][...] = dbeta  # this replica's share, as BatchNorm2D's own gradients
        self.grads["gamma"][...] = dgamma
        dbeta, dgamma = bn._batch_sums(dbeta, dgamma)  # over the whole batch, for dy
        a = gamma * inv_std
        coef = -a * dgamma * inv_std / m  # dy = coef (y − μ) + d + a dz at the argmax
        d = -a * dbeta / m
        g *= a  # a dz
        if c.cols_ext is not None and c.centred is c.Y and not self.input_grad:  # (y − μ) is not needed
            return self._grads_without_dy(c.cols_ext, c.Y, g, masks, tmp, coef, d - coef * c.mean0)
        dy = self._buffer("full", centred.shape, dtype)  # (it may be the centred copy: read, then written)
        rows, OW = centred.reshape(-1, out_hw[1] * C), out_hw[1]  # per-channel vectors tiled along the rows
        # −(a dγ / (m σ)) (y − μ) − a dβ / m, with y − μ = centred − offset
        np.multiply(rows, np.tile(coef, OW), out=dy.reshape(rows.shape))
        dy.reshape(rows.shape)[...] += np.tile(d - coef * c.offset, OW)
        for k, slab in enumerate(self._slabs(dy, N, out_hw)):  # + a dz at each window's chosen offset
            np.multiply(g, masks[k], out=tmp)
            slab += tmp
        return self._conv_backward(c.cols, dy, c.x_shape, out_hw)

    def _grads_without_dy(self, cols_ext, Y, g, masks, tmp, coef, const):
        """dW and db of the window-major block when no dX is asked for, without writing dy (module doc).

        dy = y diag(c) + 1 dᵀ + S, with c = ``coef``, d = ``const`` and S the a dz placed at each window's
        chosen offset, so with the (K+1, M) matrix E = [cols 1]ᵀ (``cols_ext``)

            E dy = (E y) diag(c) + (E 1) dᵀ + Σ_k E_k (a dz ⊙ mask_k)

        whose first K rows are dW_matᵀ = colsᵀ dy and whose last row is db = 1ᵀ dy; E_k is the k-th quarter
        of E's columns (window offset k), so each S term is a product over a quarter of the rows."""
        K, C = cols_ext.shape[0] - 1, Y.shape[1]
        dW_ext = (cols_ext @ Y) * coef  # (K+1, M) @ (M, C_out)
        dW_ext += (cols_ext @ self._ones(Y.shape[0], Y.dtype))[:, None] * const
        quarters = cols_ext.reshape(K + 1, 4, -1)
        for k in range(4):
            np.multiply(g, masks[k], out=tmp)
            dW_ext += quarters[:, k] @ tmp.reshape(-1, C)
        self._store_conv_grads(dW_ext[:K], dW_ext[K])
        return None

    def _store_conv_grads(self, dW_matT, db):
        _store_weight_grad(dW_matT, self.grads["W"])
        np.copyto(self.grads["b"], db)

    def _conv_backward(self, cols, dy, x_shape, out_hw):
        """Conv2D's backward for dy (N·OH·OW, C_out) in the rows of ``cols`` (``Conv2D.backward``)."""
        conv, W = self.conv, self.params["W"]
        C_in, C_out = self.in_channels, W.shape[0]
        dW_matT = self._buffer("dW_matT", (cols.shape[1], C_out), dy.dtype)
        np.matmul(cols.T, dy, out=dW_matT)  # dW_matᵀ = colsᵀ dy
        self._store_conv_grads(dW_matT, self._ones(dy.shape[0], dy.dtype) @ dy)  # db = 1ᵀ dy
        if not self.input_grad:
            return None
        if self._window_major(out_hw):  # back to the image's row order (b, i, j) for the slabs of dX
            N, (OH, OW) = x_shape[0], out_hw
            dy_rows = self._buffer("dy_rows", dy.shape, dy.dtype)
            src = dy.reshape(2, 2, N, OH // 2, OW // 2, C_out).transpose(2, 3, 0, 4, 1, 5)
            np.copyto(dy_rows.reshape(N, OH // 2, 2, OW // 2, 2, C_out), src)
            dy = dy_rows
        N, _, H, Wd = x_shape
        if self.channels_last_in:
            dX = self._output("dX", (N, H, Wd, C_in), dy.dtype)
        else:
            dX = self._buffer("dX_nhwc", (N, H, Wd, C_in), dy.dtype)
        scratch = self._buffer("dX_part", (dy.shape[0], C_in), dy.dtype)
        _input_grad_nhwc(dy, W.astype(dy.dtype, copy=False), conv.stride, conv.padding, out_hw, dX, scratch)
        if self.channels_last_in:
            return dX
        dX_nchw = self._output("dX", x_shape, dy.dtype)
        np.copyto(dX_nchw, dX.transpose(0, 3, 1, 2))
        return dX_nchw


class FusedSequential(Sequential):
    """A ``Sequential`` that runs each Conv2D → BatchNorm2D → ReLU → MaxPool2D(2) run as one
    ``ConvBNReLUPool`` (module doc), channels-last from the first such block to the last.

    ``layers`` are the separate layers, as in ``Sequential``: parameter names ("0.W", "1.gamma", …), layer
    state and checkpoints are those of the unfused network. ``stages`` is what forward runs: a list of
    (number of layers covered, stage). The numbers are the composition's to rounding (tests).
    """

    def __init__(self, *layers):
        super().__init__(*layers)
        stages, i, layers = [], 0, self.layers
        while i < len(layers):
            if fusable(layers[i : i + 4]):
                stages.append((4, ConvBNReLUPool(*layers[i : i + 4])))
                i += 4
            else:
                stages.append((1, layers[i]))
                i += 1
        for (_, a), (_, b) in itertools.pairwise(stages):
            if isinstance(a, ConvBNReLUPool) and isinstance(b, ConvBNReLUPool):
                a.channels_last_out = b.channels_last_in = True
        self.stages = stages

    def reuse_buffers(self, mode=True):
        super().reuse_buffers(mode)
        for _, stage in self.stages:
            stage.reuse_buffers(mode)
        return self

    def forward(self, X):
        for _, stage in self.stages:
            X = stage.forward(X)
        return X

    def backward(self, dY, need_input_grad=True):
        stages = [stage for _, stage in self.stages]
        stop = 0
        if not need_input_grad:
            has_params = [bool(getattr(stage, "params", None)) for stage in stages]
            stop = has_params.index(True) if any(has_params) else len(stages)
        for i in range(len(stages) - 1, stop - 1, -1):
            stage = stages[i]
            if i == stop and not need_input_grad:
                saved = stage.input_grad
                stage.input_grad = False
                try:
                    stage.backward(dY)
                finally:
                    stage.input_grad = saved
                return None
            dY = stage.backward(dY)
        return None if not need_input_grad else dY
