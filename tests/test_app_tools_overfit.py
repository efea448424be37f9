"""``handgrad train --overfit N`` (book §11.5, "fit a tiny dataset")."""

import csv

import pytest

from handgrad import cli
from handgrad.app import ConfigError, TrainConfig
from handgrad.app.tools.overfit import overfit_verdict


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
