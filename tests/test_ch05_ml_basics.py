"""Chapter 5: seeding, splits, minibatches, metrics (against scikit-learn), capacity diagnostics, CSV logs."""

import csv
import random
import re

import numpy as np
import pytest
from sklearn import metrics as skm

from handgrad import ShapeError
from handgrad.ch05_ml_basics import (
    CSVLogger,
    accuracy,
    batch_iterator,
    confusion_matrix,
    diagnose_fit,
    f1_score,
    generalization_gap,
    set_all_seeds,
    train_val_test_split,
)


def toy(n=100, d=3):
    X = np.arange(n * d, dtype=np.float32).reshape(n, d)
    y = np.arange(n)  # y_i = i identifies the row, so coverage is easy to check
    return X, y


# --- seeding ------------------------------------------------------------------------------------------


def test_set_all_seeds_repeats_every_generator():
    g1 = set_all_seeds(123)
    a = (random.random(), np.random.rand(), g1.random())
    g2 = set_all_seeds(123)
    b = (random.random(), np.random.rand(), g2.random())
    assert a == b
    assert isinstance(g1, np.random.Generator)
    assert a[2] == np.random.default_rng(123).random()
    set_all_seeds(124)
    assert random.random() != a[0]


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3", True])
def test_set_all_seeds_rejects_bad_seeds(seed):
    message = f"seed must be an integer in [0, 4294967295], got {seed!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        set_all_seeds(seed)


# --- train / validation / test split ------------------------------------------------------------------


def test_split_sizes_disjoint_and_covering():
    X, y = toy(100)
    (Xtr, ytr), (Xva, yva), (Xte, yte) = train_val_test_split(X, y)
    assert (len(ytr), len(yva), len(yte)) == (80, 10, 10)
    together = np.concatenate([ytr, yva, yte])
    np.testing.assert_array_equal(np.sort(together), np.arange(100))  # disjoint and covering
    for Xs, ys in [(Xtr, ytr), (Xva, yva), (Xte, yte)]:
        np.testing.assert_array_equal(Xs, X[ys])  # rows stay paired with their labels
    assert not np.array_equal(ytr, np.arange(80))  # shuffled


def test_split_uneven_ratios_and_rounding():
    X, y = toy(37)
    parts = train_val_test_split(X, y, ratios=(0.5, 0.3, 0.2), seed=5)
    assert [len(p[1]) for p in parts] == [18, 12, 7]  # cuts at round(18.5)=18 and round(29.6)=30
    assert sum(len(p[1]) for p in parts) == 37


def test_split_deterministic_for_a_seed():
    X, y = toy(50)
    a = train_val_test_split(X, y, seed=7)
    b = train_val_test_split(X, y, seed=7)
    c = train_val_test_split(X, y, seed=8)
    for (_, ya), (_, yb) in zip(a, b):
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][1], c[0][1])
    order = np.random.default_rng(7).permutation(50)
    np.testing.assert_array_equal(a[0][1], order[:40])


@pytest.mark.parametrize(
    "ratios, match",
    [
        ((0.8, 0.2), "three"),
        ((0.8, 0.3, 0.1), "summing to 1"),
        ((1.0, 0.0, 0.0), "positive"),
        ((1.2, -0.1, -0.1), "positive"),
    ],
)
def test_split_rejects_bad_ratios(ratios, match):
    X, y = toy(20)
    with pytest.raises(ValueError, match=match):
        train_val_test_split(X, y, ratios=ratios)


def test_split_rejects_mismatched_lengths_and_too_few_examples():
    X, y = toy(20)
    with pytest.raises(ShapeError, match="20 and 19"):
        train_val_test_split(X, y[:-1])
    with pytest.raises(ValueError, match="too few"):
        train_val_test_split(X[:4], y[:4])


# --- minibatches --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("n, batch_size", [(100, 10), (103, 10), (5, 8)])
def test_batches_cover_each_example_once(n, batch_size, shuffle):
    X, y = toy(n)
    batches = list(batch_iterator(X, y, batch_size, shuffle=shuffle, rng=0))
    assert len(batches) == -(-n // batch_size)
    assert [len(b[1]) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    assert len(batches[-1][1]) == n - batch_size * (len(batches) - 1)
    seen = np.concatenate([yb for _, yb in batches])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))
    for Xb, yb in batches:
        np.testing.assert_array_equal(Xb, X[yb])
        assert Xb.flags.c_contiguous
    assert np.array_equal(seen, np.arange(n)) == (not shuffle)


