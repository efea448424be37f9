"""Chapter 9, convolution.py: Conv2D, im2col/col2im and Flatten against the book's sum, finite
differences and the layer contract.
"""

import numpy as np
import pytest
from gradcheck import check_layer_gradients, check_owned_outputs, relative_error
from hypothesis import given, settings
from hypothesis import strategies as st

from handgrad import ShapeError
from handgrad.ch06_feedforward import ReLU, Sequential
from handgrad.ch09_convolution import AvgPool2D, Conv2D, Flatten, MaxPool2D, col2im, conv_output_size, im2col


def conv2d_loop(X, W, b, stride=(1, 1), padding=(0, 0)):
    """The book's sum written out (eqs. 9.6–9.8):
    S(i, j) = Σ_c Σ_m Σ_n I(c, s·i + m, s·j + n) K(c, m, n) + b."""
    (sh, sw), (ph, pw) = stride, padding
    N, C, H, Wd = X.shape
    O, _, kh, kw = W.shape
    I = np.zeros((N, C, H + 2 * ph, Wd + 2 * pw))
    I[:, :, ph : ph + H, pw : pw + Wd] = X
    OH, OW = (H + 2 * ph - kh) // sh + 1, (Wd + 2 * pw - kw) // sw + 1
    S = np.zeros((N, O, OH, OW))
    for n_ in range(N):
        for o in range(O):
            for i in range(OH):
                for j in range(OW):
                    total = b[o]
                    for c in range(C):
                        for m in range(kh):
                            for n in range(kw):
                                total += I[n_, c, sh * i + m, sw * j + n] * W[o, c, m, n]
                    S[n_, o, i, j] = total
    return S


# (N, C_in, C_out, H, W, kernel, stride, padding): odd sizes, rectangular kernels, stride > 1, padding,
# a 1×1 kernel, a kernel as large as the padded input, stride larger than the kernel, batch of one
CONV_CASES = [
    (2, 1, 3, 5, 5, 3, 1, 0),
    (2, 2, 3, 7, 6, (3, 2), (2, 1), (1, 2)),
    (1, 3, 2, 6, 8, (2, 3), 3, 1),
    (3, 2, 4, 5, 7, 1, 2, 0),
    (2, 2, 2, 3, 4, (5, 4), 1, (1, 0)),
    (1, 1, 1, 9, 9, 2, 4, 1),
]


def make_conv(case, rng, dtype=np.float64):
    N, C, O, H, W, k, s, p = case
    layer = Conv2D(C, O, k, stride=s, padding=p, rng=rng, dtype=dtype)
    layer.params["b"][...] = rng.standard_normal(O)
    return layer, rng.standard_normal((N, C, H, W)).astype(dtype)


# --------------------------------------------------------------------------------------------------
# The book's sum, the im2col matrix form and col2im
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_equals_the_books_sum(case, rng):
    layer, X = make_conv(case, rng)
    expected = conv2d_loop(X, layer.params["W"], layer.params["b"], layer.stride, layer.padding)
    assert relative_error(layer.forward(X), expected) < 1e-13


@pytest.mark.parametrize("case", CONV_CASES[:3])
def test_im2col_matrix_form_equals_the_books_sum(case, rng):
    layer, X = make_conv(case, rng)
    W, b = layer.params["W"], layer.params["b"]
    cols = im2col(X, layer.kernel_size, layer.stride, layer.padding)
    Y_mat = cols @ W.transpose(0, 2, 3, 1).reshape(W.shape[0], -1).T + b  # the docstring's matrix form
    N, OH, OW = X.shape[0], *layer.forward(X).shape[2:]
    Y = Y_mat.reshape(N, OH, OW, -1).transpose(0, 3, 1, 2)
    assert relative_error(Y, conv2d_loop(X, W, b, layer.stride, layer.padding)) < 1e-13


@pytest.mark.parametrize("case", CONV_CASES)
def test_col2im_is_the_adjoint_of_im2col(case, rng):
    _, X = make_conv(case, rng)
    k, s, p = case[5:]
    cols = im2col(X, k, s, p)
    G = rng.standard_normal(cols.shape)
    assert np.sum(cols * G) == pytest.approx(np.sum(X * col2im(G, X.shape, k, s, p)), rel=1e-12)


