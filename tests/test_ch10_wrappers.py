"""Bidirectional, LastStep, TimeDistributed and stacked recurrent layers in Sequential (ch10 wrappers):
finite differences (float64), equality with the readable per-step forms, training, ownership, errors."""

import numpy as np
import pytest
from gradcheck import check_layer_gradients, check_owned_outputs

from handgrad import ShapeError
from handgrad.ch06_feedforward import Linear, Sequential, SoftmaxCrossEntropy
from handgrad.ch08_optimization import Adam
from handgrad.ch10_sequence import GRU, LSTM, RNN, Bidirectional, LastStep, TimeDistributed


def f64(layer, rng):
    for p in layer.params.values():
        p[...] = rng.uniform(-0.8, 0.8, p.shape)
    return layer


def test_bidirectional_is_the_two_directions_concatenated():
    rng = np.random.default_rng(0)
    fwd, bwd = LSTM(3, 4, rng=1, dtype=np.float64), GRU(3, 2, rng=2, dtype=np.float64)
    X = rng.standard_normal((2, 5, 3))
    Y = Bidirectional(fwd, bwd).forward(X)
    assert Y.shape == (2, 5, 6)
    np.testing.assert_array_equal(Y[..., :4], fwd.forward(X))
    backwards = bwd.forward(X[:, ::-1].copy())
    for t in range(5):  # step t of the second half has read X[:, t:], from the end back to t
        np.testing.assert_array_equal(Y[:, t, 4:], backwards[:, 4 - t])


@pytest.mark.parametrize("shape", [(2, 4, 3), (1, 1, 1)], ids=str)
def test_bidirectional_gradients(shape):
    rng = np.random.default_rng(1)
    D = shape[2]
    layer = Bidirectional(f64(LSTM(D, 3, dtype=np.float64), rng), f64(RNN(D, 2, dtype=np.float64), rng))
    assert sorted(layer.params) == ["bwd.U", "bwd.W", "bwd.b", "fwd.U", "fwd.W", "fwd.b"]
    check_layer_gradients(layer, rng.standard_normal(shape), rng)


def test_time_distributed_is_the_layer_at_every_step():
    rng = np.random.default_rng(2)
    lin = Linear(4, 3, rng=0, dtype=np.float64)
    lin.params["b"][...] = rng.standard_normal(3)
    X = rng.standard_normal((2, 5, 4))
    Y = TimeDistributed(lin).forward(X)
    for t in range(5):
        np.testing.assert_allclose(Y[:, t], X[:, t] @ lin.params["W"] + lin.params["b"], rtol=0, atol=1e-14)
    layer = TimeDistributed(Linear(4, 3, rng=0, dtype=np.float64))
    layer.params["b"][...] = rng.standard_normal(3)
    check_layer_gradients(layer, X, rng)


def test_last_step_gradients():
    rng = np.random.default_rng(3)
    H = rng.standard_normal((3, 4, 2))
    np.testing.assert_array_equal(LastStep().forward(H), H[:, -1])
    check_layer_gradients(LastStep(), H, rng)


def test_stacked_sequence_to_label_gradients():
    rng = np.random.default_rng(4)
    model = Sequential(
        f64(LSTM(2, 3, dtype=np.float64), rng),
        f64(GRU(3, 3, dtype=np.float64), rng),
        f64(RNN(3, 2, dtype=np.float64), rng),
        LastStep(),
        Linear(2, 2, rng=0, dtype=np.float64),
    )
    check_layer_gradients(model, rng.standard_normal((2, 4, 2)), rng)


def test_stacked_sequence_to_sequence_gradients():
    rng = np.random.default_rng(5)
    model = Sequential(
        Bidirectional(
            f64(GRU(2, 3, reset_after=False, dtype=np.float64), rng), f64(LSTM(2, 2, dtype=np.float64), rng)
        ),
        TimeDistributed(Linear(5, 3, rng=0, dtype=np.float64)),
    )
    check_layer_gradients(model, rng.standard_normal((2, 3, 2)), rng)


def test_the_chapter_example_model_trains_with_sequential_backward():
    """Sequential(LSTM(28, 64), LSTM(64, 64), LastStep(), Linear(64, 10)) learns a toy task: the class is
    the feature (of 28) with the largest mean over the 6 steps, so the model must read the whole sequence."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((32, 6, 28)).astype(np.float32) * 0.3
    y = rng.integers(0, 10, 32)
    X[np.arange(32), :, y] += 1.0
    model = Sequential(LSTM(28, 64, rng=0), LSTM(64, 64, rng=1), LastStep(), Linear(64, 10, rng=2))
    model.reuse_buffers()
    loss_fn, opt = SoftmaxCrossEntropy(), Adam(lr=1e-2)
    params, grads = model.params, model.grads
    losses = []
    for _ in range(25):
        losses.append(loss_fn.forward(model.forward(X), y))
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step(params, grads)
    assert losses[-1] < 0.3 * losses[0], losses


@pytest.mark.parametrize(
    "make",
    [
        lambda: Bidirectional(LSTM(3, 4, rng=0), GRU(3, 2, rng=1)),
        lambda: TimeDistributed(Linear(3, 2, rng=0)),
        lambda: LastStep(),
    ],
    ids=["bidirectional", "time-distributed", "last-step"],
)
def test_outputs_belong_to_the_caller(make):
    check_owned_outputs(make, (2, 5, 3), np.random.default_rng(0))


def test_input_grad_false_reaches_the_inner_layers():
    model = Sequential(TimeDistributed(Linear(3, 2, rng=0)), LSTM(2, 2, rng=0))
    model.forward(np.ones((2, 4, 3), np.float32))
    assert model.backward(np.ones((2, 4, 2), np.float32), need_input_grad=False) is None
    assert model[0].input_grad and model[0].layer.input_grad  # restored afterwards


def test_bad_input():
    with pytest.raises(ShapeError, match=r"LastStep\(\) expects input \(N, T, F\) with T >= 1, got \(2, 3\)"):
        LastStep().forward(np.zeros((2, 3)))
    td = TimeDistributed(Linear(3, 2))
    td.forward(np.zeros((2, 4, 3)))
    with pytest.raises(ShapeError, match=r"expects dY \(N, T, ...\) = \(2, 4, ...\), got \(4, 2\)"):
        td.backward(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="state must be a pair"):
        Bidirectional(RNN(3, 2), RNN(3, 2)).forward(np.zeros((2, 4, 3)), np.zeros((2, 2)))
    with pytest.raises(ShapeError, match=r"RNN\(3, 2\) expects input \(N, T, 3\), got \(2, 4, 5\)"):
        Bidirectional(RNN(3, 2), RNN(3, 2)).forward(np.zeros((2, 4, 5)))
