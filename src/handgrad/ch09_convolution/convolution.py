"""§9.1 The convolution operation and §9.5 its variants (stride, zero padding, multichannel), by im2col.

The book's convolution of a single-channel image I with a kernel K, in the cross-correlation form that
it notes most libraries (PyTorch included) implement and call convolution (eq. 9.6):

    S(i, j) = (I ⋆ K)(i, j) = Σ_m Σ_n I(i + m, j + n) K(m, n).

With C_in input channels, C_out output channels, stride s and zero padding p (eqs. 9.7–9.8, 0-based):

    Y[b, o, i, j] = b_o + Σ_c Σ_m Σ_n X̃[b, c, s_h·i + m, s_w·j + n] W[o, c, m, n],

where X̃ is X with p zero rows/columns added on each side. im2col rewrites this sum as one matrix
product: row (b, i, j) of the column matrix holds the receptive field X̃[b, :, s_h·i : s_h·i + kh,
s_w·j : s_w·j + kw] flattened in the order (m, n, c) — channels last, so that each copied run of C numbers
is contiguous in memory — which is the order of W_mat = W.transpose(0, 2, 3, 1).reshape(C_out, kh·kw·C_in):

    Y_mat = cols @ W_matᵀ + b     (N·OH·OW, kh·kw·C_in) @ (kh·kw·C_in, C_out) -> (N·OH·OW, C_out),

and Y_mat, read as (N, OH, OW, C_out), is Y in NHWC order. The backward pass is the same product read the
other way round (book eqs. 9.11–9.13):

    dW_mat = dY_matᵀ @ cols,    db = Σ_{b,i,j} dY[b, :, i, j],    dcols = dY_mat @ W_mat,

and dX = col2im(dcols): every entry of dcols is added back to the pixel it was copied from. col2im is the
adjoint of im2col; it loops over the kh·kw kernel offsets, adding one strided slab of the image per offset.
Internally the padded image is held channels-last (N, H̃, W̃, C) for the same reason as the column order.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import ShapeError
from .._checks import check_int, check_int_pair
from ..ch02_linear_algebra import as_float_array
from ..ch04_numerical import float_dtype
from ..ch06_feedforward import Layer, initialiser

__all__ = ["Conv2D", "Flatten", "im2col", "col2im", "conv_output_size"]


def conv_output_size(size, kernel, stride=1, padding=0):
    """Output length of a convolution or pooling along an axis: ⌊(size + 2·padding − kernel) / stride⌋ + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def _check_nchw(layer, X, channels, kernel, padding):
    """Validate an NCHW batch against the layer's channels (None: any) and its kernel; raise ShapeError."""
    if X.ndim != 4:
        raise ShapeError(f"{layer} expects input (N, C, H, W), got shape {X.shape}")
    if channels is not None and X.shape[1] != channels:
        raise ShapeError(f"{layer} expects input (N, {channels}, H, W), got {X.shape}")
    H, W = X.shape[2] + 2 * padding[0], X.shape[3] + 2 * padding[1]
    if kernel[0] > H or kernel[1] > W:
        raise ShapeError(f"{layer}: kernel {kernel} is larger than the padded input ({H}, {W}) of {X.shape}")


def _pad_nhwc(X, padding, out):
    """Write the NCHW batch X into ``out`` (N, H + 2p_h, W + 2p_w, C): channels last, zero border."""
    (ph, pw), (_N, _C, H, W) = padding, X.shape
    if ph:
        out[:, :ph] = 0
        out[:, H + ph :] = 0
    if pw:
        out[:, ph : H + ph, :pw] = 0
        out[:, ph : H + ph, W + pw :] = 0
    np.copyto(out[:, ph : H + ph, pw : W + pw], X.transpose(0, 2, 3, 1))
    return out


