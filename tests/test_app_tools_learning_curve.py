"""handgrad learning-curve (``handgrad.app.tools.learning_curve``): log-spaced training-set sizes, each
size's training and validation error recomputed independently from its best checkpoint, and resuming."""

import csv

import numpy as np
import pytest

from handgrad.app.checkpoint import load_model
from handgrad.app.tools.learning_curve import curve_sizes, learning_curve
from handgrad.cli import main
from handgrad.datasets import load_splits, load_text

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

    def stamp():
        return [(tmp_path / "lc" / f"n-{n:06d}" / "result.json").stat().st_mtime_ns for n in (200, 632, 2000)]

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


# ----------------------------------------------------------------------------------------------------
# A character language model: prefixes of the training text, bits per character
# ----------------------------------------------------------------------------------------------------

LM_BASE = dict(
    model="gru",
    dataset="fortunes-min",
    batch_size=16,
    seq_len=50,
    hidden=(16,),
    embedding_dim=8,
    eval_batch_size=32,
    epochs=2,
    plots=False,
)


def _bpc(model, ids, streams):
    """Bits per character of one pass over each of ``streams`` rows whole, in float64 (no windows)."""
    from handgrad.app.language_model import stream_layout
    from handgrad.app.models import reset_states
    from handgrad.ch04_numerical import log_softmax

    X, Y = stream_layout(ids, streams)
    reset_states(model.eval())
    logp = log_softmax(model.forward(X).astype(np.float64))
    reset_states(model)
    return -np.take_along_axis(logp, Y[..., None], axis=-1).mean() / np.log(2)


def test_a_language_models_curve_is_bits_per_character_on_prefixes_of_the_training_text(tmp_path):
    import json

    from handgrad.app.checkpoint import load_checkpoint
    from handgrad.app.tools.learning_curve import format_table

    result = learning_curve(LM_BASE, points=3, min_fraction=0.2, out=tmp_path / "lc", log=lambda *a: None)
    assert [r["size"] for r in result.rows] == [4413, 9868, 22066]  # 0.2, 0.447, 1 of 22,066 characters
    splits = load_text(dataset="fortunes-min")
    for r in result.rows:
        model, _ = load_model(f"{r['run_dir']}/best.npz")
        assert r["train_bpc"] == pytest.approx(_bpc(model, splits.train[: r["size"]], 32), rel=1e-5)
        assert r["val_bpc"] == pytest.approx(_bpc(model, splits.val, 32), rel=1e-5)
        assert "train_error" not in r and r["epochs"] == 2
        # the run read the first `size` characters: 16 streams, windows of 50, 2 epochs
        windows = -(-((r["size"] - 1) // 16) // 50)
        assert load_checkpoint(f"{r['run_dir']}/last.npz").metadata["steps"] == 2 * windows
        assert (
            json.loads((tmp_path / "lc" / f"n-{r['size']:06d}" / "config.json").read_text())["limit"]
            == r["size"]
        )
    val = [r["val_bpc"] for r in result.rows]
    assert val[0] > val[-1] + 0.2  # five times the text (and the steps): a much lower validation bpc
    with open(result.csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:4] == ["size", "fraction", "train_bpc", "val_bpc"]
    assert [float(r["val_bpc"]) for r in rows] == pytest.approx(val)
    table = format_table(result).splitlines()
    assert table[0].split()[:4] == ["characters", "fraction", "train", "bpc"]
    assert table[-2].startswith(
        f"the last ×2.2 of text changed the validation bits per character by {val[2] - val[1]:+.4f}"
    )

    stamps = [
        (tmp_path / "lc" / f"n-{n:06d}" / "result.json").stat().st_mtime_ns for n in (4413, 9868, 22066)
    ]
    again = learning_curve(LM_BASE, points=3, min_fraction=0.2, out=tmp_path / "lc", log=lambda *a: None)
    assert again.rows == result.rows
    assert [
        (tmp_path / "lc" / f"n-{n:06d}" / "result.json").stat().st_mtime_ns for n in (4413, 9868, 22066)
    ] == stamps


def test_a_language_models_smallest_size_must_fill_one_batch(tmp_path, capsys):
    code = main(
        ["learning-curve", "--dataset", "fortunes-min", "--model", "lstm", "--out", str(tmp_path / "lc")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0] == (
        "handgrad: error: --min-fraction 0.01 gives 221 training characters at the smallest size, too "
        "few for one batch of 64 sequences of 100 characters (needs 6,401); raise --min-fraction or lower "
        "--batch-size or --seq-len"
    )
    assert not (tmp_path / "lc").exists()
