"""The character language model (app/language_model.py, app/models/char_lm.py): the stream layout, truncated
BPTT, training to near-zero loss, bits per character, checkpoints, resume, evaluate and the bad inputs."""

import math

import numpy as np
import pytest

from handgrad.app import TrainConfig, train
from handgrad.app.checkpoint import load_checkpoint, load_model
from handgrad.app.evaluation import evaluate
from handgrad.app.language_model import evaluate_stream, stream_layout
from handgrad.app.models import build_model, char_arch, reset_states
from handgrad.app.training import TrainingHook
from handgrad.ch04_numerical import log_softmax
from handgrad.cli import main

WORDS = ["the ", "cat ", "sat ", "on ", "a ", "mat, ", "and ", "dog ", "ran. "]


def small_text(n, seed=0):
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(WORDS) for _ in range(n // 2))[:n]


def lm_config(tmp_path, text_file, name="run", **kw):
    options = dict(
        model="lstm",
        text=str(text_file),
        batch_size=4,
        seq_len=20,
        hidden=(32,),
        embedding_dim=8,
        epochs=2,
        out=str(tmp_path / name),
        quiet=True,
        plots=False,
        eval_batch_size=4,
    )
    options.update(kw)
    return TrainConfig(**options)


def test_the_stream_layout_puts_contiguous_text_in_rows_and_the_next_character_as_target():
    ids = np.arange(23)
    X, Y = stream_layout(ids, 4)
    assert X.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]
    assert np.array_equal(Y, X + 1)


def test_evaluation_with_the_carried_state_equals_reading_each_stream_whole():
    """Windows of 7 with the state carried give the loss of one pass over each whole row (truncation
    changes the gradient, never the forward pass)."""
    model = build_model(char_arch("gru", 6, 4, (5,)), rng=0)
    ids = np.random.default_rng(1).integers(0, 6, 301).astype(np.int32)
    loss, acc, n = evaluate_stream(model, ids, streams=3, seq_len=7)
    X, Y = stream_layout(ids, 3)
    reset_states(model.eval())
    logp = log_softmax(model.forward(X).astype(np.float64))
    expected = -np.take_along_axis(logp, Y[..., None], axis=-1).mean()
    assert n == Y.size == 300 and loss == pytest.approx(expected, rel=1e-6)
    assert acc == pytest.approx(float(np.mean(logp.argmax(-1) == Y)))


def test_the_language_model_overfits_a_200_character_text(tmp_path):
    path = tmp_path / "t200.txt"
    path.write_text(small_text(200))
    result = train(
        lm_config(tmp_path, path, hidden=(64,), embedding_dim=16, lr=1e-2, schedule="constant", epochs=60)
    )
    assert result.history[0]["train_bpc"] > 2.5  # ~log2(17 characters) at the start
    # The last parameters read the training text back almost without surprise, in bits per character.
    train_bpc = evaluate(tmp_path / "run" / "last.npz", split="train").bits_per_char
    assert train_bpc < 0.1, train_bpc
    assert result.history[-1]["train_bpc"] < 0.1
    assert result.history[-1]["train_bpc"] == pytest.approx(result.history[-1]["train_loss"] / math.log(2))


