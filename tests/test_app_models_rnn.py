"""The recurrent image classifiers (app/models/rnn.py): sequential MNIST end to end, gradient clipping in
the training step, checkpoints, resume, evaluate and predict."""

import io
import json

import numpy as np
import pytest
from conftest import real_data_dir

from handgrad.app import TrainConfig, train
from handgrad.app.checkpoint import load_checkpoint, load_model
from handgrad.app.evaluation import evaluate
from handgrad.app.models import build_model, get_model_type, named_params, prepare_inputs, rnn_arch
from handgrad.app.predict import Predictor
from handgrad.ch05_ml_basics import set_all_seeds
from handgrad.ch10_sequence import GRU, LSTM, RNN, LastStep
from handgrad.cli import main
from handgrad.datasets import DatasetSpec, load_dataset, load_splits, register_dataset, registry


def quick(tmp_path, name="run", **kw):
    options = dict(
        dataset="mnist-sample",
        limit=256,
        epochs=1,
        batch_size=64,
        hidden=(16,),
        out=str(tmp_path / name),
        quiet=True,
        plots=False,
        eval_batch_size=500,
    )
    options.update(kw)
    return TrainConfig(**options)


def _arrays(path):
    with np.load(path) as data:
        return {k: data[k].copy() for k in data.files if k != "__handgrad__"}


@pytest.mark.parametrize("cell, layer", [("rnn", RNN), ("lstm", LSTM), ("gru", GRU)])
def test_the_architecture_reads_rows_and_classifies_the_last_state(cell, layer):
    arch = rnn_arch(cell, hidden=(12, 8), n_classes=10)
    model = build_model(arch, rng=0)
    kinds = [type(m) for m in model.layers]
    assert kinds[:3] == [layer, layer, LastStep] and model.layers[-1].params["W"].shape == (8, 10)
    assert (model.layers[0].input_size, model.layers[0].hidden_size, model.layers[1].input_size) == (
        28,
        12,
        12,
    )
    X = np.random.default_rng(1).random((3, 28, 28), dtype=np.float32)
    assert prepare_inputs(arch, X) is X  # the identity view: (N, 28, 28) is (N, T, D)
    # The logits are the head applied to the last hidden state of the stack, computed step by step.
    h = model.layers[1].forward(model.layers[0].forward(X))[:, -1]
    expected = h @ model.layers[-1].params["W"] + model.layers[-1].params["b"]
    np.testing.assert_allclose(model.eval().forward(X), expected, rtol=1e-5, atol=1e-6)


def test_recipes_are_documented_and_clip():
    for cell in ("rnn", "lstm", "gru"):
        config = TrainConfig(model=cell)
        assert config.hidden == (128,) and config.optimizer == "adam" and config.clip_grad_norm == 1.0
        assert config.schedule == "cosine" and config.batch_size == 128
    assert [TrainConfig(model=m).lr for m in ("rnn", "lstm", "gru")] == [2e-3, 2e-3, 3e-3]
    assert [TrainConfig(model=m).epochs for m in ("rnn", "lstm", "gru")] == [16, 12, 12]
    assert TrainConfig().clip_grad_norm is None and TrainConfig(model="cnn").clip_grad_norm is None


