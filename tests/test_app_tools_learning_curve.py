"""handgrad learning-curve (``handgrad.app.tools.learning_curve``): log-spaced training-set sizes, each
size's training and validation error recomputed independently from its best checkpoint, and resuming."""

import csv

import numpy as np
import pytest

from handgrad.app.checkpoint import load_model
from handgrad.app.tools.learning_curve import curve_sizes, learning_curve
from handgrad.cli import main
from handgrad.datasets import load_splits

BASE = dict(dataset="mnist-sample", limit=2000, epochs=3, batch_size=100, hidden=(64,), plots=False)


def test_sizes_are_log_spaced_fractions():
    assert curve_sizes(50_000, 5, 0.01) == [500, 1581, 5000, 15811, 50000]
    assert curve_sizes(2000, 3, 0.1) == [200, 632, 2000]
    assert curve_sizes(10, 5, 0.01) == [1, 3, 10]  # 0.1, 0.3, 1, 3.2, 10: at least one image, each size once


def test_errors_are_those_of_each_sizes_best_model(tmp_path):
    result = learning_curve(BASE, points=3, min_fraction=0.1, out=tmp_path / "lc", log=lambda *a: None)
    assert [r["size"] for r in result.rows] == [200, 632, 2000]
    X_train, y_train = load_splits("mnist-sample").train
    X_val, y_val = load_splits("mnist-sample").val
    for r in result.rows:
        model, _ = load_model(f"{r['run_dir']}/best.npz")
        n = r["size"]
        train_wrong = np.mean(model.forward(X_train[:n].reshape(n, -1)).argmax(axis=1) != y_train[:n])
        val_wrong = np.mean(model.forward(X_val.reshape(len(X_val), -1)).argmax(axis=1) != y_val)
        assert r["train_error"] == pytest.approx(train_wrong, abs=1e-12)
        assert r["val_error"] == pytest.approx(val_wrong, abs=1e-12)
        assert r["epochs"] == 3
    val = [r["val_error"] for r in result.rows]
    assert val[0] > val[-1] + 0.05  # ten times the data: a much lower validation error
    with open(result.csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["size"]) for r in rows] == [200, 632, 2000]
    assert [float(r["val_error"]) for r in rows] == pytest.approx(val)

    stamp = lambda: [
        (tmp_path / "lc" / f"n-{n:06d}" / "result.json").stat().st_mtime_ns  # noqa: E731
        for n in (200, 632, 2000)
    ]
    stamps = stamp()
    again = learning_curve(BASE, points=3, min_fraction=0.1, out=tmp_path / "lc", log=lambda *a: None)
    assert stamp() == stamps
    assert again.rows == result.rows


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--points", "1"], "--points must be an integer of at least 2"),
        (["--min-fraction", "1.5"], "--min-fraction must be in (0, 1)"),
        (["--min-fraction", "0"], "--min-fraction must be in (0, 1)"),
    ],
)
def test_bad_options_are_one_line_before_any_training(tmp_path, capsys, argv, fragment):
    code = main(["learning-curve", "--dataset", "mnist-sample", "--out", str(tmp_path / "lc"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("handgrad: error: ") and fragment in err[0]
    assert not (tmp_path / "lc").exists()
