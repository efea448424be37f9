"""``handgrad train --monitor`` (book §11.5): the per-layer statistics against hand computations, the
warnings, and a monitored run that is bit-for-bit the unmonitored one, also when resumed."""

import io
import math

import numpy as np
import pytest

from handgrad.app import TrainConfig, train
from handgrad.app.checkpoint import load_checkpoint
from handgrad.app.models import arch_from_config, build_model, prepare_inputs
from handgrad.app.tools.monitor import COLUMNS, VALIDATION_BATCH, read_monitor
from handgrad.app.training import TrainingHook
from handgrad.ch05_ml_basics import set_all_seeds
from handgrad.datasets import load_splits


def quick(tmp_path, name="run", **kw):
    settings = dict(
        dataset="mnist-sample",
        epochs=2,
        limit=512,
        hidden=(32,),
        out=str(tmp_path / name),
        plots=False,
        quiet=True,
        monitor=True,
    )
    settings.update(kw)
    return TrainConfig(**settings)


def _rows(run_dir, epoch, layer):
    rows = [r for r in read_monitor(f"{run_dir}/monitor.csv") if r["epoch"] == epoch and r["layer"] == layer]
    assert len(rows) == 1
    return rows[0]


def _initial_params(config):
    """The parameters ``train`` starts from, rebuilt independently: the same seed, the same architecture."""
    splits = load_splits(config.dataset)
    arch = arch_from_config(config, splits.n_classes, splits.input_shape)
    return {name: p.copy() for name, p, _ in build_model(arch, set_all_seeds(config.seed)).parameters()}


def test_update_ratio_and_gradient_norm_match_a_hand_computation_on_one_step(tmp_path):
    # One epoch of one step (64 images, batch 64) with plain SGD: Δθ = −lr·g.
    config = quick(tmp_path, epochs=1, limit=64, batch_size=64, optimizer="sgd", lr=0.05)
    train(config, stdout=io.StringIO())
    before = _initial_params(config)
    after = load_checkpoint(tmp_path / "run" / "last.npz").params
    for layer in (0, 2):  # the two Linear layers: W and b together
        names = [f"{layer}.W", f"{layer}.b"]
        step = math.sqrt(sum(np.sum((after[n].astype(np.float64) - before[n]) ** 2) for n in names))
        norm = math.sqrt(sum(np.sum(before[n].astype(np.float64) ** 2) for n in names))
        row = _rows(tmp_path / "run", 1, layer)
        assert row["update_ratio"] == pytest.approx(step / norm, rel=1e-4)
        assert row["update_ratio_last"] == pytest.approx(step / norm, rel=1e-4)
        # ‖g‖ = ‖Δθ‖ / lr up to float32's rounding of θ − lr·g (steps ~1e-4 of |θ|: ~1e-4 relative)
        assert row["grad_norm"] == pytest.approx(step / 0.05, rel=1e-3)
        assert row["kind"] == "Linear" and row["dead_fraction"] is None
    assert _rows(tmp_path / "run", 1, 1)["update_ratio"] is None  # ReLU: no parameters


def test_activations_and_dead_units_match_an_independent_forward_pass(tmp_path):
    config = quick(tmp_path)
    train(config, stdout=io.StringIO())
    params = load_checkpoint(tmp_path / "run" / "last.npz").params
    X = load_splits("mnist-sample").val[0][:VALIDATION_BATCH].reshape(VALIDATION_BATCH, -1).astype(np.float64)
    Z = X @ params["0.W"] + params["0.b"]
    H = np.maximum(Z, 0)
    logits = H @ params["2.W"] + params["2.b"]
    for layer, A in ((0, Z), (1, H), (2, logits)):
        row = _rows(tmp_path / "run", 2, layer)
        assert row["act_mean"] == pytest.approx(A.mean(), rel=1e-4, abs=1e-6)
        assert row["act_std"] == pytest.approx(A.std(), rel=1e-4)
    assert _rows(tmp_path / "run", 2, 1)["dead_fraction"] == pytest.approx(np.mean(H.max(axis=0) <= 0))
    rows = read_monitor(tmp_path / "run" / "monitor.csv")
    assert [(r["epoch"], r["layer"]) for r in rows] == [(e, k) for e in (0, 1, 2) for k in (0, 1, 2)]
    assert all(r["grad_norm"] is None for r in rows if r["epoch"] == 0)  # the initialisation: no steps yet
    header = (tmp_path / "run" / "monitor.csv").read_text().splitlines()[0]
    assert header.split(",") == list(COLUMNS)


def _final(run_dir):
    ckpt = load_checkpoint(f"{run_dir}/last.npz")
    return ckpt.params, ckpt.optimizer_state, ckpt.rng_state