def _im2col_nhwc(Xp, kernel, stride, out_hw, out):
    """Copy every receptive field of the padded NHWC batch Xp into ``out`` (N·OH·OW, kh·kw·C).

    ``out`` may be the transpose of a C-contiguous (kh·kw·C, N·OH·OW) array (``_columns``): with one input
    channel each kernel offset is then one contiguous row, written by one copy of a strided slab.
    """
    (kh, kw), (sh, sw), (OH, OW), (N, C) = kernel, stride, out_hw, (Xp.shape[0], Xp.shape[3])
    if C == 1 and out.T.flags.c_contiguous:  # nine row copies instead of one copy with stride kh·kw
        rows = out.T.reshape(kh * kw, N, OH, OW)
        for m in range(kh):
            for n in range(kw):
                rows[m * kw + n] = Xp[:, m : m + sh * (OH - 1) + 1 : sh, n : n + sw * (OW - 1) + 1 : sw, 0]
        return out
    win = sliding_window_view(Xp, kernel, axis=(1, 2))  # (N, H̃−kh+1, W̃−kw+1, C, kh, kw), a view
    win = win[:, : (OH - 1) * sh + 1 : sh, : (OW - 1) * sw + 1 : sw]  # (N, OH, OW, C, kh, kw)
    np.copyto(out.reshape(N, OH, OW, kh, kw, C), win.transpose(0, 1, 2, 4, 5, 3))
    return out


def _weight_matrix(W):
    """W (C_out, C_in, kh, kw) as W_mat (C_out, kh·kw·C_in), the column matrix's order (module docstring)."""
    return W.transpose(0, 2, 3, 1).reshape(W.shape[0], -1)


def _store_weight_grad(dW_matT, grad_W):
    """Write dW_matᵀ (kh·kw·C_in, C_out), in the column matrix's order, into grad_W (C_out, C_in, kh, kw)."""
    C_out, C_in, kh, kw = grad_W.shape
    np.copyto(grad_W, dW_matT.reshape(kh, kw, C_in, C_out).transpose(3, 2, 0, 1))


def _columns(layer, M, K, dtype):
    """The column matrix buffer (M, K) of a layer; for K = kh·kw (one input channel) the transpose of a
    (K, M) buffer, so that each kernel offset is one contiguous row (``_im2col_nhwc``)."""
    if layer.in_channels == 1:
        return layer._buffer("colsT", (K, M), dtype).T
    return layer._buffer("cols", (M, K), dtype)


def _col2im_nhwc(dcols, kernel, stride, out_hw, out):
    """Add each row of dcols (N·OH·OW, kh·kw·C) back onto its receptive field in ``out`` (N, H̃, W̃, C).

    A loop over the kh·kw kernel offsets (m, n): offset (m, n) of every receptive field lands on the
    strided slab out[:, m : m + s_h·OH : s_h, n : n + s_w·OW : s_w, :], so overlapping windows accumulate.
    """
    (kh, kw), (sh, sw), (OH, OW), (N, C) = kernel, stride, out_hw, (out.shape[0], out.shape[3])
    c6 = dcols.reshape(N, OH, OW, kh, kw, C)
    out[...] = 0
    for m in range(kh):
        for n in range(kw):
            out[:, m : m + sh * (OH - 1) + 1 : sh, n : n + sw * (OW - 1) + 1 : sw] += c6[:, :, :, m, n]
    return out


