"""RNN, LSTM and GRU (ch10 recurrent, gated): finite differences through BPTT (float64), the initial and
final states, truncated BPTT, buffer ownership, the subnormal flush, the fused sigmoid, and bad input."""

import numpy as np
import pytest
from gradcheck import check_layer_gradients, check_owned_outputs, relative_error

from handgrad import ShapeError
from handgrad.ch04_numerical import numerical_gradient, sigmoid
from handgrad.ch10_sequence import GRU, LSTM, RNN
from handgrad.ch10_sequence.recurrent import _sigmoid_

MAKERS = {
    "rnn-tanh": lambda D, H, seed, **kw: RNN(D, H, rng=seed, **kw),
    "rnn-relu": lambda D, H, seed, **kw: RNN(D, H, nonlinearity="relu", rng=seed, **kw),
    "lstm": lambda D, H, seed, **kw: LSTM(D, H, rng=seed, **kw),
    "gru": lambda D, H, seed, **kw: GRU(D, H, reset_after=True, rng=seed, **kw),
    "gru-book": lambda D, H, seed, **kw: GRU(D, H, reset_after=False, rng=seed, **kw),
}


def randomised(layer, rng, scale=0.8):
    """Every parameter redrawn, biases included, so no gate is silently zero or equal to another."""
    for p in layer.params.values():
        p[...] = rng.uniform(-scale, scale, p.shape)
    return layer


def random_state(layer, N, rng):
    h = rng.standard_normal((N, layer.hidden_size))
    return (h, rng.standard_normal((N, layer.hidden_size))) if isinstance(layer, LSTM) else h


