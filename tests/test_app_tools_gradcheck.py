"""``handgrad gradcheck`` (book §11.5): passes on every registered model type, fails on a broken backward."""

import json

import numpy as np
import pytest

from handgrad import cli
from handgrad.app import ConfigError, TrainConfig
from handgrad.app.models import MODEL_TYPES, build_model, cnn_arch, mlp_arch
from handgrad.app.tools.gradcheck import TOLERANCE, format_gradcheck, gradcheck, relative_error
from handgrad.ch06_feedforward import Linear, ReLU
from handgrad.ch09_convolution import Conv2D, ConvBNReLUPool

# A small configuration of every image model type the registry holds (a new type must add one here).
SMALL = {
    "mlp": dict(hidden=(16,)),
    "cnn": dict(channels=(4, 6), hidden=(8,)),
    "rnn": dict(hidden=(6,)),
    "lstm": dict(hidden=(5,)),
    "gru": dict(hidden=(5,)),
}


def small(model, **kw):
    return TrainConfig(dataset="mnist-sample", model=model, **{**SMALL[model], **kw})


def test_every_registered_model_type_has_a_small_configuration():
    images = {name for name, t in MODEL_TYPES.items() if t.input_kind == "images"}
    assert set(SMALL) == images and images >= {"mlp", "cnn", "rnn", "lstm", "gru"}
    # the language models (char-rnn, char-lstm, char-gru) are checked on a text below
    assert {t.input_kind for t in MODEL_TYPES.values()} == {"images", "text"}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_passes_on_every_language_model(tmp_path, cell):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    config = TrainConfig(model=cell, text=str(corpus), hidden=(5,), embedding_dim=4)
    result = gradcheck(config, log=lambda _msg: None)
    assert result.passed and result.max_error < 1e-6, format_gradcheck(result)
    assert result.params[0]["name"] == "0.W"  # the embedding table is checked too


def test_the_command_checks_a_language_model(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question. " * 30, encoding="utf-8")
    argv = ["gradcheck", "--model", "gru", "--text", str(corpus), "--hidden", "4", "--embedding-dim", "3"]
    code = cli.main([*argv, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["passed"] and report["model"].startswith("char-gru")


def test_a_broken_recurrent_backward_fails_for_a_language_model(tmp_path, monkeypatch):
    from handgrad.ch10_sequence import LSTM

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcabcabd " * 60, encoding="utf-8")
    original = LSTM.backward

    def broken(self, *args, **kwargs):
        dX = original(self, *args, **kwargs)
        for g in self.grads.values():
            g *= 1.01
        return dX

    monkeypatch.setattr(LSTM, "backward", broken)
    result = gradcheck(TrainConfig(model="lstm", text=str(corpus), hidden=(4,), embedding_dim=3))
    assert not result.passed and result.max_error > 100 * TOLERANCE


@pytest.mark.parametrize("model", sorted(SMALL))
@pytest.mark.parametrize("batch_norm", [False, True])
def test_passes_on_every_model_type(model, batch_norm):
    result = gradcheck(small(model, batch_norm=batch_norm, dropout=0.5))  # dropout is left out
    assert result.passed and result.max_error < 1e-6 < TOLERANCE
    names = [p["name"] for p in result.params]
    model_ = build_model(
        MODEL_TYPES[model].from_config(small(model, batch_norm=batch_norm, dropout=0.0), (28, 28), 10)
    )
    assert names == [name for name, _, _ in model_.parameters()]  # every parameter array is checked
    for p in result.params:
        assert p["checked"] == min(p["size"], 12)


def test_the_float64_model_is_the_float32_one_in_double_precision():
    for arch in (mlp_arch(hidden=[8], batch_norm=True), cnn_arch(channels=[3], hidden=[5])):
        m32, m64 = build_model(arch, 7), build_model(arch, 7, dtype=np.float64)
        for (n32, p32, _), (n64, p64, g64) in zip(m32.parameters(), m64.parameters()):
            assert n32 == n64 and p32.dtype == np.float32 and p64.dtype == g64.dtype == np.float64
            np.testing.assert_array_equal(p64.astype(np.float32), p32)
    with pytest.raises(ValueError, match="float32 or float64"):
        build_model(mlp_arch(), 0, dtype=np.int32)


# The CNN with batch norm runs each Conv2D → BatchNorm2D → ReLU → MaxPool2D as one fused block, so its
# convolutions' backward is the block's; without batch norm it is Conv2D's own.
@pytest.mark.parametrize(
    "model, layer, options",
    [
        ("mlp", Linear, {}),
        ("cnn", ConvBNReLUPool, {}),
        ("cnn", Conv2D, {"batch_norm": False}),
        ("cnn", ReLU, {}),
    ],
)
def test_fails_when_a_backward_pass_is_broken(monkeypatch, model, layer, options):
    original = layer.backward

    def broken(self, dY):
        dX = original(self, dY)
        for g in self.grads.values():
            g *= 1.01  # a 1% error in the parameter gradients
        return None if dX is None else dX * (0.9 if layer is ReLU else 1.0)

    monkeypatch.setattr(layer, "backward", broken)
    result = gradcheck(small(model, **options))
    assert not result.passed and result.max_error > 100 * TOLERANCE


def test_relative_error_is_scale_free_with_a_floor():
    assert relative_error([1.0, 2.0], [1.0, 2.002]) == pytest.approx(0.002 / 2.002)
    assert relative_error([1e-6, 2e-6], [1e-6, 2.002e-6]) == pytest.approx(0.002 / 2.002)
    assert relative_error([0.0], [2e-10], floor=1e-3) == pytest.approx(2e-7)


def test_cli_prints_each_parameter_and_exits_1_when_broken(monkeypatch, capsys):
    argv = ["gradcheck", "--dataset", "mnist-sample", "--hidden", "8", "--examples", "3"]
    assert cli.main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in out["params"]] == ["0.W", "0.b", "2.W", "2.b"] and out["passed"]
    assert out["examples"] == 3 and out["max_error"] < 1e-6

    original = Linear.backward
    monkeypatch.setattr(Linear, "backward", lambda self, dY: (original(self, dY), self.grads["b"].fill(0))[0])
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "0.b" in captured.out and "FAIL" in captured.out and "gradient check FAILED" in captured.out
    assert captured.err.startswith("handgrad: error: gradient check failed: ")
    assert captured.err.count("\n") == 1


@pytest.mark.parametrize(
    "kw, message",
    [(dict(examples=0), "examples"), (dict(entries=-1), "entries"), (dict(tolerance=2.0), "tolerance")],
)
def test_bad_settings_are_one_line_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        gradcheck(small("mlp"), **kw)
