"""Chapter 5 of the book, *Machine Learning Basics*: §5.2 capacity, overfitting and underfitting, §5.3
hyperparameters and validation sets, §5.9 stochastic gradient descent on minibatches (design report §3.4).

- Reproducibility: ``set_all_seeds``.
- Data: ``train_val_test_split`` (§5.3: the validation set is carved out of the training data, the test
  set is touched once at the end) and ``batch_iterator`` (§5.9: SGD estimates the gradient on a
  minibatch drawn without replacement, a fresh order every epoch).
- Measuring performance (§5.1.2): ``accuracy``, ``confusion_matrix``, ``f1_score``.
- Capacity diagnostics (§5.2): ``generalization_gap`` and ``diagnose_fit``.
- Tracking experiments: ``CSVLogger``, one flushed row per call.
"""

import csv
import os
import pathlib
import random

import numpy as np

from handgrad import ShapeError
from handgrad._checks import check_choice, check_int, check_number

__all__ = [
    "set_all_seeds",
    "train_val_test_split",
    "batch_iterator",
    "accuracy",
    "confusion_matrix",
    "f1_score",
    "generalization_gap",
    "diagnose_fit",
    "CSVLogger",
]


def set_all_seeds(seed):
    """Seed Python's ``random`` and NumPy's legacy global RNG; return ``np.random.default_rng(seed)``.

    Everything that draws from the global generators (``random.random``, ``np.random.rand``, and
    ``batch_iterator(..., rng=None)``) repeats after this call; code that takes an explicit generator
    should be handed the one returned here (book §5.3 compares models, which needs identical runs).
    """
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global generator is what this seeds)
    return np.random.default_rng(seed)


def _check_pair(X, y):
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim == 0 or y.ndim == 0:
        raise ShapeError(f"X and y must have a leading example axis, got shapes {X.shape} and {y.shape}")
    if len(X) != len(y):
        raise ShapeError(f"X and y must hold the same number of examples, got {len(X)} and {len(y)}")
    return X, y


