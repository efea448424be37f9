"""Checkpoints (app/checkpoint.py): round trip, atomic writes (a killed writer leaves the previous file
intact), validation, hostile archives refused before anything is allocated, write errors naming the file."""

import errno
import io
import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from handgrad.app import checkpoint as ck
from handgrad.app.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    restore_into,
    save_checkpoint,
)
from handgrad.app.models import (
    MODEL_TYPES,
    ModelType,
    build_model,
    mlp_arch,
    named_params,
    register_model_type,
)
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
    meta = {
        "arch": arch,
        "dataset": "mnist-sample",
        "classes": list("0123456789"),
        "epoch": 3,
        "metrics": {"val_accuracy": 0.9, "val_loss": float("nan")},
        "history": [{"epoch": 1, "x": 1.5}],
    }
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


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"hello, not a checkpoint\n", "not an .npz archive"),
        (b"\x93NUMPY" + b"\x00" * 100, "not an .npz archive"),
    ],
)
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
    _rewrite(
        good[0], tmp_path / "u.npz", edit_arrays=lambda a: a.update({"param/9.W": np.zeros(2, np.float32)})
    )
    with pytest.raises(CheckpointError, match=r"unexpected parameters \['9.W'\]"):
        load_checkpoint(tmp_path / "u.npz")


def test_wrong_dtype(good, tmp_path):
    _rewrite(
        good[0],
        tmp_path / "d.npz",
        edit_arrays=lambda a: a.update({"param/0.b": a["param/0.b"].astype(np.float64)}),
    )
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

    register_model_type(
        ModelType(
            name="test-stateful",
            defaults={},
            build=build,
            validate=lambda arch: None,
            from_config=None,
            describe=lambda arch: "test",
            prepare_inputs=lambda arch, X: X.reshape(len(X), -1),
            count_parameters=lambda arch: 4 * 3 + 3 + 3 + 1 + 3 * 2 + 2,
        )
    )
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


# --------------------------------------------------------------------------------------------------
# Hostile archives: refused from their headers and zip directory, before any array is allocated
# --------------------------------------------------------------------------------------------------


def _npy(arr, allow_pickle=False):
    """The bytes np.save writes for ``arr``."""
    f = io.BytesIO()
    np.lib.format.write_array(f, arr, allow_pickle=allow_pickle)
    return f.getvalue()


def _npy_header(shape, descr="<f4", fortran_order=False):
    """An .npy header alone (what a file declares), without the data it promises."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": fortran_order, "shape": shape})
    return f.getvalue()


def _members(path):
    """{member name: raw bytes} of a checkpoint written by save_checkpoint."""
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _write_zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _header_bytes(header):
    return _npy(np.frombuffer(json.dumps(header).encode(), np.uint8))


def _load_measured(path):
    """load_checkpoint(path) under tracemalloc: (the CheckpointError, peak bytes traced)."""
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return info.value, peak


def _one_line(err, *fragments):
    message = str(err)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("member", ["param/0.W.npy", "param/9.W.npy", "optim/velocity.0.W.npy"])
def test_a_100000_by_100000_header_is_refused_without_allocating(good, tmp_path, member):
    members = _members(good[0])
    members[member] = _npy_header((100_000, 100_000)) + b"\0" * 64  # declares 37 GiB, holds 64 bytes
    path = _write_zip(tmp_path / "huge.npz", members)
    err, peak = _load_measured(path)
    _one_line(err, str(path), repr(member), "100000x100000 float32", "40,000,000,1")
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # the 37 GiB are never asked for


@pytest.mark.parametrize("shape", [(-1, 784), (784, -16), (-(2**62), -(2**62))])
def test_negative_shapes_are_refused(good, tmp_path, shape):
    members = _members(good[0])
    members["param/0.W.npy"] = _npy_header(shape)
    path = _write_zip(tmp_path / "neg.npz", members)
    with pytest.raises(CheckpointError, match="'param/0.W.npy' declares an impossible shape"):
        load_checkpoint(path)


class _Marker:
    """Unpickling this would create ``marker``: the test checks that it never exists."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def test_a_pickled_object_array_is_refused_and_never_unpickled(good, tmp_path):
    marker = tmp_path / "unpickled"
    members = _members(good[0])
    members["param/0.W.npy"] = _npy(np.array([_Marker(marker)], dtype=object), allow_pickle=True)
    assert b"touch" in members["param/0.W.npy"]  # the pickle is really in the file
    path = _write_zip(tmp_path / "pickle.npz", members)
    with pytest.raises(CheckpointError, match=r"'param/0.W.npy' has dtype '\|O'.*no objects, pickles"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "descr, itemsize",
    [
        ([("a", "<f4"), ("b", "<i4")], 8),
        ("|V8", 8),
        ("<U2", 8),
        ("|S8", 8),
        (("<f4", (2,)), 8),
        ("<M8[s]", 8),
    ],
)
def test_record_void_text_and_date_dtypes_are_refused(good, tmp_path, descr, itemsize):
    members = _members(good[0])
    members["optim/velocity.0.b.npy"] = _npy_header((16,), descr) + b"\0" * (16 * itemsize)
    path = _write_zip(tmp_path / "dtype.npz", members)
    with pytest.raises(CheckpointError, match="'optim/velocity.0.b.npy' has dtype .* plain numeric arrays"):
        load_checkpoint(path)


