"""Chapter 7, penalties.py: the L2 penalty and its gradient against closed forms (eqs. 20–21)."""

import numpy as np
import pytest
from gradcheck import relative_error
from hypothesis import given, settings
from hypothesis import strategies as st

from handgrad import ShapeError
from handgrad.ch04_numerical import numerical_gradient
from handgrad.ch06_feedforward import Linear, ReLU, Sequential
from handgrad.ch07_regularization import add_l2_grad_, is_bias, l2_grad, l2_penalty


def named_params(rng):
    return {
        "0.W": rng.standard_normal((4, 3)),
        "0.b": rng.standard_normal(3),
        "fc.bias": rng.standard_normal(3),
        "scale": rng.standard_normal(5),  # no bias name, but 1-D: excluded by shape
        "conv.kernel": rng.standard_normal((2, 2, 3)),
        "head.b": rng.standard_normal((2, 2)),  # 2-D, but named b: excluded by name
    }


WEIGHTS = ["0.W", "conv.kernel"]


def test_bias_detection_by_name_and_shape():
    assert is_bias("b", np.zeros((2, 2))) and is_bias("layer.3.bias", np.zeros((2, 2)))
    assert is_bias("gamma", np.zeros(4)) and is_bias(None, np.zeros(4))
    assert not is_bias("0.W", np.zeros((2, 2))) and not is_bias("bias_net.W", np.zeros((2, 2)))
    assert not is_bias("table", np.zeros((2, 2)))


def test_penalty_equals_closed_form(rng):
    params = named_params(rng)
    lam = 0.3
    expected = lam / 2 * sum(np.sum(params[k] ** 2) for k in WEIGHTS)
    assert l2_penalty(params, lam) == pytest.approx(expected, rel=1e-12)
    everything = lam / 2 * sum(np.sum(p**2) for p in params.values())
    assert l2_penalty(params, lam, include_biases=True) == pytest.approx(everything, rel=1e-12)


def test_gradient_is_lambda_w_and_leaves_biases_alone(rng):
    params = named_params(rng)
    snapshot = {k: v.copy() for k, v in params.items()}
    grads = l2_grad(params, 0.3)
    assert set(grads) == set(params)
    for k in params:
        if k in WEIGHTS:
            np.testing.assert_allclose(grads[k], 0.3 * params[k], rtol=1e-15)
        else:
            assert grads[k] is None
        np.testing.assert_array_equal(params[k], snapshot[k])  # inputs never modified
    with_biases = l2_grad(params, 0.3, include_biases=True)
    for k in params:
        np.testing.assert_allclose(with_biases[k], 0.3 * params[k], rtol=1e-15)


def test_gradient_matches_finite_differences_of_penalty(rng):
    params = named_params(rng)
    lam = 0.7
    analytic = l2_grad(params, lam)
    for k in WEIGHTS:

        def f(w, k=k):
            return l2_penalty({**params, k: w}, lam)

        assert relative_error(analytic[k], numerical_gradient(f, params[k].copy())) < 1e-6


def test_list_form_uses_the_shape_rule(rng):
    params = [rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal((2, 2))]
    grads = l2_grad(params, 2.0)
    assert isinstance(grads, list) and grads[1] is None
    np.testing.assert_allclose(grads[0], 2 * params[0])
    assert l2_penalty(params, 2.0) == pytest.approx(np.sum(params[0] ** 2) + np.sum(params[2] ** 2))


def test_float32_stays_float32(rng):
    params = {"W": rng.standard_normal((3, 3)).astype(np.float32)}
    assert l2_grad(params, 1e-4)["W"].dtype == np.float32
    assert isinstance(l2_penalty(params, 1e-4), float)


@pytest.mark.parametrize("include_biases", [False, True])
def test_add_l2_grad_in_place_equals_l2_grad(rng, include_biases):
    params = named_params(rng)
    params["big"] = rng.standard_normal((300, 250))  # a layer-sized weight
    grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    before = {k: g.copy() for k, g in grads.items()}
    refs = dict(grads)
    extra = l2_grad(params, 0.05, include_biases=include_biases)
    assert add_l2_grad_(params, grads, 0.05, include_biases=include_biases) is grads
    for k in params:
        assert grads[k] is refs[k]
        expected = before[k] if extra[k] is None else before[k] + extra[k]
        np.testing.assert_allclose(grads[k], expected, rtol=1e-14, atol=1e-15)


