"""``handgrad train --overfit N`` (book §11.5, "fit a tiny dataset"): N images of an image classifier, N
characters of a character language model."""

import csv
import math

import numpy as np
import pytest

from handgrad import cli
from handgrad.app import ConfigError, TrainConfig
from handgrad.app.checkpoint import load_checkpoint, load_model
from handgrad.app.language_model import evaluate_stream
from handgrad.app.tools.overfit import OVERFIT_BPC, overfit_verdict
from handgrad.datasets.text import split_text


def test_overfit_64_reaches_100_percent_training_accuracy_on_the_mlp(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--dataset",
                "mnist-sample",
                "--overfit",
                "64",
                "--out",
                str(out),
                "--no-plots",
                "--quiet",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("overfit 64: reached 100% training accuracy on the 64 examples at epoch ")
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    accuracies = [float(r["overfit_accuracy"]) for r in rows]
    assert len(rows) == 20 and max(accuracies) == 1.0 and accuracies[0] < 0.9
    first = next(i for i, a in enumerate(accuracies, 1) if a == 1.0)
    assert f"at epoch {first} of 20" in lines[-1]


def test_a_model_that_cannot_fit_says_so_and_exits_1(tmp_path, capsys):
    argv = [
        "train",
        "--dataset",
        "mnist-sample",
        "--overfit",
        "64",
        "--lr",
        "1e-5",
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--out",
        str(tmp_path / "run"),
        "--no-plots",
        "--quiet",
    ]
    assert cli.main(argv) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("overfit 64: did NOT reach 100% training accuracy on the 64 examples in 2 epochs")


def test_overfit_switches_augmentation_and_dropout_off_unless_given():
    c = TrainConfig(model="cnn", overfit=8)
    assert (c.augment, c.dropout, c.batch_norm) == (False, 0.0, True)
    c = TrainConfig(model="cnn", overfit=8, dropout=0.1, augment=True)
    assert (c.augment, c.dropout) == (True, 0.1)
    assert TrainConfig(model="cnn").augment is True  # without overfit: the recipe


@pytest.mark.parametrize(
    "kw, message", [(dict(overfit=0), "overfit"), (dict(overfit=8, limit=8), "not both")]
)
def test_bad_overfit_settings_are_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(epochs=1, **kw).validate()


def test_the_verdict_names_the_first_epoch_at_100_percent_or_the_best():
    history = [
        {"epoch": 1, "overfit_accuracy": 0.5},
        {"epoch": 2, "overfit_accuracy": 1.0},
        {"epoch": 3, "overfit_accuracy": 1.0},
    ]
    reached, line = overfit_verdict(history, 4)
    assert reached and "at epoch 2 of 3" in line
    reached, line = overfit_verdict(history[:1], 4)
    assert not reached and "best 50.00% at epoch 1" in line


# ----------------------------------------------------------------------------------------------------
# A character language model: N characters
# ----------------------------------------------------------------------------------------------------

WORDS = ["the ", "cat ", "sat ", "on ", "a ", "mat, ", "and ", "dog ", "ran. "]


def _text(tmp_path, n=400):
    rng = np.random.default_rng(0)
    path = tmp_path / "t.txt"
    path.write_text("".join(rng.choice(WORDS) for _ in range(n // 2))[:n], encoding="utf-8")
    return path


def _lm_argv(tmp_path, *extra):
    return [
        "train",
        "--text",
        str(_text(tmp_path)),
        "--batch-size",
        "4",
        "--seq-len",
        "25",
        "--hidden",
        "64",
        "--embedding-dim",
        "16",
        "--out",
        str(tmp_path / "run"),
        "--no-plots",
        "--quiet",
        *extra,
    ]


def test_overfit_200_characters_fits_the_language_model_to_near_zero_loss(tmp_path, capsys):
    """The first 200 training characters as 4 streams of 49 predictions, 2 windows of 25 per epoch."""
    argv = _lm_argv(tmp_path, "--overfit", "200", "--lr", "0.02", "--epochs", "60")
    assert cli.main(argv) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    bpc = [float(r["overfit_bpc"]) for r in rows]
    assert len(rows) == 60 and bpc[0] > 2.5 and bpc[-1] < OVERFIT_BPC / 2  # from ~3.4 bits to near 0
    first = next(i for i, r in enumerate(rows, 1) if float(r["overfit_bpc"]) < OVERFIT_BPC)
    assert last.startswith(f"overfit 200: fitted the 200 training characters at epoch {first} of 60 (")
    # The column is the last parameters' loss on those characters, read as training reads them.
    model, _ = load_model(tmp_path / "run" / "last.npz")
    ids = split_text(_text(tmp_path).read_text()).train[:200]
    loss, acc, n = evaluate_stream(model, ids, streams=4, seq_len=25)
    assert n == 196 and loss / math.log(2) == pytest.approx(bpc[-1], rel=1e-9)
    assert acc == pytest.approx(float(rows[-1]["overfit_accuracy"])) and acc > 0.97
    assert float(rows[0]["train_bpc"]) > 2.5  # trained on those 200 characters only: 2 steps an epoch
    assert load_checkpoint(tmp_path / "run" / "last.npz").metadata["steps"] == 120


def test_a_language_model_that_cannot_fit_its_characters_says_so_and_exits_1(tmp_path, capsys):
    assert cli.main(_lm_argv(tmp_path, "--overfit", "200", "--lr", "1e-5", "--epochs", "2")) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(
        "overfit 200: did NOT fit the 200 training characters in 2 epochs (100% next-character accuracy "
        "or under 0.1 bits per character; best "
    )


def test_too_few_characters_for_one_batch_is_one_line(tmp_path, capsys):
    assert cli.main(_lm_argv(tmp_path, "--overfit", "50")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        "the first 50 characters of its training part (--overfit 50) are too short for one batch of 4 "
        "sequences of 25 characters (needs 101); use a longer text or a smaller --batch-size or --seq-len"
    )
    assert not (tmp_path / "run").exists()


def test_the_language_model_verdict_takes_100_percent_or_the_bpc_threshold():
    rows = [
        {"epoch": 1, "overfit_accuracy": 0.6, "overfit_bpc": 1.5},
        {"epoch": 2, "overfit_accuracy": 0.99, "overfit_bpc": 0.099},
    ]
    reached, line = overfit_verdict(rows, 200)
    assert reached and "at epoch 2 of 2 (0.0990 bits per character" in line
    reached, line = overfit_verdict([rows[0], {"epoch": 2, "overfit_accuracy": 1.0, "overfit_bpc": 0.2}], 9)
    assert reached and "at epoch 2 of 2" in line
    reached, line = overfit_verdict(rows[:1], 200)
    assert not reached and "best 1.5000 bpc, 60.00% at epoch 1" in line
