"""Checkpoints: round trip, atomic writes (a killed writer leaves the previous file intact), validation."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

from handgrad.app import checkpoint as ck
from handgrad.app.checkpoint import CheckpointError, load_checkpoint, load_model, restore_into, save_checkpoint
from handgrad.app.models import MODEL_TYPES, ModelType, build_model, mlp_arch, named_params, register_model_type
from handgrad.ch06_feedforward import Layer, Linear, Sequential
from handgrad.ch08_optimization import Momentum


def small_model(seed=0, hidden=(16,)):
    arch = mlp_arch(hidden, "relu", 10)
    return arch, build_model(arch, np.random.default_rng(seed))


def trained_state(model, steps=3):
    """An optimiser with non-trivial velocities after a few steps on random gradients."""
    opt = Momentum(0.1, beta=0.9, nesterov=True)
    params = named_params(model)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        grads = {k: rng.standard_normal(p.shape).astype(np.float32) for k, p in params.items()}
        opt.step(params, grads)
    return opt


def test_round_trip_params_metadata_optimizer_and_rng(tmp_path):
    arch, model = small_model()
    opt = trained_state(model)
    rng = np.random.default_rng(7)
    rng.random(5)
    meta = {"arch": arch, "dataset": "mnist-sample", "classes": list("0123456789"), "epoch": 3,
            "metrics": {"val_accuracy": 0.9, "val_loss": float("nan")}, "history": [{"epoch": 1, "x": 1.5}]}
    path = save_checkpoint(tmp_path / "c.npz", model, meta, opt.state_dict(), rng.bit_generator.state)

    loaded = load_checkpoint(path)
    params, metadata = loaded[:2]
    own = named_params(model)
    assert set(params) == set(own) == {"0.W", "0.b", "2.W", "2.b"}
    for k in own:
        assert params[k].dtype == np.float32
        assert np.array_equal(params[k], own[k])
    assert metadata["arch"] == arch and metadata["epoch"] == 3 and metadata["history"] == meta["history"]
    assert np.isnan(metadata["metrics"]["val_loss"])
    assert loaded.rng_state == rng.bit_generator.state

    opt2 = Momentum(0.5)
    opt2.load_state_dict(loaded.optimizer_state)
    assert (opt2.lr, opt2.beta, opt2.nesterov, opt2.t) == (0.1, 0.9, True, 3)
    for k, v in opt.state["velocity"].items():
        assert np.array_equal(opt2.state["velocity"][k], v)

    g = np.random.default_rng(0)
    g.bit_generator.state = loaded.rng_state
    assert np.array_equal(g.random(4), rng.random(4))


def test_restored_model_computes_the_same_outputs(tmp_path):
    arch, model = small_model(seed=0)
    save_checkpoint(tmp_path / "c.npz", model, {"arch": arch})
    other = build_model(arch, np.random.default_rng(99))
    x = np.random.default_rng(2).random((5, 784), dtype=np.float32)
    assert not np.array_equal(other.forward(x), model.forward(x))
    restore_into(other, load_checkpoint(tmp_path / "c.npz"))
    assert np.array_equal(other.forward(x), model.forward(x))
    loaded, _ = load_model(tmp_path / "c.npz")
    assert np.array_equal(loaded.forward(x), model.forward(x))


def test_file_is_plain_npz_without_pickles(tmp_path):
    arch, model = small_model()
    save_checkpoint(tmp_path / "c.npz", model, {"arch": arch, "epoch": 1})
    with np.load(tmp_path / "c.npz", allow_pickle=False) as data:
        assert set(data.files) == {"__handgrad__", "param/0.W", "param/0.b", "param/2.W", "param/2.b"}
        header = json.loads(data["__handgrad__"].tobytes().decode())
    assert header["format"] == "handgrad-checkpoint" and header["metadata"]["epoch"] == 1


# --------------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------------


def _all_equal(params, value):
    return all(np.all(p == value) for p in params.values())


def _fill(model, value):
    for p in named_params(model).values():
        p[...] = value


def test_failed_replace_keeps_previous_checkpoint(tmp_path, monkeypatch):
    arch, model = small_model()
    _fill(model, 1.0)
    save_checkpoint(tmp_path / "c.npz", model, {"arch": arch, "v": 1})
    _fill(model, 2.0)

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(ck.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "c.npz", model, {"arch": arch, "v": 2})
    monkeypatch.undo()
    loaded = load_checkpoint(tmp_path / "c.npz")
    assert loaded.metadata["v"] == 1 and _all_equal(loaded.params, 1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]  # the temporary file was removed


def test_writer_dying_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    arch, model = small_model()
    _fill(model, 1.0)
    save_checkpoint(tmp_path / "c.npz", model, {"arch": arch, "v": 1})
    real_savez = np.savez

    def half_then_die(file, **arrays):
        real_savez(file, **arrays)
        file.truncate(file.tell() // 2)  # half of the bytes made it to disk
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.np, "savez", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "c.npz", model, {"arch": arch, "v": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "c.npz").metadata["v"] == 1


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from handgrad.app.checkpoint import save_checkpoint
    from handgrad.app.models import build_model, mlp_arch, named_params
    arch = mlp_arch([1024], "relu", 10)
    model = build_model(arch, 0)
    k = 0
    while True:
        k += 1
        for p in named_params(model).values():
            p[...] = k
        save_checkpoint(sys.argv[1], model, {"arch": arch, "k": k})
        if k == 1:
            print("ready", flush=True)
""")


