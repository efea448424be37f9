"""Chapter 12, app/distributed.py: data-parallel training over MPI (§12.1.3), two ranks on this machine.

Every launch uses MPICH's ``mpiexec.gforker`` (from the ``mpich`` wheel, which runs as root) with
``MPIR_CVAR_CH4_NETMOD=ofi FI_PROVIDER=shm``: the ranks talk through shared memory and the launcher
through socketpairs, so no TCP or UDP socket is opened (``test_launch_opens_no_network_socket`` checks it
in /proc). MPICH's default launcher (hydra) and its default network module listen on the machine's
addresses, which a test must not do.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from handgrad.app.checkpoint import load_checkpoint
from handgrad.app.models import build_model, prepare_inputs
from handgrad.datasets import load_splits

pytest.importorskip("mpi4py")  # the [mpi] extra; `make test` installs it, and CI fails on a skip

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
GFORKER = shutil.which("mpiexec.gforker", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
DRIVER = ROOT / "tests" / "mpi_train.py"
# Shared memory between the ranks, no network (module docstring); one BLAS thread per rank on 2 cores.
MPI_ENV = {
    "MPIR_CVAR_CH4_NETMOD": "ofi",
    "FI_PROVIDER": "shm",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}


def _env():
    path = f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env = {**os.environ, **MPI_ENV, "PYTHONPATH": path}
    for name in ("PMI_SIZE", "PMI_RANK", "PMI_FD", "OMPI_COMM_WORLD_SIZE"):  # a run inside mpiexec
        env.pop(name, None)
    return env


def launch(args, ranks=2, timeout=120):
    """Run ``python ARGS`` under ``mpiexec.gforker -n RANKS`` (or alone for ranks=0); (status, output, s)."""
    assert GFORKER, "mpiexec.gforker not found: pip install 'handgrad[mpi]'"
    cmd = [sys.executable, *map(str, args)]
    if ranks:
        cmd = [GFORKER, "-n", str(ranks), *cmd]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------
# 2 ranks with global batch B = 1 process with batch B
# --------------------------------------------------------------------------------------------------

# 301 images in batches of 64: 5 steps, the last of 45 images in shards of 23 and 22 (weights by size).
SMALL = {
    "dataset": "mnist-sample",
    "limit": 301,
    "epochs": 1,
    "batch_size": 64,
    "plots": False,
    "quiet": True,
}
MODELS = {
    "mlp": {"hidden": [16], "batch_norm": True},
    "cnn": {"model": "cnn", "channels": [4], "hidden": [8], "dropout": 0, "augment": False},
}
OPTIMIZERS = {"momentum": {"optimizer": "momentum", "lr": 0.1}, "adam": {"optimizer": "adam", "lr": 3e-3}}
CASES = [
    {
        "name": f"{m}-{o}-{'f64' if f64 else 'f32'}",
        "float64": f64,
        "config": {**SMALL, **MODELS[m], **OPTIMIZERS[o]},
    }
    for m in MODELS
    for o in OPTIMIZERS
    for f64 in (True, False)
]


@pytest.fixture(scope="module")
def equivalence_runs(tmp_path_factory):
    """Every case trained once by one process and once by 2 ranks: {name: (one process, 2 ranks)}."""
    base = tmp_path_factory.mktemp("equivalence")
    (base / "cases.json").write_text(json.dumps(CASES))
    runs = {}
    for ranks in (0, 2):
        out = base / f"ranks{ranks}"
        out.mkdir()
        status, output, _ = launch([DRIVER, base / "cases.json", out], ranks=ranks, timeout=300)
        assert status == 0, output
        runs[ranks] = {c["name"]: dict(np.load(out / f"{c['name']}.npz")) for c in CASES}
    return {c["name"]: (runs[0][c["name"]], runs[2][c["name"]]) for c in CASES}


def _arch(case):
    from handgrad.app import TrainConfig
    from handgrad.app.models import arch_from_config

    return arch_from_config(TrainConfig(**case["config"]), 10, (28, 28))


def _pre_norm_biases(case):
    """Names of biases that feed a batch norm, and of that norm's running mean. Their gradient is exactly 0
    (the norm subtracts the batch mean), so what is computed is rounding noise, which Adam's m / √v turns
    into steps of about lr in either direction: one process and K ranks round differently."""
    model = build_model(_arch(case), 0)
    names = []
    for i, (layer, after) in enumerate(zip(model.layers, model.layers[1:])):
        if "b" in layer.params and hasattr(after, "sum_across"):
            names += [f"param/{i}.b", f"state/{i + 1}.running_mean"]
    return names


def _logits(case, arrays, X):
    """The trained network's logits on images X in training mode (batch statistics), in float64."""
    sys.path.insert(0, str(ROOT / "tests"))
    from mpi_train import _float64_model

    arch = _arch(case)
    model = _float64_model(build_model)(arch, 0)
    for name, param, _ in model.parameters():
        param[...] = arrays[f"param/{name}"]
    return model.forward(prepare_inputs(arch, X).astype(np.float64))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_two_ranks_train_the_parameters_one_process_trains(case, equivalence_runs):
    one, two = equivalence_runs[case["name"]]
    assert set(one) == set(two) and len(one) >= 8
    f64, adam = case["float64"], case["config"]["optimizer"] == "adam"
    noisy = set(_pre_norm_biases(case)) if adam else set()
    # float64: every array to 1e-10. float32: momentum SGD to 2e-5 (about 100 float32 ulps of the weights'
    # scale after 5 steps); with Adam, float32 rounding noise in gradients that are 0 in exact arithmetic
    # is amplified as above (constant features before a batch norm too), so only the function is compared.
    tol = 1e-10 if f64 else 2e-5
    for key in one:
        if key in noisy or (adam and not f64):
            continue
        assert one[key].dtype == (np.float64 if f64 else np.float32)
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=tol, err_msg=key)
    # What the network computes (training mode, so the noisy biases cancel in the norm) agrees too.
    X = load_splits("mnist-sample").test[0][:64]  # real digits: their borders are constant, as in training
    a, b = _logits(case, one, X), _logits(case, two, X)
    scale = np.abs(a).max()
    # Measured: below 1e-15 (float64; 4e-14 for the CNN with Adam) and below 2e-5 (float32) of the scale.
    assert np.abs(a - b).max() <= (1e-10 if f64 else 1e-4) * scale
    initial = build_model(_arch(case), 0).parameters()[0][1]  # what training started from (seed 0)
    assert np.abs(one["param/0.W"] - initial).max() > 1e-4  # it trained