def _offset_span(size, out_size, offset, stride, pad):
    """The outputs i whose input row s·i + offset − pad lies inside [0, size): (first i, end i, first row)."""
    lo = max(0, -(-(pad - offset) // stride))  # ⌈(pad − offset) / stride⌉, at least 0
    hi = min(out_size, (size - 1 + pad - offset) // stride + 1)
    return lo, max(lo, hi), stride * lo + offset - pad


def _input_grad_nhwc(dY_mat, W, stride, padding, out_hw, out, scratch):
    """dX = col2im(dY_mat @ W_mat) computed one kernel offset at a time, into ``out`` (N, H, W, C_in).

    col2im is linear, so the product with all of W_mat followed by col2im equals the sum over the kernel
    offsets (m, n) of the product with that offset's block of W_mat, added onto its slab:

        dX̃[:, s_h·i + m, s_w·j + n, :] += dY_mat @ W[:, :, m, n]      (N·OH·OW, C_out) @ (C_out, C_in)

    kh·kw products of (N·OH·OW, C_in) results in a reused ``scratch`` instead of one (N·OH·OW, kh·kw·C_in)
    matrix written and read back: the same sums in another order (a test checks the two). Only the part of
    each slab inside the unpadded image is added (what lands on the zero border is dropped by the adjoint
    of padding anyway), so ``out`` is the unpadded gradient, with no padded copy to fill and crop.
    """
    (_, C_in, kh, kw), (sh, sw), (ph, pw), (OH, OW), (N, H, Wd, _) = (
        W.shape,
        stride,
        padding,
        out_hw,
        out.shape,
    )
    out[...] = 0
    part = scratch.reshape(N, OH, OW, C_in)
    for m in range(kh):
        i0, i1, r0 = _offset_span(H, OH, m, sh, ph)
        for n in range(kw):
            j0, j1, c0 = _offset_span(Wd, OW, n, sw, pw)
            if i0 == i1 or j0 == j1:
                continue  # this offset only ever reads the border
            np.matmul(dY_mat, W[:, :, m, n], out=scratch)  # (N·OH·OW, C_out) @ (C_out, C_in)
            rows, cols = (
                slice(r0, r0 + sh * (i1 - i0 - 1) + 1, sh),
                slice(c0, c0 + sw * (j1 - j0 - 1) + 1, sw),
            )
            out[:, rows, cols] += part[:, i0:i1, j0:j1]
    return out


def _geometry_args(kernel_size, stride, padding):
    return (
        check_int_pair(kernel_size, "kernel_size", low=1),
        check_int_pair(stride, "stride", low=1),
        check_int_pair(padding, "padding", low=0),
    )


def _geometry(x_shape, kernel, stride, padding):
    """The padded channels-last shape (N, H̃, W̃, C) of an NCHW input and the output size (OH, OW)."""
    N, C, H, W = x_shape
    return (N, H + 2 * padding[0], W + 2 * padding[1], C), (
        conv_output_size(H, kernel[0], stride[0], padding[0]),
        conv_output_size(W, kernel[1], stride[1], padding[1]),
    )


def im2col(X, kernel_size, stride=1, padding=0):
    """The column matrix of an NCHW batch: one row per output pixel, one column per kernel weight (§9.1).

    Row b·OH·OW + i·OW + j holds the receptive field of output pixel (i, j) of example b, flattened in the
    order (m, n, c) of W.transpose(0, 2, 3, 1)[o].reshape(-1) (module docstring).

    Shapes: X (N, C, H, W) -> cols (N·OH·OW, kh·kw·C).
    """
    X = np.asarray(X)
    kernel, stride, padding = _geometry_args(kernel_size, stride, padding)
    _check_nchw("im2col", X, None, kernel, padding)
    padded, out_hw = _geometry(X.shape, kernel, stride, padding)
    Xp = _pad_nhwc(X, padding, np.empty(padded, X.dtype))
    cols = np.empty((X.shape[0] * out_hw[0] * out_hw[1], kernel[0] * kernel[1] * X.shape[1]), X.dtype)
    return _im2col_nhwc(Xp, kernel, stride, out_hw, cols)


def col2im(cols, input_shape, kernel_size, stride=1, padding=0):
    """The adjoint of ``im2col``: add each entry of a column matrix back onto the pixel it came from.

    For all X and G of matching shapes, Σ im2col(X) ⊙ G = Σ X ⊙ col2im(G) (a test checks it).

    Shapes: cols (N·OH·OW, kh·kw·C) -> (N, C, H, W) = ``input_shape``.
    """
    kernel, stride, padding = _geometry_args(kernel_size, stride, padding)
    cols = np.asarray(cols)
    padded, out_hw = _geometry(tuple(input_shape), kernel, stride, padding)
    expected = (padded[0] * out_hw[0] * out_hw[1], kernel[0] * kernel[1] * padded[3])
    if cols.shape != expected:
        raise ShapeError(f"col2im expects cols {expected} for input {tuple(input_shape)}, got {cols.shape}")
    Xp = _col2im_nhwc(cols, kernel, stride, out_hw, np.empty(padded, cols.dtype))
    (ph, pw), (H, W) = padding, input_shape[2:]
    return np.ascontiguousarray(Xp[:, ph : ph + H, pw : pw + W].transpose(0, 3, 1, 2))


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as PyTorch) with stride and zero padding (book §9.1, §9.5).

    Forward (eqs. 9.6–9.8, 0-based, X̃ = X zero-padded by p on each side):

        Y[b, o, i, j] = b_o + Σ_c Σ_m Σ_n X̃[b, c, s_h·i + m, s_w·j + n] W[o, c, m, n]

    computed as Y_mat = im2col(X) @ W_matᵀ + b with W_mat = W.transpose(0, 2, 3, 1).reshape(C_out, kh·kw·C_in)
    (module docstring); K = kh·kw·C_in below.

    Backward (eqs. 9.11–9.13), for upstream gradient dY:
        dW_mat = dY_matᵀ @ cols                      (C_out, N·OH·OW) @ (N·OH·OW, K)
        db_o   = Σ_{b,i,j} dY[b, o, i, j]            computed as 1ᵀ dY_mat (BLAS, every core)
        dX     = col2im(dY_mat @ W_mat)              (N·OH·OW, C_out) @ (C_out, K)

    The last line is computed as kh·kw products dY_mat @ W[:, :, m, n], each added onto its kernel offset's
    slab of the input, clipped to the unpadded image (``_input_grad_nhwc``): the same sum, without the
    (N·OH·OW, K) matrix or a padded dX to crop. With one input channel the column matrix is built as kh·kw
    contiguous rows (``_im2col_nhwc``).

    Shapes: X (N, C_in, H, W) -> Y (N, C_out, OH, OW), OH = ⌊(H + 2p_h − kh) / s_h⌋ + 1 (OW alike);
            W (C_out, C_in, kh, kw) as PyTorch's ``weight``; b (C_out,).

    ``kernel_size``, ``stride`` and ``padding`` are ints or (h, w) pairs. W is drawn by ``init``:
    "he_normal" (the default, for ReLU networks: N(0, 2 / fan_in) with fan_in = C_in·kh·kw) or
    "glorot_uniform"; b starts at zero. Computes in the result dtype of X and W (float32 by default).

    >>> Conv2D(1, 8, 3, padding=1, rng=0)(np.zeros((2, 1, 28, 28), np.float32)).shape
    (2, 8, 28, 28)
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        rng=None,
        dtype=np.float32,
        init="he_normal",
    ):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", low=1)
        self.out_channels = check_int(out_channels, "out_channels", low=1)
        init_W = initialiser(init)
        dtype = float_dtype(dtype)
        self.kernel_size = check_int_pair(kernel_size, "kernel_size", low=1)
        self.stride = check_int_pair(stride, "stride", low=1)
        self.padding = check_int_pair(padding, "padding", low=0)
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        # drawn as the (fan_in, fan_out) matrix chapter 6 uses, then laid out as (C_out, C_in, kh, kw)
        W = init_W(fan_in, self.out_channels, rng, dtype).T
        self.params["W"] = np.ascontiguousarray(W).reshape(self.out_channels, self.in_channels, kh, kw)
        self.params["b"] = np.zeros(self.out_channels, dtype)
        self.grads["W"] = np.zeros_like(self.params["W"])
        self.grads["b"] = np.zeros_like(self.params["b"])
        self._cache = None  # (cols, input shape, output shape)

    def __repr__(self):
        extra = f", stride={self.stride}" if self.stride != (1, 1) else ""
        extra += f", padding={self.padding}" if self.padding != (0, 0) else ""
        return f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}{extra})"

    def forward(self, X):
        X = as_float_array(X, np.float32)
        _check_nchw(self, X, self.in_channels, self.kernel_size, self.padding)
        W, b = self.params["W"], self.params["b"]
        dtype = np.result_type(X, W)
        padded, (OH, OW) = _geometry(X.shape, self.kernel_size, self.stride, self.padding)
        N, C_out = X.shape[0], self.out_channels
        Xp = _pad_nhwc(X, self.padding, self._buffer("Xp", padded, dtype))
        cols = _columns(self, N * OH * OW, W[0].size, dtype)
        _im2col_nhwc(Xp, self.kernel_size, self.stride, (OH, OW), out=cols)
        Y_mat = self._buffer("Y_mat", (N * OH * OW, C_out), dtype)
        np.matmul(cols, _weight_matrix(W).T, out=Y_mat)  # (N·OH·OW, K) @ (K, C_out) -> (N·OH·OW, C_out)
        Y_mat += b
        Y = self._output("Y", (N, C_out, OH, OW), dtype)
        np.copyto(Y, Y_mat.reshape(N, OH, OW, C_out).transpose(0, 3, 1, 2))  # NHWC -> NCHW
        self._cache = (cols, X.shape, Y.shape)
        return Y

    def backward(self, dY):
        cols, x_shape, y_shape = self._cached(self._cache)
        dY = self._check_dY(dY, y_shape)
        (N, C_out, OH, OW), C_in = y_shape, self.in_channels
        dY_mat = self._buffer("dY_mat", (N * OH * OW, C_out), np.result_type(dY, cols))
        np.copyto(dY_mat.reshape(N, OH, OW, C_out), dY.transpose(0, 2, 3, 1))  # NCHW -> rows (b, i, j)
        dW_matT = self._buffer("dW_matT", (cols.shape[1], C_out), dY_mat.dtype)
        np.matmul(cols.T, dY_mat, out=dW_matT)  # dW_matᵀ = colsᵀ dY_mat: (K, N·OH·OW) @ (N·OH·OW, C_out)
        _store_weight_grad(dW_matT, self.grads["W"])
        np.matmul(self._ones(dY_mat.shape[0], dY_mat.dtype), dY_mat, out=self.grads["b"])  # db = 1ᵀ dY_mat
        if not self.input_grad:
            return None
        _, out_hw = _geometry(x_shape, self.kernel_size, self.stride, self.padding)
        N, _, H, W = x_shape
        dX_nhwc = self._buffer("dX_nhwc", (N, H, W, C_in), dY_mat.dtype)
        scratch = self._buffer("dX_part", (dY_mat.shape[0], C_in), dY_mat.dtype)
        _input_grad_nhwc(
            dY_mat,
            self.params["W"].astype(dY_mat.dtype, copy=False),
            self.stride,
            self.padding,
            out_hw,
            dX_nhwc,
            scratch,
        )  # dX = col2im(dY_mat @ W_mat), one kernel offset at a time
        dX = self._output("dX", x_shape, dY_mat.dtype)
        np.copyto(dX, dX_nhwc.transpose(0, 3, 1, 2))  # NHWC -> NCHW
        return dX


class Flatten(Layer):
    """Flatten every example to a vector, (N, d1, d2, …) -> (N, d1·d2·…), as torch.nn.Flatten.

    The bridge from convolutional feature maps to chapter 6's dense layers. Forward is a reshape (a view);
    backward reshapes dY back to the input's shape.

    Shapes: X (N, ...) -> Y (N, prod(...)).
    """

    def __init__(self):
        super().__init__()
        self._shape = None  # the cache: the input shape

    def forward(self, X):
        X = as_float_array(X, np.float32)
        if X.ndim < 2:
            raise ShapeError(f"Flatten expects input (N, ...) with at least 2 dimensions, got {X.shape}")
        self._shape = X.shape
        return X.reshape(X.shape[0], -1)

    def backward(self, dY):
        shape = self._cached(self._shape)
        dY = self._check_dY(dY, (shape[0], int(np.prod(shape[1:]))))
        if not self.input_grad:
            return None
        return dY.reshape(shape)
