"""The command line: train/evaluate/predict output checked against independent numbers, and every user
error path ends in one line ``handgrad: error: ...``, a non-zero exit status and no traceback."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm
from test_app_training import mlp_forward, trained_run

from handgrad.app.checkpoint import load_checkpoint
from handgrad.cli import main
from handgrad.datasets import load_splits


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *fragments, status=1):
    assert code == status
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("handgrad: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def ckpt():
    return trained_run().run_dir + "/best.npz"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Ten test-set digits written as PNG files, with their labels."""
    from PIL import Image

    X, y = load_splits("mnist-sample").test
    folder = tmp_path_factory.mktemp("digits")
    idx = [int(np.flatnonzero(y == k)[3]) for k in range(10)]
    paths = []
    for i in idx:
        path = folder / f"digit-{i}-label-{y[i]}.png"
        Image.fromarray(np.round(X[i] * 255).astype(np.uint8), mode="L").save(path)
        paths.append(str(path))
    return paths, y[idx]


# --------------------------------------------------------------------------------------------------
# Success paths
# --------------------------------------------------------------------------------------------------


def test_train_command_writes_a_run_and_resumes_it(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run(
        capsys,
        "train",
        "--dataset",
        "mnist-sample",
        "--limit",
        "600",
        "--hidden",
        "32",
        "--epochs",
        "1",
        "--out",
        str(out_dir),
        "--no-plots",
    )
    assert code == 0, err
    assert re.search(r"epoch 1/1 +train loss [\d.]+ acc [\d.]+%", out)
    assert re.search(r"best epoch 1/1: test accuracy [\d.]+%, macro-F1 0\.\d+", out)
    assert (out_dir / "best.npz").is_file() and not list(out_dir.glob("*.png"))

    code, out, err = run(capsys, "train", "--resume", str(out_dir), "--epochs", "2", "--lr", "0.01")
    assert code == 0
    assert "--lr ignored with --resume" in err
    assert "resuming" in out and "epoch 2/2" in out
    assert load_checkpoint(out_dir / "last.npz").metadata["epoch"] == 2
    assert load_checkpoint(out_dir / "last.npz").metadata["config"]["lr"] == 0.2


def test_evaluate_prints_metrics_matching_an_independent_computation(ckpt, capsys):
    code, out, err = run(capsys, "evaluate", ckpt)
    assert code == 0, err
    params = load_checkpoint(ckpt).params
    X, y = load_splits("mnist-sample").test
    pred = mlp_forward(params, X).argmax(axis=1)
    acc = float(re.search(r"accuracy ([\d.]+)%", out)[1])
    f1 = float(re.search(r"macro-F1 ([\d.]+)", out)[1])
    assert acc == pytest.approx(100 * skm.accuracy_score(y, pred), abs=0.005)
    assert f1 == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=5e-5)
    precision, recall, _, support = skm.precision_recall_fscore_support(y, pred)
    for k in range(10):
        row = re.search(rf"^\s+{k}\s+([\d.]+)\s+([\d.]+)\s+[\d.]+\s+(\d+)$", out, re.M)
        assert float(row[1]) == pytest.approx(precision[k], abs=5e-5)
        assert float(row[2]) == pytest.approx(recall[k], abs=5e-5)
        assert int(row[3]) == support[k]
    cm = skm.confusion_matrix(y, pred)
    assert " ".join(f"{v:>3d}" for v in cm[9]) in out


