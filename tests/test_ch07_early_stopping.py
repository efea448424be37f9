"""Chapter 7, early_stopping.py: early stopping (§7.8) against Algorithm 7.1."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handgrad import ShapeError
from handgrad.ch07_regularization import EarlyStopping


def test_stops_after_patience_bad_epochs_and_restores_the_best_parameters():
    W, b = np.zeros((2, 2)), np.zeros(2)
    params = {"W": W, "b": b}
    stopper = EarlyStopping(patience=3, mode="max")
    decisions = []
    for epoch, acc in enumerate([0.50, 0.60, 0.55, 0.60, 0.59, 0.70], start=1):
        W[...] = epoch  # the parameters after this epoch
        b[...] = -epoch
        decisions.append(stopper.step(acc, params))
        if decisions[-1]:
            break
    assert decisions == [False, False, False, False, True]  # 0.60 again is no improvement
    assert stopper.best_epoch == 2 and stopper.best_metric == 0.60 and stopper.stopped
    stopper.restore(params)
    assert params["W"] is W and params["b"] is b  # in place
    np.testing.assert_array_equal(W, 2)
    np.testing.assert_array_equal(b, -2)


def test_min_mode_with_min_delta_and_explicit_epochs():
    stopper = EarlyStopping(patience=2, mode="min", min_delta=0.01)
    params = [np.zeros(3)]
    assert not stopper.step(1.00, params, epoch=10)
    params[0][...] = 1
    assert not stopper.step(0.995, params, epoch=11)  # better, but not by more than min_delta
    params[0][...] = 2
    assert not stopper.step(0.98, params, epoch=12)  # a real improvement resets the count
    params[0][...] = 3
    assert not stopper.step(0.975, params, epoch=13)
    assert stopper.step(float("nan"), params, epoch=14)  # NaN never improves
    stopper.restore(params)
    np.testing.assert_array_equal(params[0], 2)
    assert stopper.best_epoch == 12 and stopper.best_metric == 0.98


def test_kept_parameters_are_copies():
    W = np.ones(3)
    stopper = EarlyStopping(patience=1)
    stopper.step(0.9, {"W": W})
    W[...] = 7
    stopper.step(0.5, {"W": W})
    stopper.restore({"W": W})
    np.testing.assert_array_equal(W, 1)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30), st.integers(1, 5))
def test_stop_time_and_best_follow_algorithm_7_1(metrics, patience):
    stopper = EarlyStopping(patience=patience)
    stop_at = None
    for i, m in enumerate(metrics, start=1):
        if stopper.step(m, [np.array([m])]):
            stop_at = i
            break
    seen = metrics[: stop_at or len(metrics)]
    assert stopper.best_metric == max(seen)
    assert stopper.best_epoch == seen.index(max(seen)) + 1  # the first time the best was reached
    if stop_at is not None:
        assert stop_at - stopper.best_epoch == patience
    else:
        assert len(metrics) - stopper.best_epoch < patience
    restored = [np.zeros(1)]
    stopper.restore(restored)
    assert restored[0][0] == max(seen)


def test_state_dict_round_trip_through_savez(tmp_path):
    stopper = EarlyStopping(patience=3, mode="min", min_delta=0.001)
    params = {"W": np.arange(4.0).reshape(2, 2)}
    stopper.step(1.0, params)
    params["W"] += 1
    stopper.step(0.5, params)
    params["W"] += 1
    stopper.step(0.7, params)
    np.savez(tmp_path / "es.npz", **stopper.state_dict())
    with np.load(tmp_path / "es.npz") as saved:
        resumed = EarlyStopping(patience=1)
        resumed.load_state_dict(dict(saved))
    assert repr(resumed) == repr(stopper)
    assert (resumed.best_metric, resumed.best_epoch, resumed.bad_epochs) == (0.5, 2, 1)
    assert not resumed.step(0.8, params) and resumed.step(0.9, params)
    resumed.restore(params)
    np.testing.assert_array_equal(params["W"], np.arange(4.0).reshape(2, 2) + 1)


def test_early_stopping_validation():
    for kwargs, message in [
        (dict(patience=0), "patience must be a positive integer, got 0"),
        (dict(patience=2.5), "patience must be a positive integer, got 2.5"),
        (dict(patience=2, mode="best"), "mode must be one of max, min; got 'best'"),
        (dict(patience=2, min_delta=-0.1), "min_delta must be non-negative, got -0.1"),
        (dict(patience=2, min_delta=float("inf")), "min_delta must be a non-negative finite number, got inf"),
    ]:
        with pytest.raises(ValueError, match=message):
            EarlyStopping(**kwargs)
    stopper = EarlyStopping(patience=2)
    with pytest.raises(RuntimeError, match="nothing to restore"):
        stopper.restore([np.zeros(1)])
    with pytest.raises(TypeError, match="must be a NumPy array"):
        stopper.step(0.5, [[1.0, 2.0]])
    stopper.step(0.5, {"W": np.zeros(2)})
    with pytest.raises(ValueError, match="params have names"):
        stopper.restore({"V": np.zeros(2)})
    with pytest.raises(ShapeError, match="has shape"):
        stopper.restore({"W": np.zeros(3)})
