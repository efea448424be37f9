"""Chapter 8, batch_norm.py: batch normalisation (§8.7.1) against finite differences, its statistics and
the layer contract.
"""

import threading

import numpy as np
import pytest
from gradcheck import check_layer_gradients, check_owned_outputs

from handgrad import ShapeError
from handgrad.ch08_optimization import BatchNorm1D, BatchNorm2D


@pytest.mark.parametrize(
    "cls, shape", [(BatchNorm1D, (5, 3)), (BatchNorm2D, (3, 2, 3, 2)), (BatchNorm2D, (1, 2, 2, 3))]
)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients(cls, shape, training, rng):
    layer = cls(shape[1], dtype=np.float64)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, shape[1])
    layer.params["beta"][...] = rng.standard_normal(shape[1])
    layer.state["running_mean"][...] = rng.standard_normal(shape[1])
    layer.state["running_var"][...] = rng.uniform(0.5, 2.0, shape[1])
    layer.train(training)
    check_layer_gradients(layer, rng.standard_normal(shape) * 2 + 1, rng)


def test_batch_norm_training_output_is_standardised_per_channel(rng):
    X = rng.standard_normal((16, 3, 4, 4)) * np.array([1, 5, 0.1]).reshape(1, 3, 1, 1) + 7
    Y = BatchNorm2D(3, dtype=np.float64).forward(X)
    np.testing.assert_allclose(Y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(Y.var(axis=(0, 2, 3)), 1 / (1 + 1e-5 / X.var(axis=(0, 2, 3))), rtol=1e-10)


@pytest.mark.parametrize("cls, shape", [(BatchNorm1D, (6, 4)), (BatchNorm2D, (2, 4, 3, 3))])
def test_batch_norm_float32_in_float32_out(cls, shape, rng):
    layer = cls(4)
    X = rng.standard_normal(shape).astype(np.float32)
    Y = layer.forward(X)
    assert Y.dtype == np.float32
    assert layer.backward(np.ones_like(Y)).dtype == np.float32
    assert all(a.dtype == np.float32 for a in [*layer.grads.values(), *layer.state.values()])
    assert layer.eval().forward(X).dtype == np.float32


def test_batch_norm_state_convention_arrays_are_updated_in_place(rng):
    layer = BatchNorm1D(3)
    mean, var = layer.state["running_mean"], layer.state["running_var"]
    np.testing.assert_array_equal(mean, 0)
    np.testing.assert_array_equal(var, 1)
    layer.forward(rng.standard_normal((4, 3)) + 2)
    assert layer.state["running_mean"] is mean and layer.state["running_var"] is var
    assert np.all(mean > 0)
    saved = {k: v.copy() for k, v in layer.state.items()}
    restored = BatchNorm1D(3).eval()
    for k, v in saved.items():
        restored.state[k][...] = v  # how a checkpoint restores it
    X = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(restored.forward(X), layer.eval().forward(X))


def _batch_norm_with_random_affine(cls, C):
    layer = cls(C)
    g = np.random.default_rng(3)
    layer.params["gamma"][...] = g.uniform(0.5, 1.5, C)  # γ ≠ 1, β ≠ 0: every term of dx counts
    layer.params["beta"][...] = g.standard_normal(C)
    return layer


@pytest.mark.parametrize("cls, shape", [(BatchNorm1D, (6, 3)), (BatchNorm2D, (3, 2, 4, 4))])
def test_batch_norm_outputs_belong_to_the_caller_and_reuse_is_an_equal_opt_in(cls, shape, rng):
    check_owned_outputs(lambda: _batch_norm_with_random_affine(cls, shape[1]), shape, rng)


def test_batch_norm_eval_does_not_touch_running_statistics(rng):
    layer = BatchNorm2D(2).eval()
    layer.forward(rng.standard_normal((3, 2, 4, 4)).astype(np.float32) + 5)
    np.testing.assert_array_equal(layer.state["running_mean"], 0)
    np.testing.assert_array_equal(layer.state["running_var"], 1)


def test_batch_norm_bad_input_and_hyperparameters():
    with pytest.raises(ShapeError, match=r"BatchNorm1D\(4.*expects input \(N, 4\), got \(2, 3\)"):
        BatchNorm1D(4).forward(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match=r"expects input \(N, 4, H, W\), got \(2, 4\)"):
        BatchNorm2D(4).forward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm1D(4).forward(np.zeros((1, 4)))
    assert BatchNorm1D(4).eval().forward(np.zeros((1, 4), np.float32)).shape == (1, 4)
    with pytest.raises(ValueError, match="num_features must be a positive integer, got 0"):
        BatchNorm1D(0)
    with pytest.raises(ValueError, match="num_features must be a positive integer, got True"):
        BatchNorm1D(True)
    with pytest.raises(ValueError, match="eps must be positive, got 0"):
        BatchNorm2D(3, eps=0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\], got 1.5"):
        BatchNorm2D(3, momentum=1.5)
    with pytest.raises(ValueError, match="dtype must be a floating type"):
        BatchNorm1D(3, dtype=np.int64)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        BatchNorm1D(3).backward(np.zeros((2, 3)))


class _Replicas:
    """K threads standing for K processes: ``hook(k)`` is replica k's ``sum_across``, which waits for every
    replica's array and returns their sum (what an MPI all-reduce does)."""

    def __init__(self, K):
        self.barrier, self.slots = threading.Barrier(K), [None] * K

    def hook(self, k):
        def sum_across(a):
            self.slots[k] = np.array(a, copy=True)
            self.barrier.wait()
            total = sum(self.slots[1:], self.slots[0].copy())
            self.barrier.wait()
            return total

        return sum_across


@pytest.mark.parametrize("cls, shape, split", [(BatchNorm1D, (8, 3), 5), (BatchNorm2D, (3, 2, 4, 4), 1)])
def test_batch_norm_replicas_with_summed_statistics_compute_the_whole_batch(cls, shape, split, rng):
    """Two parts of a batch (unequal), each in its own layer whose hook sums over both, give the rows of
    the whole batch's y and dx; their own dγ, dβ add up to the whole batch's; running statistics agree."""
    X, dY = rng.standard_normal(shape) * 3 + 1, rng.standard_normal(shape)
    gamma, beta = rng.uniform(0.5, 2.0, shape[1]), rng.standard_normal(shape[1])

    def layer():
        bn = cls(shape[1], dtype=np.float64)
        bn.params["gamma"][...], bn.params["beta"][...] = gamma, beta
        return bn

    whole = layer()
    Y, dX = whole.forward(X), whole.backward(dY)
    replicas, parts = _Replicas(2), [layer(), layer()]
    for k, bn in enumerate(parts):
        bn.sum_across = replicas.hook(k)
    rows = [slice(0, split), slice(split, None)]
    out = [None, None]

    def run(k):
        y = parts[k].forward(X[rows[k]])
        out[k] = (y.copy(), parts[k].backward(dY[rows[k]]).copy())

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    np.testing.assert_allclose(np.concatenate([o[0] for o in out]), Y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([o[1] for o in out]), dX, rtol=0, atol=1e-12)
    for name in ("gamma", "beta"):
        np.testing.assert_allclose(parts[0].grads[name] + parts[1].grads[name], whole.grads[name], atol=1e-12)
    for name in ("running_mean", "running_var"):
        for bn in parts:
            np.testing.assert_allclose(bn.state[name], whole.state[name], rtol=0, atol=1e-12)
    # without the hook each part normalises with its own statistics: a different answer
    alone = layer()
    assert np.abs(alone.forward(X[rows[0]]) - Y[rows[0]]).max() > 1e-3


def test_batch_norm_sum_across_is_the_identity_by_default():
    a = np.arange(3.0)
    assert BatchNorm1D.sum_across(a) is a and BatchNorm2D(2).sum_across(a) is a