def test_evaluate_json_and_plots(ckpt, tmp_path, capsys):
    code, out, err = run(
        capsys, "evaluate", str(ckpt).rsplit("/", 1)[0], "--json", "--plots", str(tmp_path / "p")
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["n"] == 1000 and report["dataset"] == "mnist-sample"
    assert np.array(report["confusion"]).sum() == 1000
    assert report["accuracy"] == pytest.approx(np.trace(report["confusion"]) / 1000)
    drawn = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert drawn == ["confusion.png", "coverage.png", "misclassified.png"]


def test_predict_json_on_digit_pngs(ckpt, digits, capsys):
    paths, labels = digits
    code, out, err = run(capsys, "predict", ckpt, *paths, "--json")
    assert code == 0, err
    results = json.loads(out)
    assert [r["path"] for r in results] == paths
    for r in results:
        assert set(r) == {"path", "prediction", "label", "confidence", "probabilities"}
        assert len(r["probabilities"]) == 10 and sum(r["probabilities"]) == pytest.approx(1, abs=1e-9)
        assert r["confidence"] == max(r["probabilities"]) and r["label"] == str(r["prediction"])
    correct = sum(r["prediction"] == int(t) for r, t in zip(results, labels))
    assert correct >= 8, [r["prediction"] for r in results]


def test_predict_text_output(ckpt, digits, capsys):
    code, out, _err = run(capsys, "predict", ckpt, digits[0][0])
    assert code == 0
    assert re.search(r"digit-\d+-label-0\.png: \d \(class \d, confidence [\d.]+%\)", out)
    assert re.search(r"0: [\d.]+ {2}1: [\d.]+", out)


def test_predictor_api_gives_the_web_page_its_fields(ckpt, digits):
    from handgrad.app import Predictor

    p = Predictor.from_checkpoint(ckpt)
    assert (
        p.classes == [str(k) for k in range(10)] and p.dataset == "mnist-sample" and p.arch["type"] == "mlp"
    )
    with open(digits[0][0], "rb") as f:
        data = f.read()
    r = p.predict_image(data)
    assert set(r) == {"prediction", "label", "confidence", "probabilities", "classes", "input"}
    assert np.array(r["input"]).shape == (28, 28)
    X, _ = load_splits("mnist-sample").test
    probs = p.predict_arrays(X[:5])
    assert probs.shape == (5, 10) and probs.dtype == np.float64
    expected = mlp_forward(load_checkpoint(ckpt).params, X[:5]).astype(np.float64)
    expected = np.exp(expected - expected.max(1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(1, keepdims=True), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["serve"]])
def test_help_shows_defaults(command, capsys):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0 and out.startswith("usage: handgrad")
    if command == ["train"]:
        text = " ".join(out.split())  # undo the help's line wrapping
        from handgrad.app.config import MODEL_DEFAULTS

        cnn = MODEL_DEFAULTS["cnn"]
        # The reference models' defaults lead each list; the recurrent and language models' follow.
        for default in (
            "(default: 256 for mlp, {batch_size} for cnn, ",
            "(default: 0.2 for mlp, {lr:g} for cnn, ",
            "(default: 0.9)",
            "(default: 0.0001 for mlp, {weight_decay:g} for cnn, ",
            "(default: 512 for mlp, {hidden[0]} for cnn, ",
            "(default: 20 for mlp, {epochs} for cnn",
            "(default: relu)",
            "(default: momentum for mlp, {optimizer} for cnn, ",
            "(default: constant for mlp, {schedule} for cnn, ",
            "(default: off for mlp, on for cnn, ",
        ):
            default = default.format(**cnn)
            assert default in text
        for default in (
            "(default: 20 for mlp, 12 for cnn, 16 for rnn, 12 for lstm, gru, 10 for --text;",
            "(default: 256 for mlp, 128 for cnn, 128 for rnn, lstm, gru, 64 for --text)",
            "(default: 512 for mlp, 128 for cnn, 128 for rnn, lstm, gru, 256 for --text)",
            "(default: off for mlp, off for cnn, 1 for rnn, lstm, gru, 5 for --text)",
            "--seq-len T language models: characters per sequence, the truncation length of "
            "back-propagation through time (default: 100)",
        ):
            assert default in text


# --------------------------------------------------------------------------------------------------
# Error paths
# --------------------------------------------------------------------------------------------------


def _other_architecture(ckpt, tmp_path):
    with np.load(ckpt) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(arrays["__handgrad__"].tobytes())
    header["metadata"]["arch"]["hidden"] = [256]
    arrays["__handgrad__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(tmp_path / "other.npz", **arrays)
    return str(tmp_path / "other.npz")


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_bad_checkpoints(command, ckpt, digits, tmp_path, capsys):
    extra = [digits[0][0]] if command == "predict" else []
    (tmp_path / "text.npz").write_text("not a checkpoint")
    np.save(tmp_path / "array.npy", np.zeros(3))
    cases = [
        (str(tmp_path / "missing.npz"), "not found"),
        (str(tmp_path), "folder without best.npz"),
        (str(tmp_path / "text.npz"), "not a handgrad checkpoint"),
        (str(tmp_path / "array.npy"), "not a handgrad checkpoint"),
        (digits[0][0], "not a handgrad checkpoint"),
        (_other_architecture(ckpt, tmp_path), "needs (784, 256)"),
    ]
    for path, fragment in cases:
        code, _out, err = run(capsys, command, path, *extra)
        assert_user_error(code, err, fragment)


def test_unreadable_images(ckpt, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "text.png").write_text("hello")
    for path, fragment in [
        (tmp_path / "bad.png", "bad.png"),
        (tmp_path / "text.png", "not an image"),
        (tmp_path / "missing.png", "No such file"),
        (tmp_path, "cannot read image"),
    ]:
        code, out, err = run(capsys, "predict", ckpt, str(path))
        assert_user_error(code, err, fragment)
        assert out == ""


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
        (["train", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
        (
            ["train", "--hidden", "512,abc"],
            "argument --hidden: expected comma-separated sizes such as 512[,256...]",
        ),
        (["train", "--epoch", "3"], "unrecognized"),
        (["evaluate", "x.npz", "--dataset", "cifar"], "--dataset"),
        (["predict", "x.npz"], "IMAGE"),
        (["serve", "--port", "99999"], "--port"),
        (["fly"], "invalid choice"),
        ([], "COMMAND"),
    ],
)
def test_bad_options_are_usage_errors(argv, fragment, capsys):
    code, _out, err = run(capsys, *argv)
    assert_user_error(code, err, fragment, status=2)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "epochs must be a positive integer, got 0"),
        (["--batch-size", "-3"], "batch_size must be a positive integer, got -3"),
        (["--lr", "-1"], "lr must be positive, got -1.0"),
        (["--lr", "nan"], "lr must be a positive finite number, got nan"),
        (["--momentum", "1.5"], "momentum must be in [0, 1), got 1.5"),
        (
            ["--weight-decay=-1e-4"],
            "weight_decay must be non-negative, got -0.0001",
        ),  # = : -1e-4 is no option
        (["--hidden", "0"], "hidden must be one or more positive sizes, got (0,)"),
        (["--activation", "gelu"], "activation must be one of relu, leaky_relu, sigmoid, tanh; got 'gelu'"),
        (
            ["--optimizer", "lbfgs"],
            "optimizer must be one of sgd, momentum, adam, adamw, rmsprop, adagrad; got 'lbfgs'",
        ),
        (
            ["--schedule", "linear"],
            "schedule must be one of constant, cosine, step, exponential; got 'linear'",
        ),
        (["--dataset", "cifar"], "unknown dataset 'cifar'; choose one of: mnist, fashion-mnist"),
        (["--seed", "-1"], "seed must be a non-negative integer, got -1"),
        (["--limit", "0"], "limit must be a positive integer, got 0"),
        (["--augment-shift", "9"], "augment_shift must be an integer in [0, 8], got 9"),
        (["--lr-gamma", "2"], "lr_gamma must be in (0, 1], got 2.0"),
    ],
)
def test_bad_train_values_are_one_line_config_errors(argv, message, tmp_path, capsys):
    """argparse parses the type; TrainConfig (or the dataset registry) checks the value, before any work."""
    code, _out, err = run(capsys, "train", *argv, "--out", str(tmp_path / "run"))
    assert_user_error(code, err, f"handgrad: error: {message}", status=1)
    assert not (tmp_path / "run").exists()  # refused before a run folder was made