@pytest.mark.parametrize("case", CONV_CASES)
def test_input_gradient_by_kernel_offset_equals_col2im_of_the_product(case, rng):
    """dX̃ = col2im(dY_mat @ W_mat) (the book's form) against the kh·kw per-offset products Conv2D uses."""
    from handgrad.ch09_convolution.convolution import _geometry, _input_grad_nhwc

    layer, X = make_conv(case, rng)
    _, out_hw = _geometry(X.shape, layer.kernel_size, layer.stride, layer.padding)
    dY_mat = rng.standard_normal((X.shape[0] * out_hw[0] * out_hw[1], layer.out_channels))
    W = layer.params["W"]
    W_mat = W.transpose(0, 2, 3, 1).reshape(W.shape[0], -1)
    book = col2im(dY_mat @ W_mat, X.shape, layer.kernel_size, layer.stride, layer.padding)
    N, C, H, Wd = X.shape
    dX = _input_grad_nhwc(
        dY_mat,
        W,
        layer.stride,
        layer.padding,
        out_hw,
        np.full((N, H, Wd, C), np.nan),
        np.empty((dY_mat.shape[0], C)),
    )
    fast = dX.transpose(0, 3, 1, 2)
    assert relative_error(fast, book) < 1e-12


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[1] == 1] + [(4, 1, 16, 28, 28, 3, 1, 1)])
def test_one_channel_columns_as_contiguous_rows_equal_im2col(case, rng):
    """With C_in = 1 the layer writes its column matrix as kh·kw contiguous rows: the same matrix."""
    layer, X = make_conv(case, rng)
    layer.forward(X)
    cols = layer._cache[0]
    assert not cols.flags.c_contiguous and cols.T.flags.c_contiguous
    np.testing.assert_array_equal(cols, im2col(X, layer.kernel_size, layer.stride, layer.padding))


def test_col2im_counts_how_many_windows_cover_each_pixel():
    X = np.zeros((1, 1, 4, 4))
    cover = col2im(np.ones_like(im2col(X, 3)), X.shape, 3)
    expected = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])
    np.testing.assert_array_equal(cover[0, 0], expected)


def test_conv_output_size():
    assert conv_output_size(28, 3, 1, 1) == 28
    assert conv_output_size(7, 3, 2, 0) == 3
    assert conv_output_size(5, 5) == 1


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    o=st.integers(1, 3),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    ph=st.integers(0, 2),
    pw=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_conv_matches_the_books_sum_for_any_geometry(n, c, o, h, w, kh, kw, sh, sw, ph, pw, seed):
    if kh > h + 2 * ph or kw > w + 2 * pw:
        return
    rng = np.random.default_rng(seed)
    layer = Conv2D(c, o, (kh, kw), (sh, sw), (ph, pw), rng=rng, dtype=np.float64)
    X = rng.standard_normal((n, c, h, w))
    expected = conv2d_loop(X, layer.params["W"], layer.params["b"], (sh, sw), (ph, pw))
    assert relative_error(layer.forward(X), expected) < 1e-12


# --------------------------------------------------------------------------------------------------
# Gradient checks (float64, finite differences)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_gradients(case, rng):
    layer, X = make_conv(case, rng)
    check_layer_gradients(layer, X, rng)


def test_flatten_gradients(rng):
    check_layer_gradients(Flatten(), rng.standard_normal((3, 2, 3, 4)), rng)


def test_conv_pool_flatten_chain_gradients(rng):
    net = Sequential(Conv2D(2, 3, 3, padding=1, rng=rng, dtype=np.float64), ReLU(), MaxPool2D(2), Flatten())
    check_layer_gradients(net, rng.standard_normal((2, 2, 4, 5)), rng)


# --------------------------------------------------------------------------------------------------
# dtypes, modes, initialisation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer_fn",
    [lambda: Conv2D(2, 3, 3, padding=1, rng=0), lambda: MaxPool2D(2), lambda: AvgPool2D(3, 1), Flatten],
)
def test_float32_in_float32_out(layer_fn, rng):
    layer = layer_fn()
    X = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    Y = layer.forward(X)
    assert Y.dtype == np.float32
    assert layer.backward(np.ones_like(Y)).dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads.values())


def test_conv_float32_agrees_with_float64(rng):
    layer64 = Conv2D(3, 4, 3, stride=2, padding=1, rng=1, dtype=np.float64)
    layer32 = Conv2D(3, 4, 3, stride=2, padding=1, rng=1, dtype=np.float32)
    X = rng.standard_normal((4, 3, 9, 9))
    Y32 = layer32.forward(X.astype(np.float32))
    np.testing.assert_allclose(Y32, layer64.forward(X), rtol=1e-5, atol=1e-5)


def test_he_normal_initialisation_scale_and_layout():
    layer = Conv2D(16, 64, (3, 5), rng=0)
    W = layer.params["W"]
    assert W.shape == (64, 16, 3, 5) and W.dtype == np.float32 and W.flags.c_contiguous
    assert W.std() == pytest.approx(np.sqrt(2.0 / (16 * 3 * 5)), rel=0.05)
    assert abs(W.mean()) < 0.01
    np.testing.assert_array_equal(layer.params["b"], 0)
    np.testing.assert_array_equal(Conv2D(16, 64, (3, 5), rng=0).params["W"], W)  # deterministic for a seed
    glorot = Conv2D(16, 64, 3, init="glorot_uniform", rng=0).params["W"]
    assert np.abs(glorot).max() <= np.sqrt(6.0 / (16 * 9 + 64))


def test_eval_mode_returns_fresh_arrays(rng):
    net = Sequential(Conv2D(1, 2, 3, rng=0), MaxPool2D(2), Flatten()).eval()
    a = net.forward(rng.standard_normal((2, 1, 6, 6)))
    b = net.forward(rng.standard_normal((2, 1, 6, 6)))
    assert not np.shares_memory(a, b)