# --------------------------------------------------------------------------------------------------
# Checkpoints, resume, faults
# --------------------------------------------------------------------------------------------------

# Dropout, augmentation and batch norm: per-rank streams and synchronised statistics all take part.
RESUMABLE = [
    "--dataset",
    "mnist-sample",
    "--limit",
    "301",
    "--batch-size",
    "64",
    "--hidden",
    "16",
    "--batch-norm",
    "--dropout",
    "0.2",
    "--augment",
    "--no-plots",
    "--quiet",
]


def _train_cli(out, *extra, ranks=2):
    status, output, _ = launch(["-m", "handgrad", "train", *RESUMABLE, "--out", out, *extra], ranks=ranks)
    assert status == 0, output
    return output


def test_checkpoints_written_under_mpi_evaluate_in_one_process(tmp_path):
    output = _train_cli(tmp_path / "run", "--epochs", "2")
    assert "best epoch" in output and output.count("best epoch") == 1  # rank 0 alone prints
    best = load_checkpoint(tmp_path / "run" / "best.npz")
    assert best.metadata["distributed"]["ranks"] == 2
    evaluate = ["-m", "handgrad", "evaluate", tmp_path / "run" / "best.npz", "--json"]
    status, report, _ = launch(evaluate, ranks=0)
    assert status == 0, report
    result = json.loads(report)
    row = best.metadata["metrics"]  # the epoch's metrics, computed by the 2 ranks on halves of the test set
    assert result["accuracy"] == row["test_accuracy"]
    assert result["loss"] == pytest.approx(row["test_loss"], rel=1e-6)
    assert row["test_accuracy"] > 0.5  # it learned (chance is 0.1)


def test_resume_under_mpi_continues_bit_for_bit(tmp_path):
    _train_cli(tmp_path / "whole", "--epochs", "2")
    _train_cli(tmp_path / "parts", "--epochs", "1")
    _train_cli(tmp_path / "parts", "--epochs", "2", "--resume", tmp_path / "parts")
    whole, parts = (load_checkpoint(tmp_path / name / "last.npz") for name in ("whole", "parts"))
    assert parts.metadata["epoch"] == whole.metadata["epoch"] == 2
    for key in whole.params:
        np.testing.assert_array_equal(parts.params[key], whole.params[key], err_msg=key)
    for key in whole.state:
        np.testing.assert_array_equal(parts.state[key], whole.state[key], err_msg=key)
    assert parts.metadata["distributed"] == whole.metadata["distributed"]  # every rank's stream
    assert parts.metadata["history"][-1]["val_loss"] == whole.metadata["history"][-1]["val_loss"]
    one = tmp_path / "one"  # the same run in one process differs (other dropout and augmentation draws)
    _train_cli(one, "--epochs", "1", ranks=0)
    assert not np.array_equal(
        load_checkpoint(one / "last.npz").params["0.W"],
        load_checkpoint(tmp_path / "parts" / "best.npz").params["0.W"],
    )


