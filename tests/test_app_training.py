"""The training loop end to end on real digits: learning, outputs, resume equivalence, NaN guard, fallback."""

import csv
import functools
import json
import re
import tempfile

import numpy as np
import pytest
from conftest import real_data_dir
from sklearn import metrics as skm

from handgrad.app import ConfigError, TrainConfig, TrainingDiverged, train
from handgrad.app.checkpoint import load_checkpoint
from handgrad.datasets import DatasetNotFoundError, load_splits


def quick(tmp_path, name="run", **kw):
    """A small, fast configuration on the bundled real digits (no plots, no output)."""
    settings = dict(
        dataset="mnist-sample",
        epochs=2,
        limit=1000,
        hidden=(32,),
        out=str(tmp_path / name),
        plots=False,
        quiet=True,
    )
    settings.update(kw)
    return TrainConfig(**settings)


@functools.cache
def trained_run():
    """One model trained for a few epochs on mnist-sample, shared by the app and CLI tests (cached)."""
    out = tempfile.mkdtemp(prefix="handgrad-test-run-")
    config = TrainConfig(
        dataset="mnist-sample", epochs=3, hidden=(128,), out=out + "/run", plots=True, quiet=True
    )
    return train(config, stdout=open("/dev/null", "w"))


def mlp_forward(params, X):
    """The MLP's logits computed independently of the library's layers."""
    h = np.maximum(X.reshape(len(X), -1) @ params["0.W"] + params["0.b"], 0)
    return h @ params["2.W"] + params["2.b"]


# --------------------------------------------------------------------------------------------------


def test_end_to_end_learns_and_writes_every_output():
    result = trained_run()
    run = __import__("pathlib").Path(result.run_dir)
    h = result.history
    assert [r["epoch"] for r in h] == [1, 2, 3]
    assert h[-1]["train_loss"] < 0.6 * h[0]["train_loss"]  # the loss falls
    assert h[-1]["train_accuracy"] > h[0]["train_accuracy"]  # accuracy rises
    assert result.test_accuracy > 0.85 and result.best_val_accuracy > 0.85  # chance is 0.10
    assert result.dataset == "mnist-sample" and not result.fell_back
    for name in (
        "best.npz",
        "last.npz",
        "metrics.csv",
        "config.json",
        "curves.png",
        "confusion.png",
        "misclassified.png",
        "weights.png",
    ):
        assert (run / name).is_file(), name
    for png in run.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[-1]["val_accuracy"]) == pytest.approx(h[-1]["val_accuracy"])
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "mnist-sample" and config["hidden"] == [128] and config["lr"] == 0.2