def _write_zeros_member(zf, name, shape, compress_type=zipfile.ZIP_DEFLATED):
    """A member whose header and data agree: ``shape`` float32 zeros, streamed 1 MiB at a time."""
    info = zipfile.ZipInfo(name)
    info.compress_type = compress_type
    left = math.prod(shape) * 4
    with zf.open(info, "w", force_zip64=True) as f:
        f.write(_npy_header(shape))
        while left:
            f.write(bytes(min(left, 2**20)))
            left -= min(left, 2**20)


def test_a_deflated_zip_bomb_is_refused_before_inflating(good, tmp_path):
    members = _members(good[0])
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            if name != "param/0.W.npy":
                zf.writestr(name, data)
        _write_zeros_member(zf, "param/0.W.npy", (4096, 4096))  # 64 MiB of zeros in about 65 KB
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("param/0.W.npy")
        assert info.file_size > 64 * 2**20 and info.file_size / info.compress_size > 500
    err, peak = _load_measured(path)
    _one_line(err, str(path), "'param/0.W.npy'", "zip bomb")
    assert peak < 10 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_many_small_members_that_inflate_too_much_together_are_refused(good, tmp_path):
    members = _members(good[0])
    path = tmp_path / "bombs.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for i in range(8):  # each member is under the per-member allowance, together they are not
            _write_zeros_member(zf, f"optim/m{i}.npy", (250_000,))
    with pytest.raises(CheckpointError, match="its members would inflate .* zip bomb"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "name", ["notes.txt", "model.pkl", "param/", "param/0.W", "__MACOSX/._x.npy", "optim//etc/passwd.npy"]
)
def test_unexpected_members_are_refused(good, tmp_path, name):
    members = _members(good[0])
    members[name] = _npy(np.zeros(2, np.float32))
    path = _write_zip(tmp_path / "extra.npz", members)
    with pytest.raises(CheckpointError, match=f"unexpected member {re.escape(repr(name))}"):
        load_checkpoint(path)


def test_a_member_twice_is_refused(good, tmp_path):
    members = _members(good[0])
    path = _write_zip(tmp_path / "twice.npz", members)
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as zf:
        zf.writestr("param/0.b.npy", _npy(np.ones(16, np.float32)))
    with pytest.raises(CheckpointError, match="'param/0.b.npy' appears more than once"):
        load_checkpoint(path)


def test_non_npy_data_in_a_checkpoint_name_is_refused(good, tmp_path):
    members = _members(good[0])
    members["param/0.b.npy"] = b"this is not an array" * 4
    path = _write_zip(tmp_path / "text.npz", members)
    with pytest.raises(CheckpointError, match="'param/0.b.npy' is not .npy data"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "name, arr, message",
    [
        ("param/0.W.npy", np.zeros((16, 784), np.float32), r"'0.W' has shape \(16, 784\).*needs \(784, 16\)"),
        (
            "param/0.W.npy",
            np.zeros((784, 16), np.float64),
            r"'0.W' has .* float64.*needs \(784, 16\) float32",
        ),
        ("param/2.b.npy", np.zeros(10, np.float16), r"'2.b' has .* dtype float16"),
        ("param/2.b.npy", np.zeros((10, 1), np.float32), r"'2.b' has shape \(10, 1\)"),
    ],
)
def test_a_parameter_of_the_wrong_shape_or_dtype(good, tmp_path, name, arr, message):
    members = _members(good[0])
    members[name] = _npy(arr)
    path = _write_zip(tmp_path / "wrong.npz", members)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_a_member_shorter_than_its_header_says_is_refused(good, tmp_path):
    members = _members(good[0])
    members["param/0.W.npy"] = members["param/0.W.npy"][:-100]
    path = _write_zip(tmp_path / "short.npz", members)
    with pytest.raises(
        CheckpointError,
        match=r"'param/0.W.npy' declares a 784x16 float32 array "
        r"\(50,304 bytes with its header\) but holds 50,204 bytes",
    ):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0.99, 0.5, 0.1])