OWNERSHIP_CASES = {
    "conv": (lambda: Conv2D(2, 3, 3, padding=1, rng=0), (2, 2, 6, 6), {}),
    "conv-strided": (lambda: Conv2D(2, 3, (3, 2), stride=2, rng=0), (2, 2, 7, 6), {}),
    "maxpool": (lambda: MaxPool2D(2), (2, 3, 6, 6), {}),
    "maxpool-overlapping": (lambda: MaxPool2D(3, stride=2), (2, 3, 7, 7), {}),
    "avgpool": (lambda: AvgPool2D(2), (2, 3, 6, 6), {}),
    # a reshape: forward is a view of the caller's input and dX a view of dY, nothing of the layer's own
    "flatten": (Flatten, (2, 3, 4, 4), {"reuses_forward": False, "reuses_dX": False}),
    "cnn": (lambda: Sequential(Conv2D(1, 2, 3, rng=0), ReLU(), MaxPool2D(2), Flatten()), (2, 1, 6, 6), {}),
}


@pytest.mark.parametrize("name", list(OWNERSHIP_CASES))
def test_outputs_belong_to_the_caller_and_reuse_is_an_equal_opt_in(name, rng):
    make_layer, shape, flags = OWNERSHIP_CASES[name]
    check_owned_outputs(make_layer, shape, rng, **flags)


def test_backward_without_input_gradient_still_fills_parameter_gradients(rng):
    layer = Conv2D(2, 3, 3, rng=0, dtype=np.float64)
    X = rng.standard_normal((2, 2, 5, 5))
    G = rng.standard_normal(layer.forward(X).shape)
    layer.backward(G)
    dW = layer.grads["W"].copy()
    layer.grads["W"][...] = 0
    layer.input_grad = False
    assert layer.backward(G) is None
    np.testing.assert_array_equal(layer.grads["W"], dW)


def test_mnist_sized_network_shapes():
    net = Sequential(
        Conv2D(1, 32, 3, padding=1, rng=0),
        ReLU(),
        MaxPool2D(2),
        Conv2D(32, 64, 3, padding=1, rng=1),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
    )
    Y = net.forward(np.zeros((4, 1, 28, 28), np.float32))
    assert Y.shape == (4, 64 * 7 * 7) and Y.dtype == np.float32
    assert net.backward(np.ones_like(Y), need_input_grad=False) is None


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def test_conv_rejects_bad_input_shapes():
    layer = Conv2D(3, 4, 3)
    with pytest.raises(ShapeError, match=r"expects input \(N, C, H, W\), got shape \(3, 8, 8\)"):
        layer.forward(np.zeros((3, 8, 8)))
    with pytest.raises(ShapeError, match=r"expects input \(N, 3, H, W\), got \(2, 1, 8, 8\)"):
        layer.forward(np.zeros((2, 1, 8, 8)))
    with pytest.raises(ShapeError, match=r"kernel \(3, 3\) is larger than the padded input \(2, 5\)"):
        layer.forward(np.zeros((1, 3, 2, 5)))
    layer.forward(np.zeros((1, 3, 4, 4)))
    with pytest.raises(ShapeError, match="backward expects dY"):
        layer.backward(np.zeros((1, 4, 3, 3)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(in_channels=0, out_channels=2, kernel_size=3), "in_channels must be a positive integer, got 0"),
        (
            dict(in_channels=1, out_channels=2.5, kernel_size=3),
            "out_channels must be a positive integer, got 2.5",
        ),
        (
            dict(in_channels=1, out_channels=2, kernel_size=0),
            "kernel_size must be a positive integer or a pair of them, got 0",
        ),
        (
            dict(in_channels=1, out_channels=2, kernel_size=(3, 3, 3)),
            r"kernel_size must be a positive integer or a pair of them, got \(3, 3, 3\)",
        ),
        (
            dict(in_channels=1, out_channels=2, kernel_size=3, stride=0),
            "stride must be a positive integer or a pair of them, got 0",
        ),
        (
            dict(in_channels=1, out_channels=2, kernel_size=3, padding=-1),
            "padding must be a non-negative integer or a pair of them, got -1",
        ),
        (
            dict(in_channels=1, out_channels=2, kernel_size=3, padding=1.5),
            "padding must be a non-negative integer or a pair of them, got 1.5",
        ),
        (
            dict(in_channels=1, out_channels=2, kernel_size=3, init="zeros"),
            "init must be one of glorot_uniform, he_normal; got 'zeros'",
        ),
        (dict(in_channels=1, out_channels=2, kernel_size=3, dtype=np.int32), "dtype must be a floating type"),
    ],
)
def test_conv_validates_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Conv2D(**kwargs)


def test_col2im_rejects_a_mismatched_column_matrix():
    with pytest.raises(ShapeError, match=r"col2im expects cols \(9, 4\)"):
        col2im(np.zeros((9, 5)), (1, 1, 4, 4), 2, 1)