def test_killed_writer_never_leaves_a_broken_checkpoint(tmp_path):
    """A subprocess rewrites a 3 MB checkpoint in a loop and is SIGKILLed at arbitrary moments."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    target = tmp_path / "c.npz"
    seen = set()
    for delay in (0.0, 0.013, 0.029, 0.051, 0.11):
        proc = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        loaded = load_checkpoint(target)  # must never raise
        k = loaded.metadata["k"]
        assert _all_equal(loaded.params, float(k))
        seen.add(k)
    assert max(seen) >= 1


# --------------------------------------------------------------------------------------------------
# Validation: every bad file is a CheckpointError with a useful message
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path):
    arch, model = small_model()
    path = save_checkpoint(tmp_path / "good.npz", model, {"arch": arch})
    return path, arch, model


def _rewrite(src, dst, edit_header=None, edit_arrays=None):
    with np.load(src, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(arrays["__handgrad__"].tobytes().decode())
    if edit_header:
        edit_header(header)
    if edit_arrays:
        edit_arrays(arrays)
    arrays["__handgrad__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(dst, **arrays)
    return dst


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="folder without best.npz"):
        load_checkpoint(tmp_path)


def test_run_folder_means_its_best_checkpoint(tmp_path):
    arch, model = small_model()
    save_checkpoint(tmp_path / "best.npz", model, {"arch": arch, "which": "best"})
    assert load_checkpoint(tmp_path).metadata["which"] == "best"


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"hello, not a checkpoint\n", "not an .npz archive"),
    (b"\x93NUMPY" + b"\x00" * 100, "not an .npz archive"),
])
def test_non_checkpoint_files(tmp_path, content, message):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_npz_that_is_not_a_checkpoint(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a handgrad checkpoint"):
        load_checkpoint(tmp_path / "x.npz")


def test_truncated_checkpoint(good, tmp_path):
    path = good[0]
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable .npz"):
        load_checkpoint(tmp_path / "cut.npz")


def test_pickled_arrays_are_refused_not_unpickled(good, tmp_path):
    def add_object(arrays):
        arrays["param/0.W"] = np.array([{"evil": 1}], dtype=object)

    _rewrite(good[0], tmp_path / "p.npz", edit_arrays=add_object)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "p.npz")


def test_other_architecture_in_metadata(good, tmp_path):
    def widen(header):
        header["metadata"]["arch"]["hidden"] = [32]

    _rewrite(good[0], tmp_path / "a.npz", edit_header=widen)
    with pytest.raises(CheckpointError, match=r"'0.W' has shape \(784, 16\).*needs \(784, 32\)"):
        load_checkpoint(tmp_path / "a.npz")


def test_unknown_model_type(good, tmp_path):
    def cnn(header):
        header["metadata"]["arch"] = {"type": "transformer"}

    _rewrite(good[0], tmp_path / "t.npz", edit_header=cnn)
    with pytest.raises(CheckpointError, match="unknown model type 'transformer'"):
        load_checkpoint(tmp_path / "t.npz")


def test_missing_and_unexpected_arrays(good, tmp_path):
    _rewrite(good[0], tmp_path / "m.npz", edit_arrays=lambda a: a.pop("param/2.b"))
    with pytest.raises(CheckpointError, match=r"missing parameters \['2.b'\]"):
        load_checkpoint(tmp_path / "m.npz")
    _rewrite(good[0], tmp_path / "u.npz", edit_arrays=lambda a: a.update({"param/9.W": np.zeros(2, np.float32)}))
    with pytest.raises(CheckpointError, match=r"unexpected parameters \['9.W'\]"):
        load_checkpoint(tmp_path / "u.npz")


def test_wrong_dtype(good, tmp_path):
    _rewrite(good[0], tmp_path / "d.npz", edit_arrays=lambda a: a.update({"param/0.b": a["param/0.b"].astype(np.float64)}))
    with pytest.raises(CheckpointError, match="float64"):
        load_checkpoint(tmp_path / "d.npz")


def test_other_format_version_and_damaged_header(good, tmp_path):
    _rewrite(good[0], tmp_path / "v.npz", edit_header=lambda h: h.update(format_version=99))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "v.npz")

    def damage(arrays):
        arrays["__handgrad__"] = np.frombuffer(b"{not json", np.uint8)

    with np.load(good[0]) as data:
        arrays = {k: data[k] for k in data.files}
    damage(arrays)
    np.savez(tmp_path / "h.npz", **arrays)
    with pytest.raises(CheckpointError, match="damaged checkpoint header"):
        load_checkpoint(tmp_path / "h.npz")


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


# --------------------------------------------------------------------------------------------------
# The layer-state convention: non-trained arrays in ``layer.state`` are saved and restored too
# --------------------------------------------------------------------------------------------------


class RunningMean(Layer):
    """A stand-in for batch normalisation: an identity whose ``state`` tracks the mean of its inputs."""

    def __init__(self, n):
        super().__init__()
        self.state = {"running_mean": np.zeros(n, np.float32), "count": np.zeros((), np.int64)}

    def forward(self, X):
        if self.training:
            self.state["running_mean"] += X.mean(axis=0)
            self.state["count"] += 1
        return X

    def backward(self, dY):
        return dY


def test_layer_state_is_saved_and_restored(tmp_path):
    def build(arch, rng):
        return Sequential(Linear(4, 3, rng=rng), RunningMean(3), Linear(3, 2, rng=rng))

    register_model_type(ModelType(
        name="test-stateful", defaults={}, build=build, validate=lambda arch: None, from_config=None,
        describe=lambda arch: "test", prepare_inputs=lambda arch, X: X.reshape(len(X), -1),
        count_parameters=lambda arch: 4 * 3 + 3 + 3 + 1 + 3 * 2 + 2))
    try:
        arch = {"type": "test-stateful"}
        model = build_model(arch, 0)
        model.forward(np.ones((5, 4), np.float32))
        save_checkpoint(tmp_path / "s.npz", model, {"arch": arch})
        loaded = load_checkpoint(tmp_path / "s.npz")
        assert set(loaded.state) == {"1.running_mean", "1.count"}
        fresh = build_model(arch, 0)
        restore_into(fresh, loaded)
        assert np.array_equal(fresh.layers[1].state["running_mean"], model.layers[1].state["running_mean"])
        assert int(fresh.layers[1].state["count"]) == 1

        with np.load(tmp_path / "s.npz") as data:
            arrays = {k: data[k] for k in data.files}
        del arrays["state/1.count"]
        np.savez(tmp_path / "s2.npz", **arrays)
        with pytest.raises(CheckpointError, match=r"missing states \['1.count'\]"):
            load_checkpoint(tmp_path / "s2.npz")
    finally:
        MODEL_TYPES.pop("test-stateful")