def test_truncated_archives_are_refused(good, tmp_path, keep):
    data = good[0].read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="not a readable .npz archive"):
        load_checkpoint(tmp_path / "cut.npz")


def test_corrupted_array_bytes_fail_the_crc_check(good, tmp_path):
    data = bytearray(good[0].read_bytes())
    with zipfile.ZipFile(good[0]) as zf:
        info = zf.getinfo("param/0.W.npy")
    data[info.header_offset + 30 + len(info.filename) + 2000] ^= 0xFF  # a byte of 0.W's data
    (tmp_path / "flip.npz").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="'param/0.W.npy' cannot be read .*CRC"):
        load_checkpoint(tmp_path / "flip.npz")


def test_an_oversized_json_header_is_refused_unread(good, tmp_path):
    members = _members(good[0])
    path = tmp_path / "header.npz"
    size = ck.MAX_HEADER_BYTES + 1
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            if name != "__handgrad__.npy":
                zf.writestr(name, data)
        with zf.open("__handgrad__.npy", "w") as f:
            f.write(_npy_header((size,), "|u1"))
            f.write(b"{" + b" " * (size - 2) + b"}")
    err, peak = _load_measured(path)
    _one_line(err, str(path), "'__handgrad__'", f"{size:,}-byte header")
    assert peak < 2 * 2**20, f"peak {peak / 2**20:.1f} MiB"  # the 8 MiB header was never read


def test_a_deeply_nested_json_header_is_a_damaged_header(good, tmp_path):
    members = _members(good[0])
    members["__handgrad__.npy"] = _npy(np.frombuffer(b"[" * 200_000, np.uint8))
    path = _write_zip(tmp_path / "nested.npz", members)
    with pytest.raises(CheckpointError, match="damaged checkpoint header"):
        load_checkpoint(path)


def _gigantic(good, tmp_path):
    arch = mlp_arch([10**6, 10**6], "relu", 10)
    members = _members(good[0])
    header = json.loads(np.load(good[0])["__handgrad__"].tobytes())
    header["metadata"]["arch"] = arch
    members["__handgrad__.npy"] = _header_bytes(header)
    return _write_zip(tmp_path / "gigantic.npz", members)


