"""Chapter 9, fused.py: the Conv2D → BatchNorm2D → ReLU → MaxPool2D(2) block against the composition of
the separate layers (outputs, dX, parameter gradients, running statistics), in float64 and float32, with
negative and zero γ, exact ties inside the pooling windows, eval mode, and the FusedSequential wrapper.
"""

import copy

import numpy as np
import pytest
from gradcheck import relative_error

from handgrad.ch06_feedforward import Linear, ReLU, Sequential
from handgrad.ch08_optimization import BatchNorm2D
from handgrad.ch09_convolution import Conv2D, Flatten, MaxPool2D
from handgrad.ch09_convolution.fused import ConvBNReLUPool, FusedSequential, fusable

# (N, C_in, C_out, H, W, kernel, stride, padding): odd sizes (the pool floors), stride 2 with padding,
# one input channel, a batch of one, a rectangular kernel; then the recipe's three blocks
RECIPE = [(16, 1, 16, 28, 28, 3, 1, 1), (16, 16, 32, 14, 14, 3, 1, 1), (16, 32, 64, 7, 7, 3, 1, 1)]
CASES = [
    (2, 1, 3, 5, 7, 3, 1, 1),
    (3, 2, 4, 9, 9, 3, 2, 1),
    (1, 3, 2, 6, 8, (3, 2), 1, (1, 0)),
    (2, 2, 3, 7, 6, 1, 1, 0),
    (3, 1, 4, 8, 6, 3, 1, 1),  # one channel, even sizes: the window-major rows
    (2, 1, 3, 12, 10, (3, 2), 2, 1),  # the same with stride 2 and a rectangular kernel
]
WINDOW_MAJOR = [*CASES[-2:], RECIPE[0]]


def make_layers(case, rng, dtype=np.float64, gamma=None):
    N, C, C_out, H, W, k, s, p = case
    conv = Conv2D(C, C_out, k, stride=s, padding=p, rng=rng, dtype=dtype)
    conv.params["b"][...] = rng.standard_normal(C_out)
    bn = BatchNorm2D(C_out, dtype=dtype)
    bn.params["gamma"][...] = rng.standard_normal(C_out) if gamma is None else gamma
    bn.params["beta"][...] = rng.standard_normal(C_out)
    bn.state["running_mean"][...] = rng.standard_normal(C_out)
    bn.state["running_var"][...] = rng.uniform(0.5, 2, C_out)
    return [conv, bn, ReLU(), MaxPool2D(2)], rng.standard_normal((N, C, H, W)).astype(dtype)


def run(stage, X, dOut, input_grad=True):
    stage.input_grad = input_grad
    out = stage.forward(X).copy()
    dX = stage.backward(dOut)
    return out, (None if dX is None else dX.copy())


def compare(layers, X, rng, tol, input_grad=True):
    """Train-mode forward and backward of the block and of the composition from equal copies."""
    composed = Sequential(*copy.deepcopy(layers))
    block = ConvBNReLUPool(*copy.deepcopy(layers))
    out_ref = composed.forward(X).copy()
    dOut = rng.standard_normal(out_ref.shape).astype(X.dtype)
    dX_ref = composed.backward(dOut, need_input_grad=input_grad)
    out, dX = run(block, X, dOut, input_grad)
    assert out.dtype == X.dtype and out.shape == out_ref.shape
    assert relative_error(out, out_ref) < tol
    if input_grad:
        assert dX.dtype == X.dtype and relative_error(dX, dX_ref) < tol
    else:
        assert dX is None
    conv_r, bn_r = composed.layers[0], composed.layers[1]
    for name, ref in [
        ("W", conv_r.grads["W"]),
        ("b", conv_r.grads["b"]),
        ("gamma", bn_r.grads["gamma"]),
        ("beta", bn_r.grads["beta"]),
    ]:
        scale = max(np.abs(ref).max(), np.abs(conv_r.grads["W"]).max())  # db is ~0: judge it by dW's scale
        assert np.abs(block.grads[name] - ref).max() <= tol * scale, name
    for key in ("running_mean", "running_var"):
        assert relative_error(block.bn.state[key], bn_r.state[key]) < tol
    return block, composed


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("signs", ["positive", "mixed"])
def test_block_equals_the_composition_in_float64(case, signs, rng):
    c = case[2]
    gamma = rng.uniform(0.5, 2, c) * (np.where(np.arange(c) % 2, -1, 1) if signs == "mixed" else 1)
    layers, X = make_layers(case, rng, gamma=gamma)
    compare(layers, X, rng, 1e-9)


