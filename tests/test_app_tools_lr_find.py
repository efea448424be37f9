"""handgrad lr-find (``handgrad.app.tools.lr_find``): the learning-rate range test on the MNIST sample and
on a character language model (fortunes-min).

The smoothed curve is checked against the closed form of the debiased moving average, the stop rule against
its definition, the suggestion against a curve whose steepest point is known, a language model's losses
against its windows read in order, and the command's output, files and errors as a user sees them."""

import csv
import json
import math

import numpy as np
import pytest

from handgrad.app import TrainConfig
from handgrad.app.config import OPTIMIZERS
from handgrad.app.tools.lr_find import debiased_ema, lr_find, lr_ramp, steepest_descent
from handgrad.cli import main

SMALL = dict(dataset="mnist-sample", hidden=(32,), limit=768, batch_size=64)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *fragments):
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("handgrad: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """The range test of the reference MLP (momentum SGD) on the whole bundled sample, to 10."""
    out = tmp_path_factory.mktemp("lrf")
    return lr_find(TrainConfig(dataset="mnist-sample"), out=out, log=lambda *a: None)


def test_ramp_and_smoothing_follow_their_formulas():
    lrs = lr_ramp(1e-6, 10.0, 100)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(10.0)
    assert np.allclose(np.diff(np.log(lrs)), math.log(1e7) / 99)  # a constant ratio between steps
    losses = np.random.default_rng(0).random(30) + 1.0
    beta = 0.98
    for i in (0, 1, 7, 29):  # m_i = (1 − β) Σ_j β^(i−j) L_j, debiased by 1 − β^(i+1)
        closed = (1 - beta) * np.sum(beta ** (i - np.arange(i + 1)) * losses[: i + 1]) / (1 - beta ** (i + 1))
        assert debiased_ema(losses, beta)[i] == pytest.approx(closed, rel=1e-12)
    assert debiased_ema([2.5] * 5, beta) == pytest.approx([2.5] * 5)  # debiased: no pull towards 0


def test_steepest_descent_is_found_before_the_minimum():
    lrs = np.logspace(-6, 1, 100)
    x = np.log10(lrs)
    curve = 2.0 - np.tanh(2 * (x + 2))  # falls fastest at lr 1e-2, flat at both ends
    curve = curve + np.where(x > 0, 10 * x**2, 0.0)  # then rises steeply: the minimum is near lr 1
    steepest = steepest_descent(lrs, curve)
    assert abs(math.log10(steepest) + 2) < 0.08  # one step of the ramp is 0.07 decades
    rising = np.concatenate([np.linspace(3, 2.9, 10), np.linspace(2.9, 0, 3)])  # min at the last point
    assert steepest_descent(np.logspace(-3, 0, 13), rising) is not None
    assert steepest_descent(lrs[:4], np.array([1.0, 0.9, 2.0, 3.0])) is None  # too few steps before the min


def test_stops_on_divergence_with_the_smoothed_loss_past_four_times_its_minimum(sample_run):
    r = sample_run
    assert r.diverged and 20 < r.steps < 100
    s = np.array(r.smoothed)
    assert s[-1] > 4 * s.min()
    assert all(s[i] <= 4 * s[: i + 1].min() for i in range(len(s) - 1))  # it stopped at the first one
    assert np.allclose(s, debiased_ema(r.losses, 0.98))
    assert r.min_loss_lr == pytest.approx(r.lrs[int(np.argmin(s))])
    # The reference learning rate is 0.2: the suggestion lies within a decade of it.
    assert 0.02 <= r.suggestion <= 2.0 and 0.02 <= r.min_loss_lr / 10 <= 2.0
    with open(r.csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == r.steps and list(rows[0]) == ["step", "lr", "loss", "smoothed_loss"]
    assert float(rows[-1]["smoothed_loss"]) == pytest.approx(s[-1], rel=1e-5)


def test_same_seed_same_curve_and_suggestion_other_seed_other_curve(tmp_path):
    a = lr_find(TrainConfig(**SMALL, seed=3), out=tmp_path / "a", steps=40, plot=False)
    b = lr_find(TrainConfig(**SMALL, seed=3), out=tmp_path / "b", steps=40, plot=False)
    c = lr_find(TrainConfig(**SMALL, seed=4), out=tmp_path / "c", steps=40, plot=False)
    assert a.losses == b.losses and a.suggestion == b.suggestion and a.min_loss_lr == b.min_loss_lr
    assert a.losses != c.losses


def test_leaves_nothing_behind_but_its_files_and_prints_json(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        capsys,
        "lr-find",
        "--dataset",
        "mnist-sample",
        "--limit",
        "512",
        "--hidden",
        "32",
        "--steps",
        "30",
        "--max-lr",
        "100",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert list(data) == ["suggestion", "min_loss_lr", "steps", "diverged"]
    assert isinstance(data["steps"], int) and 2 <= data["steps"] <= 30 and isinstance(data["diverged"], bool)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["lr-find/lr_find.csv", "lr-find/lr_find.png"]  # no run folder, no checkpoint
    with open(tmp_path / "lr-find" / "lr_find.csv") as f:
        assert sum(1 for _ in f) == data["steps"] + 1


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer(tmp_path, optimizer):
    r = lr_find(TrainConfig(**SMALL, optimizer=optimizer), out=tmp_path, steps=25, max_lr=1.0, plot=False)
    assert r.steps >= 2 and all(math.isfinite(v) for v in r.losses)
    assert 1e-6 <= r.min_loss_lr <= 1.0


def test_the_cnn(tmp_path):
    config = TrainConfig(
        model="cnn", dataset="mnist-sample", channels=(4,), hidden=(16,), limit=256, batch_size=32
    )
    r = lr_find(config, out=tmp_path, steps=12, min_lr=1e-4, max_lr=1.0, plot=False)
    assert r.steps >= 2 and r.lrs[0] == pytest.approx(1e-4) and "cnn" in r.description


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--min-lr", "1", "--max-lr", "0.1"], "--min-lr (1) must be below --max-lr (0.1)"),
        (["--min-lr", "0.5", "--max-lr", "0.5"], "must be below --max-lr"),
        (["--min-lr", "0"], "--min-lr must be a positive learning rate"),
        (["--steps", "1"], "--steps must be an integer of at least 2"),
    ],
)
def test_bad_range_is_one_line_before_any_training(tmp_path, capsys, monkeypatch, argv, fragment):
    import handgrad.app.training as training

    def no_training(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(training, "prepare", no_training)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "lr-find", "--dataset", "mnist-sample", *argv)
    assert_user_error(code, err, fragment)
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------------
# A character language model: windows of the training text, in order
# ----------------------------------------------------------------------------------------------------

LM = dict(model="lstm", dataset="fortunes-min", hidden=(16,), embedding_dim=8, batch_size=16, seq_len=50)


def test_a_language_model_steps_through_the_windows_in_order_with_the_state_carried(tmp_path):
    """Rates too small to move a float32 parameter: each loss is the initial model's on its window, the
    state carried from the window before and reset when the text starts over."""
    from handgrad.app.language_model import load_corpus, stream_layout
    from handgrad.app.models import build_model, char_arch, reset_states
    from handgrad.ch05_ml_basics import set_all_seeds
    from handgrad.ch06_feedforward import cross_entropy_from_logits

    r = lr_find(TrainConfig(**LM), min_lr=1e-12, max_lr=2e-12, steps=32, out=tmp_path, plot=False)
    splits = load_corpus(TrainConfig(**LM))
    X, Y = stream_layout(splits.train, 16)
    assert X.shape == (16, 1379)  # (22,066 − 1) // 16 characters a stream: 28 windows of 50
    model = build_model(char_arch("lstm", len(splits.vocab), 8, (16,)), set_all_seeds(0))
    expected = []
    for start in range(0, X.shape[1], 50):
        logits = model.forward(X[:, start : start + 50])
        expected.append(
            cross_entropy_from_logits(logits.reshape(-1, logits.shape[-1]), Y[:, start : start + 50].ravel())
        )
    reset_states(model)
    assert len(expected) == 28 and r.steps == 32 and not r.diverged
    assert r.losses == pytest.approx(expected + expected[:4], rel=1e-5)  # the text starts over at step 29
    assert r.losses[0] == pytest.approx(math.log(len(splits.vocab)), rel=0.01)  # nats: ~uniform at first
    assert r.per_character and "16 streams × 50 characters, windows in order" in r.description


def test_a_language_models_range_test_is_deterministic_and_stops_on_divergence(tmp_path):
    kw = dict(min_lr=1e-2, max_lr=3000.0, steps=30, plot=False)
    a = lr_find(TrainConfig(**LM, seed=1), out=tmp_path / "a", **kw)
    b = lr_find(TrainConfig(**LM, seed=1), out=tmp_path / "b", **kw)
    c = lr_find(TrainConfig(**LM, seed=2), out=tmp_path / "c", **kw)
    assert a.losses == b.losses and a.suggestion == b.suggestion and a.min_loss_lr == b.min_loss_lr
    assert a.losses != c.losses
    s = np.array(a.smoothed)
    assert a.diverged and a.steps < 30 and s[-1] > 4 * s.min()
    assert all(s[i] <= 4 * s[: i + 1].min() for i in range(len(s) - 1))  # it stopped at the first one
    assert 1e-2 < a.suggestion < a.min_loss_lr < 3000


def test_the_command_takes_a_text_file_as_train_does(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("to be or not to be, that is the question. " * 80, encoding="utf-8")
    argv = ["lr-find", "--text", "t.txt", "--hidden", "8", "--batch-size", "8", "--seq-len", "20"]
    code, out, err = run(capsys, *argv, "--steps", "12")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "lr-find: char-lstm embedding 15x64, lstm 8, next-character softmax on t.txt, adam, "
        "8 streams × 20 characters, windows in order"
    )
    assert " nats per character at lr " in lines[2]
    with open(tmp_path / "lr-find" / "lr_find.csv") as f:
        assert sum(1 for _ in f) == 12 + 1
    code, out, err = run(capsys, *argv, "--steps", "12", "--json")
    assert code == 0 and list(json.loads(out)) == ["suggestion", "min_loss_lr", "steps", "diverged"]