def test_train_options_are_the_config_fields(capsys):
    """Every TrainConfig field but eval_batch_size is a train option, with the dataclass's default."""
    import dataclasses

    from handgrad.app.config import TrainConfig
    from handgrad.cli import NOT_TRAIN_OPTIONS, TRAIN_OPTIONS, build_parser

    parser = build_parser()
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(TRAIN_OPTIONS.values()) == names - set(NOT_TRAIN_OPTIONS) and len(names) == 38
    assert TRAIN_OPTIONS["--no-plots"] == "plots" and TRAIN_OPTIONS["-q"] == "quiet"
    args = parser.parse_args(["train", "--hidden", "64,32", "--no-batch-norm", "--lr", "0.5", "--no-plots"])
    assert (args.hidden, args.batch_norm, args.lr, args.plots) == ((64, 32), False, 0.5, False)
    assert args.augment is None  # not given: the model's default
    assert (args.momentum, args.seed, args.augment_shift, args.model) == (0.9, 0, 2, "mlp")


def test_bad_training_settings_and_folders(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--optimizer", "sgd", "--nesterov", "--out", str(tmp_path / "a"))
    assert_user_error(code, err, "nesterov")
    code, _, err = run(capsys, "train", "--resume", str(tmp_path / "nope"))
    assert_user_error(code, err, "no such run folder")
    code, _, err = run(capsys, "train", "--dataset", "mnist-sample", "--warmup-epochs", "5", "--epochs", "2")
    assert_user_error(code, err, "warmup_epochs")


def test_named_dataset_not_found_is_one_line(tmp_path, monkeypatch, capsys):
    import handgrad.datasets.download as dl
    from handgrad.datasets import DatasetNotFoundError

    monkeypatch.delenv("HANDGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(
        dl, "download_file", lambda *a, **k: (_ for _ in ()).throw(DatasetNotFoundError("offline"))
    )
    code, _, err = run(
        capsys,
        "train",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "r"),
    )
    assert_user_error(code, err, "fashion-mnist", "HANDGRAD_DATA")