def test_an_architecture_claiming_a_gigantic_model_is_refused_before_building(good, tmp_path, monkeypatch):
    path = _gigantic(good, tmp_path)

    def no_building(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(ck, "build_model", no_building)
    err, peak = _load_measured(path)
    claimed = (784 * 10**6 + 10**6) + (10**6 * 10**6 + 10**6) + (10**6 * 10 + 10)  # W and b of each Linear
    _one_line(err, str(path), f"model of {claimed:,} numbers", "holds 12,730 for parameters")
    assert peak < 5 * 2**20


def test_an_optimizer_array_larger_than_any_parameter_is_refused_before_reading(good, tmp_path):
    members = _members(good[0])
    members["optim/velocity.0.W.npy"] = _npy(np.zeros((784, 17), np.float32))  # 0.W is 784x16
    path = _write_zip(tmp_path / "optim.npz", members)
    with pytest.raises(
        CheckpointError,
        match="'optim/velocity.0.W.npy' holds 13,328 numbers, more than the "
        r"largest parameter \(12,544\)",
    ):
        load_checkpoint(path)


def test_optimizer_arrays_may_not_outnumber_the_parameters_many_times(good, tmp_path):
    members = _members(good[0])
    for i in range(5):
        for name in ("0.W", "0.b", "2.W", "2.b"):
            members[f"optim/slot{i}.{name}.npy"] = members[f"param/{name}.npy"]
    path = _write_zip(tmp_path / "optim.npz", members)
    with pytest.raises(CheckpointError, match="optimizer state holds more than 4 copies of the parameters"):
        load_checkpoint(path)


def test_a_deflated_checkpoint_written_by_savez_compressed_still_loads(good, tmp_path):
    arch, model = good[1], good[2]
    opt = trained_state(model)
    save_checkpoint(tmp_path / "c.npz", model, {"arch": arch}, opt.state_dict())
    with np.load(tmp_path / "c.npz") as data:
        np.savez_compressed(tmp_path / "z.npz", **{k: data[k] for k in data.files})
    loaded = load_checkpoint(tmp_path / "z.npz")
    for k, p in named_params(model).items():
        assert np.array_equal(loaded.params[k], p)
        assert np.array_equal(loaded.optimizer_state[f"velocity.{k}"], opt.state["velocity"][k])


def test_loading_reads_each_array_once_and_little_else(tmp_path):
    """A 3 MB checkpoint loads with a peak near its own size (no second copy of the archive)."""
    arch = mlp_arch([1024], "relu", 10)
    model = build_model(arch, 0)
    path = save_checkpoint(tmp_path / "c.npz", model, {"arch": arch})
    size = path.stat().st_size
    tracemalloc.start()
    try:
        loaded = load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(loaded.params["0.W"], named_params(model)["0.W"])
    # The arrays (1x), the model built to learn the expected shapes (1x) and its float64 draws at
    # initialisation (2x, briefly): about 3.2x. One more copy of the arrays anywhere would exceed 4x.
    assert peak < 4 * size, (peak, size)


@pytest.mark.parametrize("make", ["huge", "gigantic", "pickle"])
def test_cli_evaluate_refuses_a_hostile_checkpoint_in_one_line(good, tmp_path, capsys, make):
    from handgrad.cli import main

    members = _members(good[0])
    if make == "huge":
        members["param/0.W.npy"] = _npy_header((100_000, 100_000)) + b"\0" * 64
        path = _write_zip(tmp_path / "hostile.npz", members)
    elif make == "gigantic":
        path = _gigantic(good, tmp_path)
    else:
        members["param/0.W.npy"] = _npy(np.array([{"x": 1}], dtype=object), allow_pickle=True)
        path = _write_zip(tmp_path / "hostile.npz", members)
    code = main(["evaluate", str(path), "--dataset", "mnist-sample"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"handgrad: error: {path}") and "Traceback" not in err


def test_cli_evaluate_of_a_hostile_checkpoint_in_a_fresh_process(good, tmp_path):
    members = _members(good[0])
    members["param/0.W.npy"] = _npy_header((100_000, 100_000)) + b"\0" * 64
    path = _write_zip(tmp_path / "hostile.npz", members)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "handgrad.cli", "evaluate", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("handgrad: error: ")
    assert "'param/0.W.npy'" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------------
# Write errors name the file and say what is left
# --------------------------------------------------------------------------------------------------


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_then_no_space(file, **arrays):
    """np.savez that gets half of its bytes out before the disk is full."""
    buf = io.BytesIO()
    _real_savez(buf, **arrays)
    file.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    _no_space()


_real_savez = np.savez


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch, where):
    arch, model = small_model()
    target = tmp_path / "runs" / "x" / "last.npz"
    save_checkpoint(target, model, {"arch": arch, "v": 1})
    before = target.read_bytes()
    _fill(model, 2.0)
    if where == "write":
        monkeypatch.setattr(ck.np, "savez", _half_then_no_space)
    else:
        monkeypatch.setattr(ck.os, "fsync", _no_space)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(target, model, {"arch": arch, "v": 2})
    monkeypatch.undo()
    err = info.value
    assert str(err) == (
        f"cannot write checkpoint {target}: No space left on device; the previous {target} is intact"
    )
    assert err.path == target and err.previous_intact and err.errno == errno.ENOSPC
    assert isinstance(err, OSError)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.npz"]  # no temporary file left
    assert load_checkpoint(target).metadata["v"] == 1


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_on_the_first_write_says_nothing_was_written(tmp_path, monkeypatch, where):
    arch, model = small_model()
    target = tmp_path / "best.npz"
    if where == "write":
        monkeypatch.setattr(ck.np, "savez", _half_then_no_space)
    else:
        monkeypatch.setattr(ck.os, "fsync", _no_space)
    expected = f"cannot write checkpoint {target}: No space left on device; nothing was written"
    with pytest.raises(CheckpointError, match=f"^{re.escape(expected)}$") as info:
        save_checkpoint(target, model, {"arch": arch})
    assert info.value.path == target and not info.value.previous_intact
    assert list(tmp_path.iterdir()) == []


def test_a_folder_without_write_permission_names_the_file(tmp_path, monkeypatch):
    arch, model = small_model()

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path))

    monkeypatch.setattr(ck.tempfile, "mkstemp", denied)
    expected = f"cannot write checkpoint {tmp_path / 'c.npz'}: Permission denied; nothing was written"
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        save_checkpoint(tmp_path / "c.npz", model, {"arch": arch})


def test_training_on_a_full_disk_ends_in_one_line_naming_the_checkpoint(tmp_path, capsys, monkeypatch):
    from handgrad.cli import main

    monkeypatch.setattr(ck.os, "fsync", _no_space)
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--dataset",
            "mnist-sample",
            "--limit",
            "200",
            "--hidden",
            "8",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--no-plots",
        ]
    )
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0] == (
        f"handgrad: error: cannot write {out / 'best.npz'}: No space left on device; no checkpoint "
        "was written yet; free space and start the run again with a new --out"
    )
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