def _same(a, b):
    pa, oa, ra = _final(a)
    pb, ob, rb = _final(b)
    assert ra == rb
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k
    for k, v in oa.items():
        assert np.array_equal(v, ob[k]) if isinstance(v, np.ndarray) else v == ob[k], k


def test_a_monitored_run_is_bit_for_bit_the_plain_one_also_resumed(tmp_path):
    cfg = dict(epochs=3, dropout=0.2, augment=True)  # dropout and augmentation draw from the generator
    train(quick(tmp_path, "plain", monitor=False, **cfg))
    train(quick(tmp_path, "monitored", **cfg))
    _same(tmp_path / "plain", tmp_path / "monitored")
    assert not (tmp_path / "plain" / "monitor.csv").exists()
    train(quick(tmp_path, "split", **cfg), on_epoch_end=lambda epoch, row: epoch < 2)
    train(TrainConfig(resume=str(tmp_path / "split"), quiet=True, plots=False, monitor=True))
    _same(tmp_path / "plain", tmp_path / "split")
    rows = read_monitor(tmp_path / "split" / "monitor.csv")
    assert sorted({r["epoch"] for r in rows}) == [0, 1, 2, 3]
    assert len(rows) == 4 * len({r["layer"] for r in rows})  # each epoch once after the resume
    monitored = read_monitor(tmp_path / "monitored" / "monitor.csv")
    assert [r["update_ratio"] for r in rows] == [r["update_ratio"] for r in monitored]


class KillUnits(TrainingHook):
    """Every hidden unit dead from the start: a bias far below the pre-activations."""

    def start(self, run):
        run.model.layers[0].params["b"][...] = -100.0


def test_warnings_for_dead_units_and_for_update_ratios_far_from_one_percent(tmp_path):
    out = io.StringIO()
    train(quick(tmp_path, "dead", epochs=2, quiet=False), stdout=out, hooks=[KillUnits()])
    lines = [line for line in out.getvalue().splitlines() if line.startswith("warning:")]
    # Two epochs, each warning once per layer and run: no gradient reaches layer 0 through dead units, only
    # weight decay moves it, far under 1e-2 per step.
    assert len(lines) == 2
    assert lines[0].startswith("warning: epoch 1: layer 0 (Linear) changes by ") and "under 1/100" in lines[0]
    assert lines[1].startswith("warning: epoch 1: 100% of the units of layer 1 (ReLU) never fired")
    ratio = float(lines[0].split("changes by ")[1].split()[0])
    assert ratio == pytest.approx(_rows(tmp_path / "dead", 1, 0)["update_ratio"], rel=0.05) and ratio < 1e-4
    assert _rows(tmp_path / "dead", 2, 1)["dead_fraction"] == 1.0

    out = io.StringIO()
    train(quick(tmp_path, "fast", epochs=1, optimizer="sgd", lr=3.0, quiet=False), stdout=out)
    high = [line for line in out.getvalue().splitlines() if line.startswith("warning:")]
    assert [line.split(" changes")[0] for line in high] == [
        "warning: epoch 1: layer 0 (Linear)",
        "warning: epoch 1: layer 2 (Linear)",
    ]
    assert all("over 10×" in line for line in high)
    assert min(_rows(tmp_path / "fast", 1, k)["update_ratio"] for k in (0, 2)) > 0.1