@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_that_fails_mid_epoch_ends_the_job(tmp_path, rank):
    case = {"name": "nan", "nan_at": [rank, 3], "config": {**SMALL, **MODELS["mlp"], "epochs": 2}}
    (tmp_path / "cases.json").write_text(json.dumps([case]))
    status, output, seconds = launch([DRIVER, tmp_path / "cases.json", tmp_path], timeout=60)
    assert status != 0 and seconds < 30
    lines = [line for line in output.splitlines() if line.startswith("handgrad: error:")]
    assert len(lines) == 1 and f"rank {rank}/2: training diverged" in lines[0], output
    assert "Traceback" not in output
    run = tmp_path / "nan"
    assert load_checkpoint(run / "last.npz").metadata["epoch"] == 0  # the last complete checkpoint
    assert sorted(p.name for p in run.iterdir()) == ["best.npz", "config.json", "last.npz", "metrics.csv"]


def test_a_full_disk_on_rank_0_ends_every_rank(tmp_path):
    """Rank 0 cannot write last.npz after epoch 1 (ENOSPC); rank 1 is waiting in a collective."""
    script = tmp_path / "full_disk.py"
    script.write_text(
        "import errno, os, sys\n"
        "import handgrad.app.checkpoint as c\n"
        "real, calls = c.atomic_savez, [0]\n"
        "def savez(path, arrays):\n"
        "    calls[0] += 1\n"
        "    if calls[0] > 2 and os.environ['PMI_RANK'] == '0':\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    real(path, arrays)\n"
        "c.atomic_savez = savez\n"
        "from handgrad.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = [script, "train", *RESUMABLE, "--epochs", "3", "--out", tmp_path / "run"]
    status, output, seconds = launch(args)
    assert status != 0 and seconds < 30
    lines = [line for line in output.splitlines() if line.startswith("handgrad: error:")]
    assert len(lines) == 1 and "rank 0/2: cannot write" in lines[0] and "No space left" in lines[0], output
    assert "--resume" in lines[0]
    assert load_checkpoint(tmp_path / "run" / "last.npz").metadata["epoch"] == 0


# --------------------------------------------------------------------------------------------------
# The launch itself: no network socket
# --------------------------------------------------------------------------------------------------

PROBE = """
import os, pathlib, sys, time
from mpi4py import MPI
import numpy as np
a = np.ones(3)
MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, a)
if len(sys.argv) > 1 and MPI.COMM_WORLD.rank == 0:  # the checker's own check: a loopback listener
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
pathlib.Path(os.environ["PROBE_DIR"], str(os.getpid())).write_text(str(a[0]))  # a[0] = 2: they talked
time.sleep(4)
"""


def _inet_sockets(pids):
    """(kind, local address) of every TCP/UDP socket (IPv4 and IPv6) the processes hold, from /proc."""
    inodes = set()
    for pid in pids:
        for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for kind in ("tcp", "tcp6", "udp", "udp6"):
        for line in pathlib.Path(f"/proc/net/{kind}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                found.append((kind, fields[1]))
    return found


def _launch_probe(tmp_path, *args):
    probe_dir = tmp_path / ("probe" + "".join(args))
    probe_dir.mkdir()
    proc = subprocess.Popen(
        [GFORKER, "-n", "2", sys.executable, "-c", PROBE, *args], env={**_env(), "PROBE_DIR": str(probe_dir)}
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(probe_dir.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.1)  # the files are written whole before the ranks sleep
        pids = [int(f.name) for f in probe_dir.iterdir()]
        assert len(pids) == 2 and all(f.read_text() == "2.0" for f in probe_dir.iterdir())
        return _inet_sockets([proc.pid, *pids])
    finally:
        proc.wait(timeout=30)


@pytest.mark.skipif(not pathlib.Path("/proc/net/tcp").exists(), reason="needs Linux's /proc")
def test_launch_opens_no_network_socket(tmp_path):
    assert _launch_probe(tmp_path) == []
    found = _launch_probe(tmp_path, "listen")  # the check sees a socket when there is one
    assert [kind for kind, _ in found] == ["tcp"] and found[0][1].startswith("0100007F:")  # 127.0.0.1