def test_metrics_checkpoint_and_evaluate_agree_in_bits_per_character(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text(small_text(2000))
    result = train(lm_config(tmp_path, path))
    ckpt = load_checkpoint(tmp_path / "run" / "best.npz")
    meta = ckpt.metadata
    assert meta["arch"] == char_arch("lstm", len(meta["vocab"]), 8, (32,)) and meta["text"] == str(path)
    assert meta["vocab"] == "".join(sorted(set(small_text(2000)[:1800])))
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_bpc", "val_bpc", "test_bpc", "val_loss", "test_accuracy"} <= set(header)
    report = evaluate(tmp_path / "run")
    assert report.n == 96  # the last 100 characters as 4 streams of (100 − 1) // 4 = 24 predicted characters
    assert report.bits_per_char == pytest.approx(result.test_bits_per_char, rel=1e-9)
    assert report.bits_per_char == pytest.approx(report.loss / math.log(2))
    assert main(["evaluate", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"{report.bits_per_char:.4f} bits per character" in out and "(96 characters scored)" in out


def test_resume_is_bit_for_bit(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(small_text(1500))
    straight = train(lm_config(tmp_path, path, "straight", epochs=3, model="gru"))
    first = train(
        lm_config(tmp_path, path, "resumed", epochs=3, model="gru"), on_epoch_end=lambda e, row: e < 2
    )
    assert first.epochs == 2 and first.stopped_early
    resumed = train(TrainConfig(resume=str(tmp_path / "resumed"), quiet=True, plots=False))
    for name in ("last.npz", "best.npz"):
        a, b = (load_checkpoint(tmp_path / run / name) for run in ("straight", "resumed"))
        assert a.params.keys() == b.params.keys() and all(
            np.array_equal(a.params[k], b.params[k]) for k in a.params
        )
    timeless = [
        {k: v for k, v in h.items() if "seconds" not in k} for h in (*straight.history, *resumed.history)
    ]
    assert timeless[:3] == timeless[3:]
    model, _ = load_model(tmp_path / "resumed")
    assert model.layers[1].stateful and model.layers[1].initial_state is None


class Steps(TrainingHook):
    """Records the step count around every optimiser step and adds a column to each epoch's row."""

    def start(self, run):
        self.before, self.after = [], []

    def before_step(self, run):
        self.before.append(run.step)

    def after_step(self, run):
        self.after.append(len(self.before))

    def epoch_metrics(self, run, epoch, row):
        row["hook_column"] = 10 * epoch


def test_the_text_run_is_the_image_loop_hooks_and_all(tmp_path):
    """The language model trains in training.py's loop: the hooks see every step, their columns reach
    metrics.csv, and a hooked run is bit for bit the plain one."""
    path = tmp_path / "t.txt"
    path.write_text(small_text(1500))  # 1,350 training characters: 4 streams of 337, 17 windows of 20
    hook = Steps()
    train(lm_config(tmp_path, path, "hooked"), hooks=[hook])
    plain = train(lm_config(tmp_path, path, "plain"))
    assert hook.before == [0] * 17 + [17] * 17  # run.step: the steps before the epoch
    assert hook.after == list(range(1, 2 * 17 + 1))
    rows = (tmp_path / "hooked" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[-1] == "hook_column" and [r.split(",")[-1] for r in rows[1:]] == ["10", "20"]
    a, b = (load_checkpoint(tmp_path / run / "last.npz").params for run in ("hooked", "plain"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert load_checkpoint(tmp_path / "plain" / "best.npz").metadata["best_val_bpc"] == pytest.approx(
        min(row["val_bpc"] for row in plain.history)
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--model", "mlp"],
            "a text trains a character language model: choose --model rnn, lstm, gru (got mlp)",
        ),
        (["--dataset", "mnist"], "give either --text FILE or --dataset NAME, not both"),
        (["--seq-len", "0"], "seq_len must be a positive integer, got 0"),
        (["--dropout", "0.5"], "a language model takes no --augment, --batch-norm, --dropout or --channels"),
        (
            ["--batch-size", "64", "--seq-len", "100"],
            "its training part (180 characters) is too short for one batch of "
            "64 sequences of 100 characters (needs 6,401); use a longer text",
        ),
    ],
)
def test_bad_language_model_settings_are_one_line(tmp_path, capsys, argv, message):
    path = tmp_path / "t.txt"
    path.write_text(small_text(200))
    code = main(["train", "--text", str(path), *argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("handgrad: error: "), err
    assert message in err[0]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a text file (a NUL byte at offset 8: binary data)"),
        (b"caf\xe9 au lait " * 30, "is not UTF-8 text (invalid byte 0xe9 at offset 3)"),
    ],
)
def test_an_empty_or_binary_file_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    code = main(["train", "--text", str(path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and message in err[0] and str(path) in err[0]
    assert not (tmp_path / "run").exists()


def test_predict_and_serve_refuse_a_language_model_in_one_line(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text(small_text(600))
    train(lm_config(tmp_path, path, epochs=1))
    code = main(["predict", str(tmp_path / "run"), str(path)])
    err = capsys.readouterr().err.strip()
    assert (
        code == 1
        and err.startswith("handgrad: error: ")
        and "holds a character language model (char-lstm)" in err
    )
    assert "handgrad sample" in err and len(err.splitlines()) == 1
