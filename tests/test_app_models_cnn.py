"""The convolutional model type and the regularisation/optimiser options of the application: a tiny CNN
learns real digits; checkpoints hold batch-norm state exactly; resume with dropout, augmentation and Adam is
bit-for-bit; evaluate/predict rebuild the CNN; the MLP gains dropout, batch norm and augmentation; the
command line shows and checks the new options."""

import functools
import json
import math
import tempfile

import numpy as np
import pytest
from test_app_training import _arrays

from handgrad.app import ConfigError, TrainConfig, evaluate, predict, train
from handgrad.app.checkpoint import load_checkpoint, load_model, save_checkpoint
from handgrad.app.config import MODEL_DEFAULTS
from handgrad.app.models import (
    ArchitectureError,
    arch_from_config,
    build_model,
    describe,
    named_state,
    prepare_inputs,
    validate_arch,
)
from handgrad.app.training import lr_schedule, make_optimizer
from handgrad.ch06_feedforward import Sequential
from handgrad.ch07_regularization import Dropout
from handgrad.ch08_optimization import Adam, BatchNorm1D
from handgrad.ch09_convolution import Conv2D, FusedSequential
from handgrad.cli import main
from handgrad.datasets import load_splits

TINY = dict(model="cnn", channels=(6, 12), hidden=(32,))


def tiny(tmp_path, name, **kw):
    """A tiny CNN on the bundled real digits: the CNN recipe's settings, smaller and shorter."""
    settings = dict(
        dataset="mnist-sample", epochs=2, limit=600, out=str(tmp_path / name), plots=False, quiet=True, **TINY
    )
    settings.update(kw)
    return TrainConfig(**settings)


@functools.cache
def trained_cnn():
    out = tempfile.mkdtemp(prefix="handgrad-test-cnn-")
    config = TrainConfig(
        dataset="mnist-sample", epochs=3, limit=2500, out=out + "/run", plots=True, quiet=True, **TINY
    )
    return train(config, stdout=open("/dev/null", "w"))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------------------------------
# The recipe and the architecture
# --------------------------------------------------------------------------------------------------


def test_model_defaults_fill_what_is_not_given_and_explicit_values_win():
    mlp, cnn = TrainConfig(), TrainConfig(model="cnn")
    assert (mlp.optimizer, mlp.lr, mlp.epochs, mlp.augment, mlp.channels) == ("momentum", 0.2, 20, False, ())
    for key, value in MODEL_DEFAULTS["cnn"].items():
        assert getattr(cnn, key) == value, key
    c = TrainConfig(model="cnn", lr=0.01, augment=False, epochs=3)
    assert (c.lr, c.augment, c.epochs, c.optimizer) == (0.01, False, 3, "adam")
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert TrainConfig(resume="somewhere").epochs is None  # "the run's own"


def test_default_cnn_architecture_is_the_documented_one():
    arch = arch_from_config(TrainConfig(model="cnn"), 10, (28, 28))
    model = build_model(arch, 0)
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Conv2D", "BatchNorm2D", "ReLU", "MaxPool2D"] * 3 + [
        "Flatten",
        "Dropout",
        "Linear",
        "BatchNorm1D",
        "ReLU",
        "Dropout",
        "Linear",
    ]
    convs = [layer for layer in model if isinstance(layer, Conv2D)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 16, (3, 3), (1, 1)),
        (16, 32, (3, 3), (1, 1)),
        (32, 64, (3, 3), (1, 1)),
    ]
    assert model[14].params["W"].shape == (64 * 3 * 3, 128)  # 28 -> 14 -> 7 -> 3
    X = prepare_inputs(arch, np.zeros((5, 28, 28), np.float32))
    assert X.shape == (5, 1, 28, 28)
    assert model.forward(X).shape == (5, 10) and model.forward(X).dtype == np.float32
    assert describe(arch).startswith("cnn conv3x3 16-32-64")


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(channels=[]), "channels"),
        (dict(channels=[8, 8, 8, 8, 8]), "shrink"),
        (dict(kernel_size=4), "kernel_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(batch_norm="yes"), "batch_norm"),
        (dict(extra=1), "unknown"),
        (dict(input_shape=[28]), "input_shape"),
    ],
)
def test_bad_cnn_architectures_are_refused(change, message):
    arch = arch_from_config(TrainConfig(model="cnn"), 10, (28, 28))
    with pytest.raises(ArchitectureError, match=message):
        validate_arch({**arch, **change})


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(model="cnn", channels=()), "channels"),
        (dict(channels=(8,)), "channels"),
        (dict(dropout=1.0), "dropout"),
        (dict(patience=0), "patience"),
        (dict(lr_gamma=1.5), "lr_gamma"),
        (dict(augment_shift=9), "augment_shift"),
        (dict(model="transformer"), "model"),
        (dict(optimizer="lbfgs"), "optimizer"),
        (dict(batch_norm=1), "batch_norm"),
    ],
)
def test_bad_settings_are_config_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**change).validate()