@pytest.mark.parametrize("case", WINDOW_MAJOR)
@pytest.mark.parametrize("input_grad", [True, False])
def test_window_major_rows_and_the_form_without_dy_equal_the_composition(case, input_grad, rng):
    """One input channel and even sizes: rows ordered by window offset; without dX, dW and db as
    [cols 1]ᵀ dy without dy (``_grads_without_dy``) instead of colsᵀ dy."""
    c = case[2]
    gamma = rng.uniform(0.5, 2, c) * np.where(np.arange(c) % 2, -1, 1)
    layers, X = make_layers(case, rng, gamma=gamma)
    block, _ = compare(layers, X, rng, 1e-9, input_grad=input_grad)
    assert block._cache.cols_ext is not None  # the window-major layout was used


@pytest.mark.parametrize("case", CASES + RECIPE)
def test_block_equals_the_composition_in_float32(case, rng):
    c = case[2]
    gamma = rng.uniform(0.5, 2, c) * np.where(np.arange(c) % 3 == 1, -1, 1)
    layers, X = make_layers(case, rng, np.float32, gamma=gamma.astype(np.float32))
    compare(layers, X, rng, 2e-5, input_grad=case[1] != 1)


@pytest.mark.parametrize("offset", [0.0, 100.0])
@pytest.mark.parametrize("case", RECIPE[:2], ids=["window-major, no dX", "image rows"])
def test_the_one_pass_variance_is_guarded_against_cancellation(case, offset, rng, monkeypatch):
    """σ² = Σy²/m − μ² where μ² ≤ 10 σ² (the recipe's inputs: one read of y), the two-pass form over a
    centred copy elsewhere (inputs offset by 100: μ² ≈ 10⁴ σ²); both equal the composition in float32.
    Without the guard the offset inputs lose the variance to cancellation, so the test can fail."""
    gamma = rng.uniform(0.5, 2, case[2]) * np.where(np.arange(case[2]) % 3 == 1, -1, 1)
    layers, X = make_layers(case, rng, np.float32, gamma=gamma.astype(np.float32))
    X = X + np.float32(offset)
    block, _ = compare(layers, X, rng, 2e-5, input_grad=case[1] != 1)
    assert (block._cache.centred is block._buffers["Y_mat"]) == (offset == 0)  # one pass: y itself is kept
    if offset:
        monkeypatch.setattr(ConvBNReLUPool, "VARIANCE_GUARD", np.inf)
        with pytest.raises(AssertionError):
            compare(layers, X, rng, 2e-5, input_grad=case[1] != 1)


def tie_inputs(rng, size=(6, 6), C=4):
    """A 1×1 convolution with W = 1 and inputs drawn from three values: many exact ties in every window."""
    conv, bn = Conv2D(1, C, 1, rng=rng, dtype=np.float64), BatchNorm2D(C, dtype=np.float64)
    conv.params["W"][...] = 1
    return conv, bn, rng.integers(0, 3, (4, 1, *size)).astype(np.float64)