def parts(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("name", MAKERS)
@pytest.mark.parametrize("shape", [(2, 4, 3, 3), (1, 1, 1, 2), (3, 2, 1, 1)], ids=str)  # N, T, D, H
def test_bptt_matches_finite_differences(name, shape):
    N, T, D, H = shape
    rng = np.random.default_rng(7)
    layer = randomised(MAKERS[name](D, H, 3, dtype=np.float64), rng)
    X = rng.standard_normal((N, T, D)) + 0.1  # away from ReLU's kink at 0 (it is shifted by the biases)
    check_layer_gradients(layer, X, rng, tol=1e-6)


@pytest.mark.parametrize("name", MAKERS)
def test_state_gradients_match_finite_differences(name):
    """state_grad = dL/d(initial state) and dstate = dL/d(final state), by central differences."""
    N, T, D = 2, 3, 2
    rng = np.random.default_rng(11)
    layer = randomised(MAKERS[name](D, 3, 5, dtype=np.float64), rng)
    X, state = rng.standard_normal((N, T, D)), random_state(layer, N, rng)
    G = rng.standard_normal((N, T, 3))
    G_final = tuple(rng.standard_normal((N, 3)) for _ in parts(state))

    def loss(*s):
        Y = layer.forward(X, s if len(s) == 2 else s[0])
        return float(np.sum(Y * G) + sum(np.sum(f * g) for f, g in zip(parts(layer.final_state), G_final)))

    layer.forward(X, state)
    layer.backward(G, G_final if len(G_final) == 2 else G_final[0])
    analytic = parts(layer.state_grad)
    for k, s in enumerate(parts(state)):

        def loss_k(v, k=k):
            s2 = list(parts(state))
            s2[k] = v
            return loss(*s2)

        assert relative_error(analytic[k], numerical_gradient(loss_k, s.copy())) < 1e-7


@pytest.mark.parametrize("name", MAKERS)
def test_zero_state_is_the_default_and_final_state_is_the_last_output(name):
    rng = np.random.default_rng(2)
    layer = randomised(MAKERS[name](3, 4, 0, dtype=np.float64), rng)
    X = rng.standard_normal((2, 5, 3))
    zeros = tuple(np.zeros((2, 4)) for _ in parts(random_state(layer, 2, rng)))
    Y = layer.forward(X)
    np.testing.assert_array_equal(Y, layer.forward(X, zeros if len(zeros) == 2 else zeros[0]))
    np.testing.assert_array_equal(parts(layer.final_state)[0], Y[:, -1])
    assert not np.shares_memory(parts(layer.final_state)[0], Y)  # a copy: carrying it links nothing


def step_by_step(layer, X, state):
    """The layer run one step at a time, each step's final state the next one's start: the recurrence."""
    outs = []
    for t in range(X.shape[1]):
        outs.append(layer.forward(X[:, t : t + 1], state)[:, 0])
        state = layer.final_state
    return np.stack(outs, axis=1)


@pytest.mark.parametrize("name", MAKERS)
def test_one_long_forward_equals_the_steps_chained(name):
    rng = np.random.default_rng(3)
    layer = randomised(MAKERS[name](2, 3, 0, dtype=np.float64), rng)
    X, state = rng.standard_normal((2, 6, 2)), random_state(layer, 2, rng)
    np.testing.assert_allclose(layer.forward(X, state), step_by_step(layer, X, state), rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", MAKERS)
def test_truncated_bptt_carries_the_state_and_cuts_the_gradient(name):
    """Two halves with the state carried (stateful=True) give the whole sequence's forward; the second
    half's backward leaves the first half's gradients alone and ends in state_grad, dL/dh at the cut."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3, 8, 2))
    whole = randomised(MAKERS[name](2, 4, 0, dtype=np.float64), np.random.default_rng(9))
    Y = whole.forward(X)
    layer = randomised(MAKERS[name](2, 4, 0, dtype=np.float64, stateful=True), np.random.default_rng(9))
    Y1 = layer.forward(X[:, :4])
    cut = tuple(s.copy() for s in parts(layer.final_state))
    G = rng.standard_normal((3, 4, 4))
    dX1 = layer.backward(G).copy()
    Y2 = layer.forward(X[:, 4:])  # starts from the carried state
    np.testing.assert_allclose(np.concatenate([Y1, Y2], axis=1), Y, rtol=0, atol=1e-14)
    dX2 = layer.backward(G)
    assert dX2.shape == (3, 4, 2)
    # the second half's gradient is the gradient of a fresh layer started from the cut state: nothing of
    # it flowed into the first half (whose dX is still what the first backward returned)
    fresh = randomised(MAKERS[name](2, 4, 0, dtype=np.float64), np.random.default_rng(9))
    fresh.forward(X[:, 4:], cut if len(cut) == 2 else cut[0])
    np.testing.assert_array_equal(fresh.backward(G), dX2)
    for a, b in zip(parts(fresh.state_grad), parts(layer.state_grad)):
        np.testing.assert_array_equal(a, b)
    # whereas back-propagating through the whole sequence does change the first half's dX
    G_whole = np.concatenate([np.zeros_like(G), G], axis=1)
    assert np.abs(whole.backward(G_whole)[:, :4]).max() > 1e-6
    assert np.abs(dX1).max() > 0
    layer.reset_state()
    np.testing.assert_array_equal(layer.forward(X[:, :4]), Y1)  # from zeros again


def test_initial_state_attribute_is_used_inside_sequential():
    from handgrad.ch06_feedforward import Sequential

    rng = np.random.default_rng(5)
    rnn = RNN(2, 3, rng=0, dtype=np.float64)
    X, h0 = rng.standard_normal((2, 4, 2)), rng.standard_normal((2, 3))
    expected = rnn.forward(X, h0)
    rnn.initial_state = h0
    np.testing.assert_array_equal(Sequential(rnn).forward(X), expected)


@pytest.mark.parametrize("name", MAKERS)
def test_outputs_belong_to_the_caller_and_reuse_gives_the_same_numbers(name):
    check_owned_outputs(lambda: MAKERS[name](3, 4, 1), (2, 5, 3), np.random.default_rng(0))


@pytest.mark.parametrize("name", MAKERS)
def test_float32_stays_float32(name):
    layer = MAKERS[name](3, 4, 1)
    Y = layer.forward(np.ones((2, 5, 3), np.float32))
    dX = layer.backward(np.ones_like(Y))
    assert Y.dtype == dX.dtype == np.float32 and all(g.dtype == np.float32 for g in layer.grads.values())


def test_pytorch_initialisation_bounds():
    layer = LSTM(10, 64, rng=0)
    k = 1 / np.sqrt(64)
    assert np.abs(layer.params["U"]).max() <= k and np.abs(layer.params["U"]).max() > 0.95 * k
    assert np.abs(layer.params["b"]).max() <= 2 * k  # the sum of PyTorch's two biases
    assert layer.params["U"].shape == (10, 256) and layer.params["W"].shape == (64, 256)
    gru = GRU(10, 8, rng=0)
    assert gru.params["b_hn"].shape == (8,) and "b_hn" not in GRU(10, 8, reset_after=False).params


def test_fused_sigmoid_equals_chapter_4s():
    x = np.concatenate([np.linspace(-40, 40, 10001), [-700.0, 700.0]])
    np.testing.assert_allclose(_sigmoid_(x.copy()), sigmoid(x), rtol=0, atol=4 * np.finfo(np.float64).eps)
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(_sigmoid_(x32.copy()), sigmoid(x32), rtol=0, atol=4 * np.finfo(np.float32).eps)


def test_flushing_subnormals_changes_the_gradients_by_less_than_the_smallest_normal():
    """A float32 tanh RNN over T = 500 steps with small weights: the carried gradient decays through the
    subnormal range. Without the flush, subnormals appear in it; with it, they are zero, and no result
    differs by as much as the smallest normal number."""
    tiny = np.finfo(np.float32).tiny
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 500, 3)).astype(np.float32)
    dH = np.zeros((4, 500, 8), np.float32)
    dH[:, -1] = 1.0  # the loss sees only the last step, as a sequence-to-label model's does
    results, counts = {}, {}
    for flush in (True, False):
        rnn = RNN(3, 8, rng=0)
        rnn.flush_subnormals = flush
        rnn.forward(X)
        dX = rnn.backward(dH)
        results[flush] = [dX.copy(), rnn.state_grad.copy(), *(g.copy() for g in rnn.grads.values())]
        dA = rnn._buffers["dA"]
        counts[flush] = int(((dA != 0) & (np.abs(dA) < tiny)).sum())  # subnormal entries of dA
    # flushed (every flush_every-th step), a subnormal in dh_next lives a few steps and then is zero, as
    # everything after it; unflushed, the gradient takes many steps to decay through the subnormal range
    assert counts[False] > 100 and counts[True] < counts[False] / 3, counts
    for a, b in zip(results[True], results[False]):
        assert np.abs(a.astype(np.float64) - b).max() < tiny


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: LSTM(3, 4).forward(np.zeros((2, 5, 2))),
            r"LSTM\(3, 4\) expects input \(N, T, 3\), got \(2, 5, 2\)",
        ),
        (lambda: RNN(3, 4).forward(np.zeros((5, 3))), r"RNN\(3, 4\) expects input \(N, T, 3\), got \(5, 3\)"),
        (lambda: GRU(3, 4).forward(np.zeros((2, 0, 3))), r"at least one step, got \(2, 0, 3\)"),
        (
            lambda: RNN(3, 4).forward(np.zeros((2, 5, 3)), np.zeros((3, 4))),
            r"h0 must have shape \(N, H\) = \(2, 4\) for input of 2 sequences, got \(3, 4\)",
        ),
        (lambda: LSTM(3, 4).forward(np.zeros((2, 5, 3)), np.zeros((2, 4))), r"must be a pair \(h, c\)"),
        (
            lambda: LSTM(3, 4).forward(np.zeros((2, 5, 3)), (np.zeros((2, 4)), np.zeros((2, 5)))),
            r"state\[1\] \(c\) must have shape \(N, H\) = \(2, 4\) .* got \(2, 5\)",
        ),
    ],
)
def test_bad_input_is_a_shape_error_naming_the_shapes(call, message):
    with pytest.raises(ValueError, match=message) as err:
        call()
    assert isinstance(err.value, ShapeError) or "pair" in message


def test_bad_backward_and_stateful_batch_size():
    rnn = RNN(3, 4)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        rnn.backward(np.zeros((2, 5, 4)))
    rnn.forward(np.zeros((2, 5, 3)))
    with pytest.raises(ShapeError, match=r"dY of the forward output's shape \(2, 5, 4\), got \(2, 5, 3\)"):
        rnn.backward(np.zeros((2, 5, 3)))
    with pytest.raises(ShapeError, match=r"dstate must have shape \(N, H\) = \(2, 4\)"):
        rnn.backward(np.zeros((2, 5, 4)), np.zeros(4))
    stateful = RNN(3, 4, stateful=True)
    stateful.forward(np.zeros((2, 5, 3)))
    with pytest.raises(ShapeError, match=r"h0 must have shape \(N, H\) = \(3, 4\) for input of 3 sequences"):
        stateful.forward(np.zeros((3, 5, 3)))  # a last, smaller batch: reset_state() first


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RNN(0, 4), "input_size must be a positive integer, got 0"),
        (lambda: LSTM(3, 2.5), "hidden_size must be a positive integer, got 2.5"),
        (lambda: RNN(3, 4, nonlinearity="sigmoid"), "nonlinearity must be one of tanh, relu; got 'sigmoid'"),
        (lambda: GRU(3, 4, reset_after=1), "reset_after must be true or false, got 1"),
        (lambda: LSTM(3, 4, stateful="yes"), "stateful must be true or false, got 'yes'"),
        (lambda: GRU(3, 4, dtype=np.int32), "dtype must be a floating type, got int32"),
    ],
)
def test_bad_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()