def test_optimisers_and_schedules_follow_the_settings():
    assert isinstance(make_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.01)), Adam)
    assert make_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.01)).decoupled
    for name in ("sgd", "momentum", "adam", "rmsprop", "adagrad"):
        assert make_optimizer(TrainConfig(optimizer=name, lr=0.5)).lr == 0.5
    spe = 10
    step = lr_schedule(TrainConfig(epochs=6, lr=1.0, schedule="step", lr_step_epochs=2, lr_gamma=0.5), spe)
    assert [step(t) for t in (0, 19, 20, 39, 40, 59)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    default_step = lr_schedule(TrainConfig(epochs=6, lr=1.0, schedule="step"), spe)  # every 2 epochs, × 0.1
    assert default_step(20) == pytest.approx(0.1)
    expo = lr_schedule(
        TrainConfig(epochs=6, lr=2.0, schedule="exponential", lr_gamma=0.5, warmup_epochs=1), spe
    )
    assert expo(5) == pytest.approx(1.0)  # halfway through the warmup
    assert (
        expo(10) == pytest.approx(2.0)
        and expo(20) == pytest.approx(1.0)
        and expo(35) == pytest.approx(2 * 0.5**2.5)
    )


# --------------------------------------------------------------------------------------------------
# Training, checkpoints, resume
# --------------------------------------------------------------------------------------------------


def test_tiny_cnn_learns_real_digits_and_draws_its_filters():
    result = trained_cnn()
    h = result.history
    assert h[-1]["train_loss"] < 0.6 * h[0]["train_loss"]
    assert h[0]["test_accuracy"] < h[-1]["test_accuracy"]
    assert (
        result.test_accuracy > 0.75 and result.best_val_accuracy > 0.75
    )  # chance is 0.10 (2,500 images, 3 epochs)
    ckpt = load_checkpoint(f"{result.run_dir}/best.npz")
    assert ckpt.metadata["arch"]["type"] == "cnn" and ckpt.metadata["arch"]["channels"] == [6, 12]
    assert {"1.running_mean", "1.running_var", "5.running_mean", "5.running_var"} <= set(
        ckpt.state
    )  # BatchNorm2D
    import pathlib

    for name in ("weights.png", "curves.png", "confusion.png", "misclassified.png"):
        assert (pathlib.Path(result.run_dir) / name).read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_round_trip_restores_batch_norm_statistics_exactly(tmp_path, rng):
    arch = arch_from_config(TrainConfig(dropout=0.3, **TINY), 10, (28, 28))
    model = build_model(arch, rng)
    model.train()
    for _ in range(3):  # move the running statistics away from their initial 0 and 1
        model.forward(rng.random((16, 1, 28, 28), dtype=np.float32))
    state = {k: v.copy() for k, v in named_state(model).items()}
    assert len(state) == 6 and not np.array_equal(state["1.running_mean"], np.zeros(6, np.float32))
    save_checkpoint(tmp_path / "m.npz", model, {"arch": arch})
    loaded, _ckpt = load_model(tmp_path / "m.npz")
    for name, value in named_state(loaded).items():
        assert np.array_equal(value, state[name]) and value.dtype == np.float32, name
    x = rng.random((7, 1, 28, 28), dtype=np.float32)
    model.eval()
    assert np.array_equal(loaded.forward(x), model.forward(x))  # eval mode uses the restored statistics


def test_a_checkpoint_of_the_unfused_cnn_loads_into_the_fused_one_with_the_same_predictions(tmp_path, rng):
    """Checkpoints written before the fused blocks (a plain Sequential of the same layers) load unchanged
    and predict the same classes, with logits equal to float32 rounding."""
    arch = arch_from_config(TrainConfig(model="cnn"), 10, (28, 28))  # the recipe's architecture
    fused = build_model(arch, rng)
    assert isinstance(fused, FusedSequential) and [n for n, _ in fused.stages[:3]] == [4, 4, 4]
    plain = Sequential(*fused.layers)  # what build_cnn returned before: the same layers, unfused
    plain.train()
    for _ in range(3):  # trained statistics, and γ of both signs
        plain.forward(rng.random((32, 1, 28, 28), dtype=np.float32))
    plain.layers[1].params["gamma"][::3] *= -1
    save_checkpoint(tmp_path / "old.npz", plain, {"arch": arch})
    loaded, _ = load_model(tmp_path / "old.npz")
    assert isinstance(loaded, FusedSequential)
    assert [n for n, _, _ in loaded.parameters()] == [n for n, _, _ in plain.parameters()]
    x = prepare_inputs(arch, load_splits("mnist-sample").test[0][:200])
    plain.eval()
    logits, ref = loaded.forward(x), plain.forward(x)
    assert np.abs(logits - ref).max() <= 1e-4 * np.abs(ref).max()
    assert np.array_equal(logits.argmax(axis=1), ref.argmax(axis=1))


def test_resume_with_dropout_augmentation_adam_and_batch_norm_is_bit_for_bit(tmp_path):
    cfg = dict(epochs=3, limit=300, dropout=0.3, augment=True, optimizer="adam", batch_norm=True)
    straight = train(tiny(tmp_path, "straight", **cfg))
    stopped = train(tiny(tmp_path, "split", **cfg), on_epoch_end=lambda epoch, row: epoch < 1)
    assert stopped.stopped_early and stopped.epochs == 1
    resumed = train(TrainConfig(resume=str(tmp_path / "split"), quiet=True))
    assert resumed.epochs == 3
    for name in ("best.npz", "last.npz"):
        a, b = load_checkpoint(tmp_path / "straight" / name), load_checkpoint(tmp_path / "split" / name)
        for k in a.params:
            assert np.array_equal(a.params[k], b.params[k]), (name, k)
        for k in a.state:
            assert np.array_equal(a.state[k], b.state[k]), (name, k)
    _pa, oa, ra = _arrays(tmp_path / "straight" / "last.npz")
    _pb, ob, rb = _arrays(tmp_path / "split" / "last.npz")
    assert any(k.startswith("exp_avg_sq.") for k in oa) and set(oa) == set(ob)
    for k, v in oa.items():
        assert np.array_equal(v, ob[k]) if isinstance(v, np.ndarray) else v == ob[k], k
    assert ra == rb
    assert resumed.test_accuracy == straight.test_accuracy


def test_dropout_draws_from_the_runs_generator(tmp_path):
    """The Dropout layers hold the generator build_model was given (the one whose state is checkpointed)."""
    rng = np.random.default_rng(5)
    model = build_model(arch_from_config(TrainConfig(dropout=0.5, **TINY), 10, (28, 28)), rng)
    drops = [layer for layer in model if isinstance(layer, Dropout)]
    assert len(drops) == 2 and all(d.rng is rng for d in drops)


def test_evaluate_and_predict_rebuild_the_cnn_from_its_checkpoint(tmp_path):
    from PIL import Image

    result = trained_cnn()
    report = evaluate(result.run_dir)
    assert report.accuracy == result.test_accuracy and report.n == 1000
    X, _y = load_splits("mnist-sample").test
    path = tmp_path / "digit.png"
    Image.fromarray(np.round(X[0] * 255).astype(np.uint8), mode="L").save(path)
    [out] = predict(result.run_dir, [str(path)])
    model, _ckpt = load_model(result.run_dir)
    from handgrad.datasets import load_image

    logits = model.forward(load_image(str(path))[None, None]).astype(np.float64)
    probs = np.exp(logits - logits.max())
    np.testing.assert_allclose(out["probabilities"], (probs / probs.sum())[0], rtol=1e-5, atol=1e-8)
    assert out["prediction"] == int(np.argmax(logits))


def test_mlp_with_dropout_batch_norm_and_augmentation_trains(tmp_path):
    result = train(
        TrainConfig(
            dataset="mnist-sample",
            epochs=3,
            limit=2000,
            hidden=(64,),
            dropout=0.2,
            batch_norm=True,
            augment=True,
            optimizer="adam",
            lr=3e-3,
            out=str(tmp_path / "mlp"),
            plots=False,
            quiet=True,
        )
    )
    assert result.test_accuracy > 0.8
    ckpt = load_checkpoint(tmp_path / "mlp" / "best.npz")
    assert ckpt.metadata["arch"]["dropout"] == 0.2 and ckpt.metadata["arch"]["batch_norm"] is True
    model, _ = load_model(tmp_path / "mlp")
    assert [type(layer) for layer in model][1:4] == [BatchNorm1D, type(model[2]), Dropout]
    assert set(ckpt.state) == {"1.running_mean", "1.running_var"}


def test_plain_mlp_architecture_is_unchanged():
    """No dropout/batch-norm keys when they are off, so checkpoints of earlier versions still match."""
    arch = arch_from_config(TrainConfig(), 10, (28, 28))
    assert set(arch) == {"type", "input_shape", "hidden", "activation", "init", "n_classes"}


def test_patience_stops_a_run_that_no_longer_improves(tmp_path):
    # A learning rate of ~0 leaves the parameters (and so the validation accuracy) as initialised.
    result = train(
        TrainConfig(
            dataset="mnist-sample",
            epochs=5,
            limit=200,
            hidden=(8,),
            optimizer="sgd",
            lr=1e-30,
            patience=2,
            out=str(tmp_path / "p"),
            plots=False,
            quiet=True,
        )
    )
    assert result.stopped_by_patience and result.epochs == 2 and result.best_epoch == 0
    again = train(TrainConfig(resume=str(tmp_path / "p"), quiet=True))  # stays stopped
    assert again.stopped_by_patience and again.epochs == 2


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------


def test_help_shows_the_new_options(capsys):
    code, out, _ = run(capsys, "train", "--help")
    text = " ".join(out.split())
    assert code == 0
    for option in (
        "--model {mlp,cnn,rnn,lstm,gru}",
        "--channels",
        "--dropout P",
        "--batch-norm, --no-batch-norm",
        "--augment, --no-augment",
        "--optimizer {sgd,momentum,adam,adamw,rmsprop,adagrad}",
        "--schedule {constant,cosine,step,exponential}",
        "--lr-step-epochs",
        "--lr-gamma",
        "--patience N",
        "on for cnn",
        "Options given explicitly override the chosen model's defaults",
    ):
        assert option in text, option


@pytest.mark.parametrize(
    "argv, fragment, status",
    [
        (["--dropout", "x"], "argument --dropout: invalid float value: 'x'", 2),
        (["--channels", "a"], "argument --channels: expected comma-separated sizes", 2),
        (["--model", "transformer"], "model must be one of mlp, cnn, rnn, lstm, gru; got 'transformer'", 1),
        (["--dropout", "1"], "dropout must be in [0, 1), got 1.0", 1),
        (["--channels", "16,0"], "channels must be zero or more positive sizes, got (16, 0)", 1),
        (["--patience", "0"], "patience must be a positive integer, got 0", 1),
        (["--lr-gamma", "2"], "lr_gamma must be in (0, 1], got 2.0", 1),
        (["--lr-step-epochs", "0"], "lr_step_epochs must be positive, got 0.0", 1),
        (["--augment-shift", "9"], "augment_shift must be an integer in [0, 8], got 9", 1),
        (
            ["--optimizer", "lbfgs"],
            "optimizer must be one of sgd, momentum, adam, adamw, rmsprop, adagrad",
            1,
        ),
        (
            ["--schedule", "onecycle"],
            "schedule must be one of constant, cosine, step, exponential; got 'onecycle'",
            1,
        ),
        (["--augment-degrees", "-5"], "augment_degrees must be in [0, 180], got -5.0", 1),
    ],
)
def test_bad_option_values_are_one_line_errors(argv, fragment, status, capsys):
    """A malformed value is a usage error (2); a well-formed bad one TrainConfig's ConfigError (1)."""
    code, out, err = run(capsys, "train", *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == status and len(lines) == 1 and lines[0].startswith("handgrad: error: "), err
    assert fragment in lines[0], err
    assert "Traceback" not in err and out == ""


def test_channels_without_the_cnn_is_a_one_line_error(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--channels", "8,16", "--out", str(tmp_path / "x"))
    assert (
        code == 1
        and err.startswith("handgrad: error: ")
        and "--model cnn" in err
        and len(err.splitlines()) == 1
    )


def test_train_model_cnn_from_the_command_line_then_evaluate_and_predict_json(tmp_path, capsys):
    from PIL import Image

    out_dir = tmp_path / "cli"
    code, out, err = run(
        capsys,
        "train",
        "--model",
        "cnn",
        "--dataset",
        "mnist-sample",
        "--limit",
        "300",
        "--epochs",
        "1",
        "--channels",
        "4,8",
        "--hidden",
        "none",
        "--no-augment",
        "--out",
        str(out_dir),
        "--no-plots",
        "--quiet",
    )
    assert code == 0, err
    saved = json.loads((out_dir / "config.json").read_text())
    assert (saved["model"], saved["channels"], saved["hidden"], saved["augment"], saved["optimizer"]) == (
        "cnn",
        [4, 8],
        [],
        False,
        "adam",
    )
    code, out, err = run(capsys, "evaluate", str(out_dir), "--json")
    assert code == 0 and 0.1 < json.loads(out)["accuracy"] <= 1
    X, _ = load_splits("mnist-sample").test
    path = tmp_path / "d.png"
    Image.fromarray(np.round(X[1] * 255).astype(np.uint8), mode="L").save(path)
    code, out, err = run(capsys, "predict", str(out_dir), str(path), "--json")
    [res] = json.loads(out)
    assert code == 0 and math.isclose(sum(res["probabilities"]), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize("elastic", [0.0, 34.0])
def test_the_loops_augmentation_is_augment_batch_with_the_configs_settings(elastic):
    """--augment-shift, --augment-degrees and --augment-elastic reach augment_batch, drawn from the run's
    generator; without the elastic part nothing more is drawn (so earlier runs repeat bit for bit)."""
    from handgrad.app.training import prepare
    from handgrad.ch07_regularization import augment_batch

    config = TrainConfig(
        dataset="mnist-sample",
        model="cnn",
        augment=True,
        augment_shift=1,
        augment_degrees=7.0,
        augment_elastic=elastic,
        limit=64,
        quiet=True,
    ).validate()
    run = prepare(config, None, log=lambda *a: None, say=lambda *a: None, files=False)
    xb, start = run.data.X_train[:16], run.rng.bit_generator.state

    def twin():
        generator = np.random.default_rng()
        generator.bit_generator.state = start
        return generator

    got = run.augment(xb)
    same = twin()
    np.testing.assert_array_equal(got, augment_batch(xb[:, 0], same, 1, 7.0, elastic)[:, None])
    assert run.rng.bit_generator.state == same.bit_generator.state
    plain = augment_batch(xb[:, 0], twin(), 1, 7.0)[:, None]
    assert np.array_equal(got, plain) == (elastic == 0)


def test_augment_elastic_is_checked():
    with pytest.raises(ConfigError, match="augment_elastic"):
        TrainConfig(model="cnn", augment_elastic=-1.0).validate()