def test_drop_last():
    X, y = toy(103)
    batches = list(batch_iterator(X, y, 10, drop_last=True, rng=1))
    assert len(batches) == 10
    assert all(len(yb) == 10 for _, yb in batches)
    assert len(np.unique(np.concatenate([yb for _, yb in batches]))) == 100
    assert len(list(batch_iterator(X[:100], y[:100], 10, drop_last=True, rng=1))) == 10
    assert list(batch_iterator(X[:5], y[:5], 8, drop_last=True)) == []


def test_batch_order_deterministic_for_a_seed():
    X, y = toy(30)

    def order(rng):
        return np.concatenate([yb for _, yb in batch_iterator(X, y, 4, rng=rng)])

    np.testing.assert_array_equal(order(3), order(3))
    np.testing.assert_array_equal(order(np.random.default_rng(3)), order(3))
    np.testing.assert_array_equal(order(3), np.random.default_rng(3).permutation(30))
    g = np.random.default_rng(3)
    assert not np.array_equal(order(g), order(g))  # a shared Generator gives a new order each epoch
    set_all_seeds(9)
    first = order(None)
    set_all_seeds(9)
    np.testing.assert_array_equal(order(None), first)


def test_batch_iterator_validates_when_called():
    X, y = toy(10)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {bad!r}"):
            batch_iterator(X, y, bad)
    with pytest.raises(ShapeError, match="10 and 9"):
        batch_iterator(X, y[:9], 2)
    with pytest.raises(TypeError, match="rng"):
        batch_iterator(X, y, 2, rng="seed")


# --- metrics ------------------------------------------------------------------------------------------


def test_accuracy_with_labels_and_one_hot():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 0.0, 1.0]])
    y = np.array([0, 1, 1, 2])
    assert accuracy(logits, y) == 0.5
    assert accuracy(logits, np.eye(3)[y]) == 0.5
    assert accuracy(logits, np.array([0, 1, 2, 0])) == 1.0
    assert isinstance(accuracy(logits, y), float)


def test_accuracy_matches_sklearn(rng):
    logits = rng.normal(size=(200, 7))
    y = rng.integers(0, 7, 200)
    assert accuracy(logits, y) == pytest.approx(skm.accuracy_score(y, logits.argmax(1)), abs=1e-15)


def test_accuracy_errors():
    logits = np.zeros((4, 3))
    with pytest.raises(ShapeError, match=r"\(4,\) or \(4, 3\), got \(5,\)"):
        accuracy(logits, np.zeros(5, dtype=int))
    with pytest.raises(ShapeError, match="logits"):
        accuracy(np.zeros(4), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="out of range"):
        accuracy(logits, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="integer"):
        accuracy(logits, np.array([0.5, 1, 2, 0]))


def random_labels(rng, n=300, k=6, never_predicted=4):
    y_true = rng.integers(0, k, n)
    y_pred = np.where(rng.random(n) < 0.5, y_true, rng.integers(0, k, n))
    y_pred[y_pred == never_predicted] = 0
    return y_true, y_pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_matches_sklearn(seed):
    y_true, y_pred = random_labels(np.random.default_rng(seed))
    C = confusion_matrix(y_true, y_pred, 7)  # class 6 never occurs
    np.testing.assert_array_equal(C, skm.confusion_matrix(y_true, y_pred, labels=range(7)))
    assert C.dtype == np.int64
    assert C[:, 4].sum() == 0 and C[6].sum() == 0
    assert np.trace(C) / C.sum() == pytest.approx(np.mean(y_true == y_pred))


