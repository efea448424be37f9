"""Sampling from a character language model (language_model.sample, ``handgrad sample``): temperature 0 is
the argmax, the sampled characters follow the model's softmax (a chi-square test at a fixed seed), and the
bad inputs are one line each."""

import math

import numpy as np
import pytest

from handgrad.app import TrainConfig, train
from handgrad.app.checkpoint import load_model
from handgrad.app.language_model import sample, sample_text
from handgrad.app.models import build_model, char_arch, reset_states
from handgrad.ch04_numerical import softmax
from handgrad.cli import main

VOCAB = "\n abcdefgh"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm")
    text = ("abc def gah\n" * 40)[:480]
    (tmp / "t.txt").write_text(text)
    train(
        TrainConfig(
            model="gru",
            text=str(tmp / "t.txt"),
            batch_size=4,
            seq_len=16,
            hidden=(16,),
            embedding_dim=4,
            epochs=2,
            out=str(tmp / "run"),
            quiet=True,
            plots=False,
            eval_batch_size=4,
        )
    )
    return tmp / "run"


def greedy_by_rereading(model, vocab, prime, length):
    """The argmax continuation, each step re-reading the whole text from a zero state (no state carried)."""
    text = prime
    for _ in range(length):
        reset_states(model)
        ids = np.array([[vocab.index(c) for c in text]])
        text += vocab[int(np.argmax(model.forward(ids)[0, -1]))]
    reset_states(model)
    return text


def test_temperature_zero_is_the_argmax(run_dir):
    model, ckpt = load_model(run_dir)
    vocab = ckpt.metadata["vocab"]
    out = sample(run_dir, length=30, temperature=0, prime="ab", seed=1)
    assert out == greedy_by_rereading(model, vocab, "ab", 30)
    assert sample(run_dir, length=30, temperature=0, prime="ab", seed=2) == out  # no randomness at 0
    assert out.startswith("ab") and len(out) == 32


def _memoryless_model():
    """A model whose next-character distribution does not depend on the text: the tanh RNN's input and
    recurrent weights are zero, so every step has the hidden state tanh(b) and the same logits. (An LSTM's
    cell would still accumulate c_t = f ⊙ c_{t−1} + i ⊙ g over the first steps.)"""
    model = build_model(char_arch("rnn", len(VOCAB), 3, (6,)), rng=3)
    model.layers[1].params["U"][...] = 0
    model.layers[1].params["W"][...] = 0
    model.layers[-1].params["b"][...] = np.linspace(-1.5, 1.5, len(VOCAB), dtype=np.float32)
    reset_states(model.eval())
    logits = model.forward(np.zeros((1, 1), np.int64))[0, -1].astype(np.float64)
    reset_states(model)
    return model, logits


def chi_square(counts, p):
    expected = p * counts.sum()
    return float(np.sum((counts - expected) ** 2 / expected))


def chi_square_critical(df, z=3.090):
    """The 0.999 quantile of χ²(df), Wilson and Hilferty's approximation (within 1% for df ≥ 3)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_sampled_characters_follow_the_softmax(temperature):
    model, logits = _memoryless_model()
    text = sample_text(model, VOCAB, 6000, temperature, prime="a", rng=np.random.default_rng(0))[1:]
    counts = np.bincount([VOCAB.index(c) for c in text], minlength=len(VOCAB)).astype(np.float64)
    p = softmax(logits / temperature)
    df = len(VOCAB) - 1
    assert chi_square(counts, p) < chi_square_critical(df)
    # The test can fail: the same counts against the softmax at another temperature are far off.
    wrong = softmax(logits / (temperature * 1.5))
    assert chi_square(counts, wrong) > 3 * chi_square_critical(df)


def test_the_same_seed_gives_the_same_text(run_dir):
    a = sample(run_dir, length=50, seed=7)
    assert a == sample(run_dir, length=50, seed=7) and a != sample(run_dir, length=50, seed=8)
    assert a.startswith("\n")  # the default prime


def test_the_command_prints_the_sample(run_dir, capsys):
    assert main(["sample", str(run_dir), "--length", "20", "--temperature", "0", "--prime", "abc"]) == 0
    assert capsys.readouterr().out == sample(run_dir, length=20, temperature=0, prime="abc") + "\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--prime", "abz"],
            "--prime holds the character 'z' (U+007A), which is not in the model's vocabulary of "
            "10 characters",
        ),
        (
            ["--temperature", "-1"],
            "--temperature must be a number >= 0 (0: always the likeliest character), got -1.0",
        ),
        (["--length", "-5"], "--length must be a non-negative number of characters, got -5"),
        (["--prime", ""], "--prime must hold at least one character"),
    ],
)
def test_bad_sample_options_are_one_line(run_dir, capsys, argv, message):
    code = main(["sample", str(run_dir), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err == f"handgrad: error: {message}"


def test_sampling_an_image_classifier_is_one_line(tmp_path, capsys):
    train(
        TrainConfig(
            dataset="mnist-sample",
            model="rnn",
            hidden=(8,),
            limit=128,
            epochs=1,
            out=str(tmp_path / "r"),
            quiet=True,
            plots=False,
        )
    )
    code = main(["sample", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert (
        code == 1
        and "holds an image classifier (rnn 8 over 28 rows of 28, dense 10), not a language model" in err
    )
    assert len(err.splitlines()) == 1
