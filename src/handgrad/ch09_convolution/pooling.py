"""§9.3 Pooling: summarise each kh×kw neighbourhood of a feature map by its maximum or its mean.

Pooling makes a representation approximately invariant to small translations of the input (§9.3) and,
with a stride above one, downsamples it. Both layers here loop over the kh·kw offsets (m, n) of the
window — one vectorised operation on the strided slab X[:, :, m :: s_h, n :: s_w] per offset — never over
examples or output pixels. Windows may overlap (stride < kernel): the backward pass adds the
contributions of all windows that share a pixel.
"""

import numpy as np

from .._checks import check_int_pair
from ..ch02_linear_algebra import as_float_array
from ..ch06_feedforward import Layer
from .convolution import _check_nchw, conv_output_size

__all__ = ["MaxPool2D", "AvgPool2D"]


class _Pool2D(Layer):
    """Shared parts of the pooling layers: arguments, shape checks and the offset slabs."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = check_int_pair(kernel_size, "kernel_size", low=1)
        self.stride = self.kernel_size if stride is None else check_int_pair(stride, "stride", low=1)
        self._cache = None

    def __repr__(self):
        return f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride})"

    def _prepare(self, X):
        X = as_float_array(X, np.float32)
        _check_nchw(self, X, None, self.kernel_size, (0, 0))
        OH = conv_output_size(X.shape[2], self.kernel_size[0], self.stride[0])
        OW = conv_output_size(X.shape[3], self.kernel_size[1], self.stride[1])
        return X, (X.shape[0], X.shape[1], OH, OW)

    def _offsets(self, out_hw):
        """Yield (k, slab index) for each window offset (m, n), k = m·kw + n: the pixels at that offset."""
        (kh, kw), (sh, sw), (OH, OW) = self.kernel_size, self.stride, out_hw
        for m in range(kh):
            for n in range(kw):
                rows, cols = slice(m, m + sh * (OH - 1) + 1, sh), slice(n, n + sw * (OW - 1) + 1, sw)
                yield m * kw + n, (slice(None), slice(None), rows, cols)


class MaxPool2D(_Pool2D):
    """Max pooling, Y[b, c, i, j] = max_{m,n} X[b, c, s_h·i + m, s_w·j + n] (book §9.3).

    Backward: the whole gradient dY[b, c, i, j] goes to the position of its window's maximum (the
    derivative of max is 1 at the argmax and 0 elsewhere); a pixel that is the maximum of several
    overlapping windows receives the sum. Ties go to the first maximum in row-major window order, and a
    NaN counts as the maximum, which is what PyTorch's CPU kernel does.

    Computed as a running ``np.maximum`` over the kh·kw offset slabs, then one boolean mask per offset
    recording which windows route their gradient there (the first offset equal to the maximum), so the
    backward pass is kh·kw products dX_slab += dY ⊙ mask. In eval mode no masks are built: the forward
    keeps its input, and a backward after it (rare in evaluation) builds them then.

    Shapes: X (N, C, H, W) -> Y (N, C, OH, OW), OH = ⌊(H − kh) / s_h⌋ + 1; the stride defaults to the kernel
    size (non-overlapping windows). Computes in the input's dtype.
    """

    def forward(self, X):
        X, y_shape = self._prepare(X)
        offsets = list(self._offsets(y_shape[2:]))
        Y = self._output("Y", y_shape, X.dtype)
        Y[...] = X[offsets[0][1]]
        for _, where in offsets[1:]:
            np.maximum(Y, X[where], out=Y)  # propagates NaN, as PyTorch does
        if not self.training:  # evaluation: no masks; a backward (rare in eval mode) builds them from X
            self._cache = (None, X, y_shape)
            return Y
        self._cache = (self._masks(X, Y, offsets), X.shape, y_shape)
        return Y

    def _masks(self, X, Y, offsets):
        """One boolean mask per window offset: the windows that route their gradient there (first maximum)."""
        masks = self._buffer("masks", (len(offsets), *Y.shape), np.bool_)
        claimed = self._buffer("claimed", Y.shape, np.bool_)  # windows whose maximum is already placed
        claimed[...] = False
        for k, where in offsets:
            np.equal(X[where], Y, out=masks[k])
            np.logical_and(masks[k], np.logical_not(claimed), out=masks[k])  # first maximum only (ties)
            np.logical_or(claimed, masks[k], out=claimed)
        if not claimed.all():  # a window holding NaN: its maximum is its first NaN
            for k, where in offsets:
                nan = np.isnan(X[where]) & ~claimed
                masks[k] |= nan
                claimed |= nan
        return masks

    def backward(self, dY):
        masks, x_shape, y_shape = self._cached(self._cache)
        dY = self._check_dY(dY, y_shape)
        if not self.input_grad:
            return None
        if masks is None:  # after an eval-mode forward, which kept the input instead
            X, offsets = x_shape, list(self._offsets(y_shape[2:]))
            Y = X[offsets[0][1]].copy()
            for _, where in offsets[1:]:
                np.maximum(Y, X[where], out=Y)
            masks, x_shape = self._masks(X, Y, offsets), X.shape
        dX = self._output("dX", x_shape, dY.dtype)
        (kh, kw), (sh, sw), (OH, OW) = self.kernel_size, self.stride, y_shape[2:]
        if sh < kh or sw < kw:  # overlapping windows: a pixel may collect from several windows
            dX[...] = 0
            for k, where in self._offsets((OH, OW)):
                dX[where] += dY * masks[k]
            return dX
        if sh != kh or sw != kw or sh * OH != x_shape[2] or sw * OW != x_shape[3]:
            dX[...] = 0  # some pixels lie in no window
        for k, where in self._offsets((OH, OW)):
            np.multiply(dY, masks[k], out=dX[where])  # disjoint windows: each pixel written once
        return dX


class AvgPool2D(_Pool2D):
    """Average pooling, Y[b, c, i, j] = (1 / (kh·kw)) Σ_{m,n} X[b, c, s_h·i + m, s_w·j + n] (book §9.3).

    Backward: each pixel of a window receives dY[b, c, i, j] / (kh·kw); overlapping windows add up.
    (No padding, so every window has kh·kw pixels — torch's ``avg_pool2d`` with its defaults.)

    Shapes: X (N, C, H, W) -> Y (N, C, OH, OW) as for ``MaxPool2D``. Computes in the input's dtype.
    """

    def forward(self, X):
        X, y_shape = self._prepare(X)
        Y = self._output("Y", y_shape, X.dtype)
        Y[...] = 0
        for _, where in self._offsets(y_shape[2:]):
            Y += X[where]
        Y /= self.kernel_size[0] * self.kernel_size[1]
        self._cache = (X.shape, y_shape)
        return Y

    def backward(self, dY):
        x_shape, y_shape = self._cached(self._cache)
        dY = self._check_dY(dY, y_shape)
        if not self.input_grad:
            return None
        share = dY / (self.kernel_size[0] * self.kernel_size[1])
        dX = self._output("dX", x_shape, dY.dtype)
        dX[...] = 0
        for _, where in self._offsets(y_shape[2:]):
            dX[where] += share
        return dX