def train_val_test_split(X, y, ratios=(0.8, 0.1, 0.1), seed=0):
    """Shuffle the examples once and cut them into training, validation and test sets (book §5.3).

    The order is ``np.random.default_rng(seed).permutation(n)``, so a seed always gives the same split.
    The cut points are round(r_train·n) and round((r_train + r_val)·n); the test set gets the rest, so
    the three sets are disjoint and cover every example. Every set must come out non-empty.

    Returns ``((X_train, y_train), (X_val, y_val), (X_test, y_test))`` (copies, not views).
    """
    X, y = _check_pair(X, y)
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or any(not r > 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-9:
        raise ValueError(f"ratios must be three positive numbers summing to 1, got {ratios}")
    n = len(X)
    cut_train = round(ratios[0] * n)
    cut_val = round((ratios[0] + ratios[1]) * n)
    if not 0 < cut_train < cut_val < n:
        raise ValueError(f"{n} examples are too few for ratios {ratios}: a split would be empty")
    order = np.random.default_rng(seed).permutation(n)
    parts = np.split(order, [cut_train, cut_val])
    return tuple((X[idx], y[idx]) for idx in parts)


def _permutation(n, rng):
    if rng is None:  # the legacy global generator, which set_all_seeds seeds
        return np.random.permutation(n)  # noqa: NPY002 (the global generator set_all_seeds seeds)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        rng = np.random.default_rng(int(rng))
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")
    return rng.permutation(n)


def batch_iterator(X, y, batch_size, shuffle=True, drop_last=False, rng=None):
    """Yield ``(X_batch, y_batch)`` minibatches covering each example once per pass (book §5.9).

    SGD replaces the gradient of the mean loss over all m examples by the mean over a minibatch of m′:

        g = (1/m′) ∇_θ Σ_{i ∈ batch} L(x⁽ⁱ⁾, y⁽ⁱ⁾, θ),

    an unbiased estimate when the batches are drawn without replacement from a shuffled order. With
    ``shuffle`` the order is a permutation from ``rng`` — a ``np.random.Generator`` (advanced, so each
    epoch differs), an int seed (the same order every time) or None (NumPy's legacy global generator,
    reproducible after ``set_all_seeds``) — and each batch is gathered once with one fancy index per
    array, giving contiguous copies. Without shuffling the batches are slices (views) in order.
    The last batch is smaller when batch_size does not divide n, unless ``drop_last`` drops it.

    Arguments are checked when this is called, not at the first ``next``.
    """
    X, y = _check_pair(X, y)
    batch_size = check_int(batch_size, "batch_size", low=1)
    n = len(X)
    order = _permutation(n, rng) if shuffle else None
    stop = n - n % batch_size if drop_last else n

    def batches():
        for start in range(0, stop, batch_size):
            end = min(start + batch_size, n)
            if order is None:
                yield X[start:end], y[start:end]
            else:
                idx = order[start:end]
                yield X[idx], y[idx]

    return batches()


def _labels(y, what):
    y = np.asarray(y)
    if y.ndim != 1:
        raise ShapeError(f"{what} must be a vector of class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if y.size and not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
            raise ValueError(f"{what} must hold integer class indices, got dtype {y.dtype}")
        y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"{what} must hold class indices ≥ 0, got {y.min()}")
    return y


def accuracy(logits, y):
    """Top-1 accuracy: the fraction of rows whose largest logit is the true class (book §5.1.2).

        accuracy = (1/N) Σ_i [argmax_c logits_ic = y_i].

    ``y`` holds integer labels (N,) or one-hot targets (N, C) (the class is then argmax_c y_ic).
    Returns a Python float in [0, 1].

    Shapes: logits (N, C); y (N,) or (N, C).
    """
    logits, y = np.asarray(logits), np.asarray(y)
    if logits.ndim != 2 or logits.shape[0] == 0:
        raise ShapeError(f"logits must have shape (N, C) with N > 0, got {logits.shape}")
    if y.shape == logits.shape:
        y = np.argmax(y, axis=1)
    elif y.shape != logits.shape[:1]:
        raise ShapeError(f"y must have shape {logits.shape[:1]} or {logits.shape}, got {y.shape}")
    y = _labels(y, "y")
    if y.max() >= logits.shape[1]:
        raise ValueError(f"label {y.max()} is out of range for {logits.shape[1]} classes")
    return float(np.mean(np.argmax(logits, axis=1) == y))


def confusion_matrix(y_true, y_pred, n_classes):
    """C[i, j] = number of examples of true class i predicted as class j (rows true, columns predicted).

    The same layout as ``sklearn.metrics.confusion_matrix``; the diagonal holds the correct
    predictions, so accuracy = trace(C) / ΣC (book §5.1.2). Returns an int64 (n_classes, n_classes) array.
    """
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ShapeError(f"y_true and y_pred must have the same shape, got {y_true.shape} and {y_pred.shape}")
    n_classes = check_int(n_classes, "n_classes", low=1)
    largest = max(y_true.max(initial=0), y_pred.max(initial=0))
    if largest >= n_classes:
        raise ValueError(f"label {largest} is out of range for n_classes={n_classes}")
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def f1_score(y_true, y_pred, average="macro", n_classes=None):
    """F1 = harmonic mean of precision and recall, per class and averaged (book §5.1.2, §11.1).

    For class c with tp true positives, fp false positives and fn false negatives,

        precision = tp/(tp+fp),  recall = tp/(tp+fn),  F1_c = 2·P·R/(P+R) = 2tp / (2tp + fp + fn).

    ``average``: "macro" (unweighted mean of F1_c), "micro" (F1 of the pooled tp, fp, fn; equal to the
    accuracy when every class is counted), "weighted" (mean of F1_c weighted by support) or None (the
    per-class array). The classes are those in y_true or y_pred, sorted — or 0 … n_classes-1 when
    ``n_classes`` is given — as in scikit-learn. Where 2tp + fp + fn = 0 (a class neither present nor
    predicted) F1_c is 0, scikit-learn's ``zero_division=0`` convention.
    """
    check_choice(average, "average", ("macro", "micro", "weighted", None))
    y_true, y_pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if y_true.size == 0:
        raise ValueError("f1_score needs at least one example")
    classes = np.union1d(y_true, y_pred) if n_classes is None else np.arange(n_classes)
    size = int(classes[-1]) + 1 if n_classes is None else n_classes
    # Classes outside ``classes`` never occur in y_true, so dropping their rows loses no example.
    C = confusion_matrix(y_true, y_pred, size)[np.ix_(classes, classes)]
    tp = np.diag(C).astype(np.float64)
    fp = C.sum(axis=0) - tp  # predicted as c, but not c
    fn = C.sum(axis=1) - tp  # truly c, predicted otherwise
    if average == "micro":
        denom = 2 * tp.sum() + fp.sum() + fn.sum()
        return float(2 * tp.sum() / denom) if denom > 0 else 0.0
    denom = 2 * tp + fp + fn
    per_class = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    if average is None:
        return per_class
    if average == "weighted":
        support = tp + fn
        return float(per_class @ support / support.sum()) if support.sum() > 0 else 0.0
    return float(per_class.mean())


def generalization_gap(train_metric, val_metric, higher_is_better=False):
    """How much worse the model does on held-out data than on its training data (book §5.2).

    §5.2 defines the gap between training error and test (here: validation) error. Positive always means
    worse on validation:

        gap = val − train   for losses and error rates (``higher_is_better=False``, the default),
        gap = train − val   for accuracies and other scores (``higher_is_better=True``).

    Works elementwise on per-epoch curves; scalars give a Python float.
    """
    train, val = np.asarray(train_metric, dtype=np.float64), np.asarray(val_metric, dtype=np.float64)
    if train.shape != val.shape:
        raise ShapeError(
            f"train and validation metrics must have the same shape, got {train.shape} and {val.shape}"
        )
    gap = train - val if higher_is_better else val - train
    return float(gap) if gap.ndim == 0 else gap


def diagnose_fit(train_loss, val_loss, *, max_train_loss=0.5, max_gap=0.1):
    """Name the capacity regime of §5.2 from the final training and validation losses.

    The book's two failure modes, checked in this order:

    - "underfitting": the model cannot make the training loss small, train_loss > ``max_train_loss``
      (capacity too low or training too short);
    - "overfitting": the generalization gap is too large, val_loss − train_loss > ``max_gap``
      (capacity too high for the data: regularize, add data, stop earlier);
    - "good fit" otherwise.

    The defaults suit a mean cross entropy in nats (0.5 ≈ 60 % average probability on the right class);
    pass thresholds in your loss's units for anything else.
    """
    max_train_loss = check_number(max_train_loss, "max_train_loss", low=0, low_open=True)
    max_gap = check_number(max_gap, "max_gap", low=0, low_open=True)
    train_loss, val_loss = float(train_loss), float(val_loss)
    if not (np.isfinite(train_loss) and np.isfinite(val_loss)):
        raise ValueError(f"losses must be finite, got train_loss={train_loss}, val_loss={val_loss}")
    if train_loss > max_train_loss:
        return "underfitting"
    if generalization_gap(train_loss, val_loss) > max_gap:
        return "overfitting"
    return "good fit"


class CSVLogger:
    """Append one row of metrics per call to a CSV file, flushed at once (experiment tracking, §5.3).

    The first row written to a new or empty file fixes the header (the row's keys, in order). A logger
    opened on a file that already has a header appends below it without repeating it, and every row must
    have exactly the header's keys (any order) or ``log`` raises ValueError naming the difference.
    Each row is flushed to the operating system before ``log`` returns, so a crash loses nothing already
    logged and another reader sees it immediately.

        with CSVLogger("runs/metrics.csv") as log:
            log.log({"epoch": 1, "train_loss": 0.41, "val_loss": 0.44})
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fieldnames = None
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, newline="", encoding="utf-8") as f:
                self.fieldnames = next(csv.reader(f), None)
        self._file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (open until close())
        self._writer = None if self.fieldnames is None else csv.DictWriter(self._file, self.fieldnames)

    def log(self, row):
        """Append ``row`` (a dict: column name -> value) and flush it."""
        if self._file is None:
            raise ValueError(f"CSVLogger for {self.path} is closed")
        if not isinstance(row, dict) or not row:
            raise ValueError(f"row must be a non-empty dict, got {row!r}")
        keys = [str(k) for k in row]
        if self._writer is None:
            self.fieldnames = keys
            self._writer = csv.DictWriter(self._file, self.fieldnames)
            self._writer.writeheader()
        elif set(keys) != set(self.fieldnames) or len(keys) != len(self.fieldnames):
            missing = [k for k in self.fieldnames if k not in keys]
            extra = [k for k in keys if k not in self.fieldnames]
            raise ValueError(
                f"row keys do not match the header of {self.path} {self.fieldnames}: "
                f"missing {missing}, unexpected {extra}"
            )
        self._writer.writerow({str(k): v for k, v in row.items()})
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self):
        """Close the file; closing twice is harmless."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