def test_nan_loss_exits_non_zero_with_advice(tmp_path, capsys):
    code, _out, err = run(
        capsys,
        "train",
        "--dataset",
        "mnist-sample",
        "--limit",
        "600",
        "--hidden",
        "16",
        "--lr",
        "1e6",
        "--out",
        str(tmp_path / "nan"),
        "--no-plots",
    )
    assert_user_error(code, err, "diverged", "epoch", "batch", "lower learning rate", "best.npz")
    assert load_checkpoint(tmp_path / "nan" / "best.npz").metadata["arch"]["hidden"] == [16]


def test_real_process_prints_no_traceback(tmp_path):
    """The console entry point as a subprocess: exit status and stderr exactly as a user sees them."""
    (tmp_path / "x.npz").write_text("junk")
    proc = subprocess.run(
        [sys.executable, "-m", "handgrad.cli", "predict", str(tmp_path / "x.npz"), "y.png"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("handgrad: error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_interrupt_exits_130_with_the_resume_hint(monkeypatch, capsys):
    import handgrad.app

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(handgrad.app, "train", interrupted)
    code, _out, err = run(capsys, "train", "--dataset", "mnist-sample")
    assert code == 130 and "--resume" in err and "Traceback" not in err


def test_python_dash_m_handgrad_runs_the_command_line():
    from handgrad import __version__

    version = subprocess.run(
        [sys.executable, "-m", "handgrad", "--version"], capture_output=True, text=True, timeout=120
    )
    assert (version.returncode, version.stdout, version.stderr) == (0, f"handgrad {__version__}\n", "")
    helped = subprocess.run(
        [sys.executable, "-m", "handgrad", "train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert helped.returncode == 0 and helped.stdout.startswith("usage: handgrad train")
    assert "--no-plots" in helped.stdout and "(default: 0.9)" in helped.stdout


def test_a_full_disk_during_training_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    import errno

    from test_app_training import _failing_save

    _failing_save(monkeypatch, 2, "last.npz", OSError(errno.ENOSPC, "No space left on device"))
    run_dir = tmp_path / "r"
    code, _out, err = run(
        capsys,
        "train",
        "--dataset",
        "mnist-sample",
        "--limit",
        "500",
        "--hidden",
        "16",
        "--epochs",
        "3",
        "--out",
        str(run_dir),
        "--no-plots",
        "-q",
    )
    assert_user_error(
        code,
        err,
        f"handgrad: error: cannot write {run_dir / 'last.npz'}: No space left on device; ",
        "and last.npz (epoch 1) are intact",
        f"continue with --resume {run_dir}",
    )