def test_a_bad_input_shape_is_refused_in_one_line(tmp_path, capsys):
    code = main(["train", "--model", "lstm", "--dataset", "synthetic-color", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith(
        "handgrad: error: a lstm reads an image as a sequence of rows: input_shape must be [steps, features]"
    )
    code = main(["train", "--model", "gru", "--channels", "8", "--out", str(tmp_path / "r")])
    assert code == 1 and capsys.readouterr().err.strip() == (
        "handgrad: error: channels (convolution blocks) need --model cnn"
    )
    code = main(["train", "--model", "rnn", "--clip-grad-norm", "-1", "--out", str(tmp_path / "r")])
    assert code == 1 and "clip_grad_norm must be" in capsys.readouterr().err


def test_an_lstm_on_2000_mnist_images_learns_well_above_chance_in_one_epoch(tmp_path, monkeypatch):
    """Real MNIST, 2,000 training images (and 400 for validation, 2,000 test images, so that the test takes
    seconds): one epoch of the LSTM, end to end through ``train``."""
    data = real_data_dir()
    X_train, y_train = load_dataset("mnist", data, "train", download=False)
    X_test, y_test = load_dataset("mnist", data, "test", download=False)
    parts = {2400: (X_train[:2400], y_train[:2400]), 2000: (X_test[:2000], y_test[:2000])}
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    register_dataset(
        DatasetSpec(
            name="mnist-2000",
            classes=registry.DIGITS,
            source="generated",
            input_shape=(28, 28),
            generator=lambda n, seed: parts[n],
            sizes={"train": 2400, "test": 2000},
        )
    )
    config = TrainConfig(
        model="lstm",
        dataset="mnist-2000",
        epochs=1,
        batch_size=25,
        warmup_epochs=0,
        schedule="constant",
        out=str(tmp_path / "run"),
        quiet=True,
        plots=False,
    )
    result = train(config)
    assert result.history[0]["train_loss"] < 2.0  # chance is ln 10 = 2.30
    assert result.test_accuracy > 0.35, result.test_accuracy  # chance: 0.1


def test_clipping_bounds_the_step_and_off_is_the_unclipped_step(tmp_path):
    """One SGD step (lr 1) from the same start: with clipping at 1e-3 the parameters move by at most 1e-3
    in global norm; with clipping off (None or 0) they move by the full gradient, identically."""
    moved = {}
    for clip in (None, 0.0, 1e-3):
        config = quick(
            tmp_path,
            f"clip{clip}",
            model="lstm",
            limit=64,
            optimizer="sgd",
            lr=1.0,
            schedule="constant",
            warmup_epochs=0,
            clip_grad_norm=clip,
        )
        train(config)
        arch = load_checkpoint(tmp_path / f"clip{clip}" / "last.npz").metadata["arch"]
        start = named_params(build_model(arch, set_all_seeds(0)))
        end = load_checkpoint(tmp_path / f"clip{clip}" / "last.npz").params
        moved[clip] = (
            np.sqrt(sum(float(np.sum((end[k] - start[k]).astype(np.float64) ** 2)) for k in start)),
            end,
        )
    assert moved[1e-3][0] == pytest.approx(1e-3, rel=1e-3)  # the norm before clipping was far above 1e-3
    assert moved[None][0] > 0.05
    assert all(np.array_equal(moved[None][1][k], moved[0.0][1][k]) for k in moved[None][1])


def test_checkpoint_round_trip_and_resume_are_bit_for_bit(tmp_path):
    straight = train(quick(tmp_path, "straight", model="gru", epochs=2))
    first = train(quick(tmp_path, "resumed", model="gru", epochs=2), on_epoch_end=lambda epoch, row: False)
    assert first.epochs == 1 and first.stopped_early  # interrupted after epoch 1 of 2
    resumed = train(TrainConfig(resume=str(tmp_path / "resumed"), epochs=2, quiet=True, plots=False))
    a, b = _arrays(tmp_path / "straight" / "last.npz"), _arrays(tmp_path / "resumed" / "last.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    timeless = [
        {k: v for k, v in h.items() if "seconds" not in k} for h in (*resumed.history, *straight.history)
    ]
    assert timeless[:2] == timeless[2:]  # the same metrics, epoch by epoch, to the last bit
    # The checkpoint rebuilds the same network: evaluate reports the run's own test figures.
    _, ckpt = load_model(tmp_path / "straight" / "best.npz")
    assert (
        ckpt.metadata["arch"] == rnn_arch("gru", hidden=(16,))
        and ckpt.metadata["config"]["clip_grad_norm"] == 1
    )
    report = evaluate(tmp_path / "straight")
    assert report.accuracy == straight.test_accuracy and report.loss == pytest.approx(
        straight.test_loss, rel=1e-9
    )


def test_predict_and_the_web_service_take_the_users_image(tmp_path):
    from PIL import Image

    from handgrad.app.server import PredictionService

    train(quick(tmp_path, "run", model="rnn"))
    predictor = Predictor.from_checkpoint(tmp_path / "run")
    X, _ = load_splits("mnist-sample").test
    image = Image.fromarray((X[0] * 255).astype(np.uint8))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path = tmp_path / "digit.png"
    path.write_bytes(buf.getvalue())
    result = predictor.predict_image(path)
    seen = np.asarray(result["input"], np.float32)
    model, _ = load_model(tmp_path / "run")
    logits = model.forward(seen[None]).astype(np.float64)[0]
    expected = np.exp(logits - logits.max())
    np.testing.assert_allclose(result["probabilities"], expected / expected.sum(), rtol=1e-5)
    service = PredictionService(predictor)
    assert service.info()["input_shape"] == [28, 28] and service.ready
    assert service.predict(buf.getvalue())["prediction"] == result["prediction"]
    code = main(["predict", str(tmp_path / "run"), str(path), "--json"])
    assert code == 0


def test_the_plots_are_drawn_for_a_sequence_model(tmp_path):
    pytest.importorskip("matplotlib")
    train(quick(tmp_path, "run", model="lstm", plots=True))
    for name in ("curves.png", "confusion.png", "misclassified.png"):
        assert (tmp_path / "run" / name).stat().st_size > 1000, name
    assert not (tmp_path / "run" / "weights.png").exists()  # U (28, 4·16) reads rows: no picture per unit
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["model"] == "lstm" and get_model_type("lstm").input_kind == "images"
