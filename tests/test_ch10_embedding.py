"""Embedding (ch10 embedding): the lookup, the summed gradient of repeated indices by two independent
forms, finite differences through a model, ownership and bad indices."""

import numpy as np
import pytest
from gradcheck import relative_error

from handgrad.ch04_numerical import numerical_gradient
from handgrad.ch10_sequence import LSTM, Embedding
from handgrad.ch10_sequence.embedding import add_at_rows, bincount_rows


def test_lookup_is_a_one_hot_product():
    emb = Embedding(7, 3, rng=0, dtype=np.float64)
    idx = np.array([[0, 6, 6], [2, 0, 1]])
    onehot = np.eye(7)[idx]  # (2, 3, 7)
    np.testing.assert_array_equal(emb.forward(idx), onehot @ emb.params["W"])


def test_gradient_sums_repeated_indices():
    rng = np.random.default_rng(0)
    emb = Embedding(5, 4, rng=0, dtype=np.float64)
    idx = np.array([[1, 1, 3], [1, 0, 3]])
    emb.forward(idx)
    dY = rng.standard_normal((2, 3, 4))
    assert emb.backward(dY) is None
    expected = np.eye(5)[idx].reshape(-1, 5).T @ dY.reshape(-1, 4)  # onehotᵀ dY
    np.testing.assert_allclose(emb.grads["W"], expected, rtol=0, atol=1e-14)
    assert not emb.grads["W"][[2, 4]].any()  # rows nobody looked up


@pytest.mark.parametrize("seed", [0, 1])
def test_bincount_and_add_at_agree(seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 30, (64, 9))
    dY = rng.standard_normal((64, 9, 5))
    np.testing.assert_allclose(bincount_rows(idx, dY, 30), add_at_rows(idx, dY, 30), rtol=1e-13, atol=1e-13)


def test_gradient_through_an_lstm_matches_finite_differences():
    rng = np.random.default_rng(2)
    emb, lstm = Embedding(6, 3, rng=0, dtype=np.float64), LSTM(3, 2, rng=1, dtype=np.float64)
    idx = np.array([[1, 5, 1, 1], [0, 1, 5, 2]])
    G = rng.standard_normal((2, 4, 2))
    lstm.forward(emb.forward(idx))
    emb.backward(lstm.backward(G))

    def loss(W):
        saved = emb.params["W"].copy()
        emb.params["W"][...] = W
        try:
            return float(np.sum(lstm.forward(emb.forward(idx)) * G))
        finally:
            emb.params["W"][...] = saved

    analytic = emb.grads["W"].copy()
    assert relative_error(analytic, numerical_gradient(loss, emb.params["W"].copy())) < 1e-7


def test_outputs_belong_to_the_caller():
    emb = Embedding(5, 2, rng=0)
    a = emb.forward(np.array([1, 2]))
    kept = a.copy()
    emb.forward(np.array([3, 4]))
    np.testing.assert_array_equal(a, kept)
    emb.reuse_buffers()
    np.testing.assert_array_equal(emb.forward(np.array([1, 2])), kept)
    assert np.shares_memory(emb.forward(np.array([1, 2])), emb.forward(np.array([3, 4])))


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        (np.array([0, 5]), r"Embedding\(5, 2\): indices must lie in \[0, 5\), got \[5\]"),
        (np.array([-1, 2]), r"indices must lie in \[0, 5\), got \[-1\]"),
        (np.array([0.0, 1.0]), "Embedding\\(5, 2\\) expects integer indices, got dtype float64"),
        (np.array([True]), "expects integer indices, got dtype bool"),
    ],
)
def test_bad_indices(indices, message):
    with pytest.raises(ValueError, match=message):
        Embedding(5, 2).forward(indices)


def test_bad_sizes():
    with pytest.raises(ValueError, match="num_embeddings must be a positive integer, got 0"):
        Embedding(0, 2)