def test_confusion_matrix_small_by_hand():
    C = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    np.testing.assert_array_equal(C, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ShapeError, match="same shape"):
        confusion_matrix([0, 1], [0, 1, 1], 3)
    with pytest.raises(ValueError, match="≥ 0"):
        confusion_matrix([0, -1], [0, 1], 3)
    with pytest.raises(ValueError, match="n_classes must be a positive integer, got 0"):
        confusion_matrix([0, 1], [0, 1], 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("average", ["macro", "micro", "weighted", None])
def test_f1_matches_sklearn(seed, average):
    y_true, y_pred = random_labels(np.random.default_rng(seed))
    ours = f1_score(y_true, y_pred, average=average)
    theirs = skm.f1_score(y_true, y_pred, average=average, zero_division=0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    ours_k = f1_score(y_true, y_pred, average=average, n_classes=8)
    theirs_k = skm.f1_score(y_true, y_pred, average=average, labels=range(8), zero_division=0)
    np.testing.assert_allclose(ours_k, theirs_k, rtol=1e-12, atol=1e-15)


def test_f1_never_predicted_class_and_absent_class():
    y_true, y_pred = random_labels(np.random.default_rng(0))
    per_class = f1_score(y_true, y_pred, average=None, n_classes=7)
    assert per_class[4] == 0.0  # present but never predicted: recall 0
    assert per_class[6] == 0.0  # neither present nor predicted: zero_division=0
    assert f1_score(y_true, y_pred, average="micro") == pytest.approx(np.mean(y_true == y_pred))
    assert f1_score([0, 1, 1], [0, 1, 0], average=None).tolist() == pytest.approx([2 / 3, 2 / 3])


def test_f1_errors():
    message = "average must be one of macro, micro, weighted, None; got 'samples'"
    with pytest.raises(ValueError, match=message):
        f1_score([0, 1], [0, 1], average="samples")
    with pytest.raises(ValueError, match="at least one"):
        f1_score([], [])


# --- capacity diagnostics -------------------------------------------------------------------------------


def test_generalization_gap_sign_convention():
    assert generalization_gap(0.2, 0.5) == pytest.approx(0.3)  # losses: val - train
    assert generalization_gap(0.99, 0.90, higher_is_better=True) == pytest.approx(0.09)  # accuracies
    assert generalization_gap(0.5, 0.4) == pytest.approx(-0.1)
    np.testing.assert_allclose(generalization_gap([1.0, 0.5, 0.2], [1.1, 0.7, 0.9]), [0.1, 0.2, 0.7])
    with pytest.raises(ShapeError):
        generalization_gap([1.0, 2.0], [1.0])


@pytest.mark.parametrize(
    "train, val, expected",
    [
        (0.51, 0.52, "underfitting"),  # train just above max_train_loss=0.5
        (0.49, 0.50, "good fit"),
        (2.0, 4.0, "underfitting"),  # underfitting is checked first
        (0.10, 0.21, "overfitting"),  # gap 0.11 > 0.1
        (0.10, 0.19, "good fit"),  # gap 0.09
        (0.30, 0.25, "good fit"),  # negative gap
    ],
)
def test_diagnose_fit_default_thresholds(train, val, expected):
    assert diagnose_fit(train, val) == expected


def test_diagnose_fit_custom_thresholds_and_errors():
    assert diagnose_fit(1.0, 1.05, max_train_loss=2.0) == "good fit"
    assert diagnose_fit(1.0, 1.05, max_train_loss=2.0, max_gap=0.01) == "overfitting"
    with pytest.raises(ValueError, match="finite"):
        diagnose_fit(float("nan"), 0.1)
    with pytest.raises(ValueError, match="max_gap must be positive, got 0.0"):
        diagnose_fit(0.1, 0.1, max_gap=0.0)
    with pytest.raises(ValueError, match="max_train_loss must be a positive finite number, got nan"):
        diagnose_fit(0.1, 0.1, max_train_loss=float("nan"))


# --- CSV logging --------------------------------------------------------------------------------------


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_logger_flushes_each_row(tmp_path):
    path = tmp_path / "runs" / "log.csv"
    logger = CSVLogger(path)
    logger.log({"epoch": 1, "loss": 0.5})
    assert read_rows(path) == [{"epoch": "1", "loss": "0.5"}]  # readable before close
    logger.log({"loss": 0.25, "epoch": 2})  # key order does not matter
    assert read_rows(path)[-1] == {"epoch": "2", "loss": "0.25"}
    logger.close()
    logger.close()
    with pytest.raises(ValueError, match="closed"):
        logger.log({"epoch": 3, "loss": 0.1})


def test_csv_logger_header_once_and_appends(tmp_path):
    path = tmp_path / "log.csv"
    with CSVLogger(path) as log:
        log.log({"epoch": 1, "acc": 0.5})
    with CSVLogger(path) as log:
        log.log({"epoch": 2, "acc": 0.75})
    lines = path.read_text().splitlines()
    assert lines == ["epoch,acc", "1,0.5", "2,0.75"]
    assert [float(r["acc"]) for r in read_rows(path)] == [0.5, 0.75]


def test_csv_logger_rejects_mismatched_keys(tmp_path):
    path = tmp_path / "log.csv"
    with CSVLogger(path) as log:
        log.log({"epoch": 1, "loss": 0.5})
        with pytest.raises(ValueError, match=r"missing \['loss'\], unexpected \['acc'\]"):
            log.log({"epoch": 2, "acc": 0.5})
    with CSVLogger(path) as log:
        with pytest.raises(ValueError, match="missing"):
            log.log({"epoch": 2})
        with pytest.raises(ValueError, match="non-empty dict"):
            log.log({})
    assert len(read_rows(path)) == 1


def test_csv_logger_on_an_empty_existing_file_writes_the_header(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("")
    with CSVLogger(path) as log:
        log.log({"a": 1})
    assert path.read_text().splitlines() == ["a", "1"]