def test_reported_metrics_match_an_independent_computation():
    result = trained_run()
    best = load_checkpoint(result.run_dir + "/best.npz")
    assert best.metadata["epoch"] == result.best_epoch
    assert best.metadata["metrics"]["val_accuracy"] == max(r["val_accuracy"] for r in result.history)
    X, y = load_splits("mnist-sample").test
    pred = mlp_forward(best.params, X).argmax(axis=1)
    assert result.test_accuracy == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert result.test_macro_f1 == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    logits = mlp_forward(best.params, X).astype(np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert result.test_loss == pytest.approx(-logp[np.arange(len(y)), y].mean(), rel=1e-4)


def test_defaults_are_the_reference_configuration():
    c = TrainConfig()
    assert (c.dataset, c.epochs, c.batch_size, c.hidden, c.activation) == (None, 20, 256, (512,), "relu")
    assert (c.optimizer, c.lr, c.momentum, c.nesterov, c.weight_decay, c.schedule) == (
        "momentum",
        0.2,
        0.9,
        False,
        1e-4,
        "constant",
    )


def _arrays(path):
    ckpt = load_checkpoint(path)
    return ckpt.params, ckpt.optimizer_state, ckpt.rng_state


def _assert_same_run(dir_a, dir_b):
    for name in ("best.npz", "last.npz"):
        pa, oa, ra = _arrays(f"{dir_a}/{name}")
        pb, ob, rb = _arrays(f"{dir_b}/{name}")
        for k in pa:
            assert np.array_equal(pa[k], pb[k]), f"{name} {k}"
    assert set(oa) == set(ob) and any(k.startswith("velocity.") for k in oa)
    for k, v in oa.items():
        assert np.array_equal(v, ob[k]) if isinstance(v, np.ndarray) else v == ob[k], k
    assert ra == rb


def test_resume_is_bit_for_bit_the_uninterrupted_run(tmp_path):
    straight = train(quick(tmp_path, "straight", epochs=4))
    train(quick(tmp_path, "split", epochs=2))
    resumed = train(TrainConfig(resume=str(tmp_path / "split"), epochs=4, quiet=True))
    _assert_same_run(tmp_path / "straight", tmp_path / "split")
    assert resumed.epochs == 4
    timings = ("seconds", "train_seconds")
    drop = lambda rows: [{k: v for k, v in r.items() if k not in timings} for r in rows]  # noqa: E731
    assert drop(resumed.history) == drop(straight.history)
    assert resumed.test_accuracy == straight.test_accuracy
    rows = list(csv.DictReader((tmp_path / "split" / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]


def test_resume_after_interruption_with_cosine_schedule_and_nesterov(tmp_path):
    cfg = dict(epochs=4, schedule="cosine", warmup_epochs=1, nesterov=True, limit=700)
    train(quick(tmp_path, "straight", **cfg))
    stopped = train(quick(tmp_path, "split", **cfg), on_epoch_end=lambda epoch, row: epoch < 2)
    assert stopped.stopped_early and stopped.epochs == 2
    train(TrainConfig(resume=str(tmp_path / "split"), epochs=None, quiet=True))  # to the configured 4
    _assert_same_run(tmp_path / "straight", tmp_path / "split")


def test_resume_rejects_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(ConfigError, match="no such run folder"):
        train(TrainConfig(resume=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"config.json not found"):
        train(TrainConfig(resume=str(tmp_path / "empty")))


def test_resume_refuses_a_run_whose_epochs_had_another_number_of_steps(tmp_path):
    """last.npz counts the steps; a config.json edited to another batch size no longer fits them."""
    from handgrad.app.checkpoint import CheckpointError

    train(quick(tmp_path, "r", epochs=1, limit=300, batch_size=64))  # 4 steps an epoch (the limit is 300)
    config_path = tmp_path / "r" / "config.json"
    config_path.write_text(config_path.read_text().replace('"batch_size": 64', '"batch_size": 100'))
    with pytest.raises(CheckpointError, match=r"saved step count does not match .* batches of 100; was the"):
        train(TrainConfig(resume=str(tmp_path / "r"), epochs=2, quiet=True))


def test_out_folder_holding_a_run_is_not_overwritten(tmp_path):
    train(quick(tmp_path, "r", epochs=1, limit=300))
    with pytest.raises(ConfigError, match=r"already holds a run.*--resume"):
        train(quick(tmp_path, "r", epochs=1, limit=300))


def test_nan_guard_names_epoch_and_batch_and_keeps_best(tmp_path):
    with pytest.raises(TrainingDiverged) as info:
        train(quick(tmp_path, "nan", lr=1e6, epochs=5))
    msg = str(info.value)
    m = re.search(r"at epoch (\d+), batch (\d+) of (\d+); try a lower learning rate", msg)
    assert m and (int(m[1]), int(m[2])) == (info.value.epoch, info.value.batch)
    assert "best.npz" in msg
    best = load_checkpoint(tmp_path / "nan" / "best.npz")  # still a valid checkpoint
    assert all(np.all(np.isfinite(p)) for p in best.params.values())


def test_falls_back_to_the_bundled_sample_when_mnist_is_missing(tmp_path, monkeypatch, capsys):
    import handgrad.datasets.download as dl

    monkeypatch.delenv("HANDGRAD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise DatasetNotFoundError("no network")

    monkeypatch.setattr(dl, "download_file", offline)
    result = train(
        TrainConfig(
            epochs=1,
            limit=300,
            hidden=(16,),
            out=str(tmp_path / "fb"),
            plots=False,
            data_dir=str(tmp_path / "nodata"),
        )
    )
    out = capsys.readouterr().out
    assert result.fell_back and result.dataset == "mnist-sample"
    assert "HANDGRAD_DATA" in out and "--data-dir" in out and "network" in out
    assert json.loads((tmp_path / "fb" / "config.json").read_text())["dataset"] == "mnist-sample"
    with pytest.raises(DatasetNotFoundError):  # a named dataset never falls back
        train(
            TrainConfig(
                dataset="mnist", epochs=1, out=str(tmp_path / "named"), data_dir=str(tmp_path / "nodata")
            )
        )


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(epochs=0), "epochs"),
        (dict(lr=-0.1), "lr"),
        (dict(hidden=()), "hidden"),
        (dict(activation="gelu"), "activation"),
        (dict(momentum=1.0), "momentum"),
        (dict(optimizer="sgd", nesterov=True), "nesterov"),
        (dict(limit=0), "limit"),
        (dict(warmup_epochs=30), "warmup_epochs"),
        (dict(schedule="linear"), "schedule"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_settings_are_config_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**change).validate()


def test_limit_on_full_mnist_learns():
    """A small subset of the real MNIST files, as ``--limit`` would give (val and test stay whole)."""
    data_dir = real_data_dir()
    import pathlib

    out = pathlib.Path(tempfile.mkdtemp(prefix="handgrad-test-limit-"))
    result = train(
        TrainConfig(
            dataset="mnist",
            data_dir=data_dir,
            epochs=3,
            limit=4000,
            hidden=(64,),
            out=str(out / "run"),
            plots=False,
            quiet=True,
        )
    )
    assert result.dataset == "mnist" and result.test_accuracy > 0.85
    best = load_checkpoint(out / "run" / "best.npz")
    assert best.metadata["config"]["limit"] == 4000


def test_resuming_a_finished_run_only_reports(tmp_path):
    first = train(quick(tmp_path, "done", epochs=1, limit=300))
    again = train(TrainConfig(resume=str(tmp_path / "done"), epochs=None, quiet=True))
    assert again.epochs == 1 and again.best_epoch == first.best_epoch
    assert again.test_accuracy == first.test_accuracy


def test_config_round_trips_through_json_and_ignores_unknown_keys(tmp_path):
    c = TrainConfig(dataset="fashion-mnist", hidden=(256, 128), nesterov=True, schedule="cosine")
    c.save(tmp_path / "config.json")
    assert TrainConfig.load(tmp_path / "config.json") == c
    assert TrainConfig.from_dict({**c.to_dict(), "an_option_from_a_later_version": 0.5}) == c


def test_patience_stops_early_and_a_resumed_run_that_had_stopped_stays_stopped(tmp_path):
    # lr 1e-12 leaves every prediction as it was: no epoch beats epoch 0's validation accuracy.
    first = train(quick(tmp_path, "p", optimizer="sgd", lr=1e-12, patience=2, epochs=5))
    assert first.stopped_by_patience and not first.stopped_early
    assert (first.epochs, first.best_epoch) == (2, 0)
    assert load_checkpoint(tmp_path / "p" / "last.npz").metadata["epoch"] == 2
    again = train(TrainConfig(resume=str(tmp_path / "p"), epochs=8, quiet=True))
    assert again.stopped_by_patience and (again.epochs, again.best_epoch) == (2, 0)
    assert again.test_accuracy == first.test_accuracy
    learning = train(quick(tmp_path, "q", patience=1, epochs=3))  # improves every epoch: runs to the end
    assert not learning.stopped_by_patience and learning.epochs == 3


def test_per_epoch_line_labels_test_accuracy_as_monitoring(tmp_path):
    import io

    buf = io.StringIO()
    result = train(quick(tmp_path, "m", quiet=False, epochs=1, limit=300), stdout=buf)
    line = next(line for line in buf.getvalue().splitlines() if line.startswith("epoch 1/1"))
    assert f"test acc (monitor) {100 * result.history[0]['test_accuracy']:.2f}%" in line
    assert f"val loss {result.history[0]['val_loss']:.4f}" in line


def _failing_save(monkeypatch, at_epoch, name, error):
    """Make the run's checkpoint writer raise ``error`` when it writes ``name`` for ``at_epoch``."""
    import handgrad.app.training as training

    real = training.save_checkpoint

    def save(path, model, metadata, *args, **kwargs):
        if metadata["epoch"] == at_epoch and str(path).endswith(name):
            raise error
        return real(path, model, metadata, *args, **kwargs)

    monkeypatch.setattr(training, "save_checkpoint", save)


def test_a_checkpoint_that_cannot_be_written_says_what_is_intact_and_the_run_resumes(tmp_path, monkeypatch):
    import errno

    from handgrad.app import CheckpointError

    _failing_save(monkeypatch, 2, "last.npz", OSError(errno.ENOSPC, "No space left on device"))
    run = tmp_path / "full"
    with pytest.raises(CheckpointError) as info:
        train(quick(tmp_path, "full", epochs=3))
    best = load_checkpoint(run / "best.npz").metadata["epoch"]
    assert best == 2  # written just before last.npz failed
    assert str(info.value) == (
        f"cannot write {run / 'last.npz'}: No space left on device; "
        f"{run / 'best.npz'} (epoch 2) and last.npz (epoch 1) are intact; "
        f"free space and continue with --resume {run}"
    )
    assert info.value.path == str(run / "last.npz")
    assert load_checkpoint(run / "last.npz").metadata["epoch"] == 1  # the previous one, intact
    monkeypatch.undo()
    resumed = train(TrainConfig(resume=str(run), quiet=True))
    straight = train(quick(tmp_path, "straight", epochs=3))
    assert resumed.epochs == 3 and resumed.test_accuracy == straight.test_accuracy


def test_a_full_disk_in_the_real_writer_gives_the_same_one_line(tmp_path, monkeypatch):
    """Through save_checkpoint itself: fsync fails with ENOSPC while last.npz of epoch 2 is written."""
    import errno
    import os

    from handgrad.app import CheckpointError

    real_fsync, calls = os.fsync, []

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".last.npz."):
            calls.append(fd)
            if len(calls) == 3:  # last.npz of epochs 0 and 1 are written; that of epoch 2 fails
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run = tmp_path / "disk"
    with pytest.raises(CheckpointError) as info:
        train(quick(tmp_path, "disk", epochs=3, limit=600))
    monkeypatch.undo()
    assert isinstance(info.value, CheckpointError)
    message = str(info.value)
    assert "\n" not in message and message.startswith(
        f"cannot write {run / 'last.npz'}: No space left on device; "
    )
    assert "last.npz (epoch 1)" in message
    assert message.endswith(f"are intact; free space and continue with --resume {run}")
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_a_failed_write_from_the_checkpoint_module_keeps_its_message(tmp_path, monkeypatch):
    from handgrad.app import CheckpointError

    error = CheckpointError(f"cannot write {tmp_path / 'c' / 'best.npz'}: Read-only file system")
    error.path = str(tmp_path / "c" / "best.npz")
    _failing_save(monkeypatch, 0, "best.npz", error)
    with pytest.raises(CheckpointError) as info:
        train(quick(tmp_path, "c", epochs=1, limit=300))
    assert str(info.value) == (
        f"cannot write {tmp_path / 'c' / 'best.npz'}: Read-only file system; "
        "no checkpoint was written yet; free space and start the run again with a new "
        "--out"
    )