def test_add_l2_grad_list_form_none_and_non_contiguous(rng):
    W = rng.standard_normal((6, 4))
    params = [W[:, ::2], rng.standard_normal(3), rng.standard_normal((2, 2))]  # first one is a strided view
    grads = [np.ones((6, 2)), np.ones(3), None]
    add_l2_grad_(params, grads, 0.5)
    np.testing.assert_allclose(grads[0], 1 + 0.5 * params[0])
    np.testing.assert_array_equal(grads[1], np.ones(3))
    assert grads[2] is None


def test_add_l2_grad_on_a_model(rng):
    model = Sequential(Linear(3, 4, rng=0), ReLU(), Linear(4, 2, rng=1))
    params, grads = model.params, model.grads
    for g in grads.values():
        g[...] = 1.0
    add_l2_grad_(params, grads, 0.1)
    np.testing.assert_allclose(model[0].grads["W"], 1 + 0.1 * model[0].params["W"], rtol=1e-6)
    np.testing.assert_array_equal(model[2].grads["b"], np.ones(2, np.float32))


@pytest.mark.parametrize(
    "lam, message",
    [
        (-0.1, "lam must be non-negative, got -0.1"),
        (float("nan"), "lam must be a non-negative finite number, got nan"),
        (float("inf"), "lam must be a non-negative finite number, got inf"),
        ("0.1", "lam must be a non-negative finite number, got '0.1'"),
        (True, "lam must be a non-negative finite number, got True"),
    ],
)
def test_lambda_validated(rng, lam, message):
    params = named_params(rng)
    for call in (
        lambda: l2_penalty(params, lam),
        lambda: l2_grad(params, lam),
        lambda: add_l2_grad_(params, dict.fromkeys(params), lam),
    ):
        with pytest.raises(ValueError, match=message):
            call()


def test_add_l2_grad_mismatches(rng):
    params = {"W": np.zeros((2, 2)), "V": np.zeros((3, 3))}
    with pytest.raises(ValueError, match="missing from grads \\['V'\\]"):
        add_l2_grad_(params, {"W": np.zeros((2, 2))}, 0.1)
    with pytest.raises(ShapeError, match="'W'"):
        add_l2_grad_(params, {"W": np.zeros((2, 3)), "V": np.zeros((3, 3))}, 0.1)
    with pytest.raises(ValueError, match="2 entries but grads has 1"):
        add_l2_grad_([np.zeros((2, 2))] * 2, [np.zeros((2, 2))], 0.1)
    with pytest.raises(TypeError):
        l2_penalty(np.zeros((2, 2)), 0.1)


@settings(max_examples=50, deadline=None)
@given(lam=st.floats(0, 10), scale=st.floats(-5, 5), seed=st.integers(0, 2**16))
def test_penalty_is_quadratic_in_the_weights(lam, scale, seed):
    """Ω(c·w) = c² Ω(w) and Ω ≥ 0 for every λ ≥ 0."""
    params = named_params(np.random.default_rng(seed))
    base = l2_penalty(params, lam)
    scaled = l2_penalty({k: scale * v for k, v in params.items()}, lam)
    assert base >= 0
    assert scaled == pytest.approx(scale**2 * base, rel=1e-9, abs=1e-12)


def test_add_l2_grad_allocates_no_weight_sized_temporary(rng):
    """The hot-loop form reuses its scratch array: a second call allocates (almost) nothing."""
    import tracemalloc

    W = rng.standard_normal((300, 200)).astype(np.float32)
    params, grads = {"W": W}, {"W": np.zeros_like(W)}
    add_l2_grad_(params, grads, 0.1)  # the first call may create the scratch array
    tracemalloc.start()
    try:
        add_l2_grad_(params, grads, 0.1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < W.nbytes / 10
    np.testing.assert_allclose(grads["W"], 0.2 * W, rtol=1e-6)