def test_the_monitor_plot_is_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    train(quick(tmp_path, epochs=1, plots=True))
    assert (tmp_path / "run" / "monitor.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_monitor_on_the_cnn_counts_dead_channels(tmp_path):
    config = quick(tmp_path, model="cnn", channels=(4,), hidden=(8,), epochs=1, limit=128, augment=False)
    train(config, stdout=io.StringIO())
    rows = read_monitor(tmp_path / "run" / "monitor.csv")
    kinds = [r["kind"] for r in rows if r["epoch"] == 1]
    assert kinds[:4] == ["Conv2D", "BatchNorm2D", "ReLU", "MaxPool2D"]
    relu = next(r for r in rows if r["epoch"] == 1 and r["kind"] == "ReLU")
    assert relu["dead_fraction"] in (0.0, 0.25, 0.5, 0.75, 1.0)  # a unit is one of the 4 channels
    conv = next(r for r in rows if r["epoch"] == 1 and r["kind"] == "Conv2D")
    assert 0 < conv["update_ratio"] < 1 and conv["grad_norm"] > 0
    splits = load_splits("mnist-sample")
    arch = arch_from_config(config, splits.n_classes, splits.input_shape)
    assert prepare_inputs(arch, splits.val[0][:2]).shape == (2, 1, 28, 28)


def test_the_cli_flag_turns_the_monitor_on_also_for_a_resumed_run(tmp_path, capsys):
    from handgrad import cli

    out = str(tmp_path / "run")
    base = ["train", "--dataset", "mnist-sample", "--limit", "256", "--hidden", "8", "--no-plots", "-q"]
    assert cli.main([*base, "--epochs", "1", "--out", out]) == 0
    assert not (tmp_path / "run" / "monitor.csv").exists()
    assert cli.main(["train", "--resume", out, "--epochs", "2", "--monitor", "-q"]) == 0
    assert "ignored" not in capsys.readouterr().err  # --monitor applies to a resumed run
    assert sorted({r["epoch"] for r in read_monitor(tmp_path / "run" / "monitor.csv")}) == [2]


# ----------------------------------------------------------------------------------------------------
# A character language model: one validation window
# ----------------------------------------------------------------------------------------------------


def _lm(tmp_path, name, **kw):
    """224 characters: 202 for training, 4 streams × 50 = one window of 50, one step an epoch."""
    path = tmp_path / "t.txt"
    if not path.exists():
        rng = np.random.default_rng(0)
        words = ["the ", "cat ", "sat ", "on ", "a ", "mat, ", "and ", "dog ", "ran. "]
        path.write_text("".join(rng.choice(words) for _ in range(200))[:224], encoding="utf-8")
    settings = dict(
        model="lstm",
        text=str(path),
        batch_size=4,
        seq_len=50,
        hidden=(16,),
        embedding_dim=8,
        eval_batch_size=3,
        epochs=1,
        optimizer="sgd",
        lr=0.5,
        out=str(tmp_path / name),
        plots=False,
        quiet=True,
        monitor=True,
    )
    settings.update(kw)
    return TrainConfig(**settings)


def test_a_language_models_update_ratio_matches_a_hand_computation_on_one_step(tmp_path):
    from handgrad.app.language_model import load_corpus, stream_layout
    from handgrad.app.models import char_arch

    config = _lm(tmp_path, "run")
    train(config, stdout=io.StringIO())
    splits = load_corpus(config)
    assert len(splits.train) == 202  # (202 − 1) // 4 = 50 characters a stream: one window, one step
    arch = char_arch("lstm", len(splits.vocab), 8, (16,))
    model = build_model(arch, set_all_seeds(config.seed))
    before = {name: p.astype(np.float64) for name, p, _ in model.parameters()}
    after = load_checkpoint(tmp_path / "run" / "last.npz").params
    rows = [r for r in read_monitor(tmp_path / "run" / "monitor.csv") if r["epoch"] == 1]
    assert [r["kind"] for r in rows] == ["Embedding", "LSTM", "TimeDistributed"]
    for layer, row in enumerate(rows):
        names = [n for n in before if n.split(".")[0] == str(layer)]
        step = math.sqrt(sum(np.sum((after[n] - before[n]) ** 2) for n in names))
        norm = math.sqrt(sum(np.sum(before[n] ** 2) for n in names))
        assert row["update_ratio"] == pytest.approx(step / norm, rel=1e-4) and 0 < step / norm < 1
        assert row["update_ratio_last"] == row["update_ratio"]
        # plain SGD, no weight decay: Δθ = −lr·g, the gradient as clipped (at 5) and handed to the optimiser
        assert row["grad_norm"] == pytest.approx(step / 0.5, rel=1e-3)
        assert row["dead_fraction"] is None  # no ReLU layer
    # The activations: the first validation window, 3 streams (eval_batch_size) × (11 − 1) // 3 = 3
    window = stream_layout(splits.val, 3)[0][:, :50]
    assert window.shape == (3, 3)
    embedded = after["0.W"].astype(np.float64)[window]
    assert rows[0]["act_mean"] == pytest.approx(embedded.mean(), rel=1e-4, abs=1e-7)
    assert rows[0]["act_std"] == pytest.approx(embedded.std(), rel=1e-4)


def test_a_monitored_language_model_is_bit_for_bit_the_plain_one(tmp_path):
    train(_lm(tmp_path, "plain", epochs=3, monitor=False, optimizer="adam", lr=0.01))
    train(_lm(tmp_path, "monitored", epochs=3, optimizer="adam", lr=0.01))
    _same(tmp_path / "plain", tmp_path / "monitored")
    rows = read_monitor(tmp_path / "monitored" / "monitor.csv")
    assert [(r["epoch"], r["layer"]) for r in rows] == [(e, k) for e in range(4) for k in range(3)]
    assert all(r["grad_norm"] > 0 for r in rows if r["epoch"] > 0)