@pytest.mark.parametrize("gamma", [[1.0, -1.0, 2.0, -0.5], [0.0, 1.0, 0.0, -1.0]])
@pytest.mark.parametrize("size", [(6, 6), (7, 6)])  # window-major rows, and the image's row order
def test_ties_route_the_gradient_to_the_same_position_as_the_composition(gamma, size, rng):
    """Exact ties (and γ = 0, where all of a window's z are equal): the first position in row-major order
    gets the gradient, in the block and in the composition (which is PyTorch's choice: *_torch.py)."""
    conv, bn, X = tie_inputs(rng, size)
    bn.params["gamma"][...] = gamma
    bn.params["beta"][...] = [0.5, 0.25, 0.1, 0.3]
    block, composed = compare([conv, bn, ReLU(), MaxPool2D(2)], X, rng, 1e-9)
    # the position matters for dγ (Σ dz x̂ over the chosen positions) and for dX
    np.testing.assert_allclose(block.grads["gamma"], composed.layers[1].grads["gamma"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", [CASES[0], CASES[4]])  # the image's row order, and window-major rows
def test_eval_mode_folds_batch_norm_and_keeps_nothing_for_backward(case, rng):
    layers, X = make_layers(case, rng, gamma=np.linspace(1.5, -0.5, case[2]))
    composed = Sequential(*copy.deepcopy(layers)).eval()
    block = ConvBNReLUPool(*copy.deepcopy(layers)).eval()
    before = {k: v.copy() for k, v in block.bn.state.items()}
    out = block.forward(X)
    assert relative_error(out, composed.forward(X)) < 1e-12
    assert block.forward(X) is not out  # eval mode returns fresh arrays
    assert all((block.bn.state[k] == v).all() for k, v in before.items())
    with pytest.raises(RuntimeError, match="training mode"):
        block.backward(np.ones_like(out))


def test_only_the_four_layer_pattern_fuses(rng):
    conv, bn = Conv2D(1, 2, 3, padding=1, rng=rng), BatchNorm2D(2)
    assert fusable([conv, bn, ReLU(), MaxPool2D(2)])
    assert not fusable([conv, bn, ReLU(), MaxPool2D(3)])
    assert not fusable([conv, BatchNorm2D(3), ReLU(), MaxPool2D(2)])
    assert not fusable([conv, bn, ReLU()])
    with pytest.raises(ValueError, match="fuses Conv2D, BatchNorm2D"):
        ConvBNReLUPool(conv, bn, ReLU(), MaxPool2D(2, stride=1))


def small_cnn(rng, dtype=np.float64):
    layers = []
    for c_in, c_out in ((1, 3), (3, 4)):
        layers += make_layers((1, c_in, c_out, 1, 1, 3, 1, 1), rng, dtype)[0]
    return [*layers, Flatten(), Linear(4 * 2 * 2, 5, rng=rng, dtype=dtype)]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-9), (np.float32, 2e-5)])
def test_fused_sequential_equals_sequential_and_keeps_its_names(dtype, tol, rng):
    layers = small_cnn(rng, dtype)
    plain, fused = Sequential(*copy.deepcopy(layers)), FusedSequential(*copy.deepcopy(layers))
    assert [n for n, _, _ in fused.parameters()] == [n for n, _, _ in plain.parameters()]
    assert [s for s, _ in fused.stages] == [4, 4, 1, 1]
    assert fused.stages[0][1].channels_last_out and fused.stages[1][1].channels_last_in
    X = rng.standard_normal((3, 1, 9, 10)).astype(dtype)
    for model in (plain, fused):
        model.reuse_buffers()
    for _ in range(2):  # twice: running statistics and reused buffers carry over
        out_p, out_f = plain.forward(X), fused.forward(X)
        assert relative_error(out_f, out_p) < tol
        dOut = np.cos(out_p)
        dX_p, dX_f = plain.backward(dOut), fused.backward(dOut)
        assert relative_error(dX_f, dX_p) < tol
        scale = max(np.abs(g).max() for _, _, g in plain.parameters())  # the conv biases' gradients are ~0
        for (name, _, g_p), (_, _, g_f) in zip(plain.parameters(), fused.parameters()):
            assert np.abs(g_f - g_p).max() <= tol * scale, name
    assert fused.backward(dOut, need_input_grad=False) is None  # the first block: parameter gradients only
    assert (fused.predict(X) == plain.predict(X)).all()
    assert fused.training and all(stage.training for _, stage in fused.stages)
