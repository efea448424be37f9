"""What every benchmark prints beside its table: the machine, the versions, the BLAS in use, and its peak.

Machines are shared and noisy, so each benchmark runs its contenders in one run and reports ratios
(``mlp_speed.py`` interleaves their epochs round by round); each contender runs in its own process
(``run_worker``, or a worker started once and driven epoch by epoch) so that its peak memory is its own.

``torch_char_lm`` is the PyTorch twin of handgrad's character language model, for the benchmarks that
set the two side by side (``char_lm_torch.py``: accuracy; ``rnn_speed.py``: the training step's speed).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

THREADS = 2


def pin_threads(n: int = THREADS) -> None:
    """Give every BLAS/OpenMP pool the same number of threads (call before importing torch or sklearn)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)


def blas_info() -> str:
    from threadpoolctl import threadpool_info

    parts = []
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            parts.append(
                f"{pool.get('internal_api')} {pool.get('version')} kernel={pool.get('architecture')} "
                f"threads={pool.get('num_threads')}"
            )
    return "; ".join(parts) or "unknown"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_header() -> list[str]:
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    lines = [
        f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {THREADS} threads for every contender",
        f"python {platform.python_version()}, numpy {np.__version__}, BLAS: {blas_info()}",
        "OPENBLAS_CORETYPE: " + (f"set to {coretype!r} (left as it was)" if coretype else "not set"),
    ]
    from importlib import metadata

    # versions from the installed metadata: importing torch here would start its thread pools in the
    # process that then trains (accuracy.py) or measures the GEMM peak
    for name, dist in (("handgrad", "handgrad"), ("torch", "torch"), ("sklearn", "scikit-learn")):
        try:
            lines.append(f"{name} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{name}: not installed")
    lines.append(load_average_line("at start"))
    return lines


def load_average_line(when: str) -> str:
    """The 1, 5 and 15 minute load averages, printed at the start and end of a benchmark."""
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unavailable"
    return f"load average (1, 5, 15 min) {when}: {load} on {os.cpu_count()} CPUs"


def gemm_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matrix-multiply rate through NumPy's BLAS: best of `repeats` n×n products."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports ru_maxrss in kB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_env() -> dict:
    """This process's environment with every BLAS/OpenMP pool set to THREADS threads, for a worker process."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(THREADS)
    return env


def run_worker(script: str, args: list[str], timeout: float = 3600) -> dict:
    """Run `script` with `args` in a fresh interpreter and parse the JSON object it prints last."""
    proc = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, env=worker_env(), timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(x).ljust(w) for x, w in zip(row, widths)))


class WorkerProcess:
    """The driver's end of a benchmark worker: a process started once, then asked one JSON line at a time.

    ``argv`` runs the worker (``[sys.executable, script, ...]``); it answers each line it reads on stdin
    with one JSON line on stdout. ``times`` collects what the driver records (one value per round)."""

    def __init__(self, name: str, argv: list[str], env: dict | None = None):
        self.name = name
        self.times: list[float] = []
        self.stderr = tempfile.TemporaryFile("w+")  # read back only if the worker fails
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env if env is not None else worker_env(),
        )

    def receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.stderr.seek(0)
            raise RuntimeError(
                f"the {self.name} worker exited with status {self.proc.wait()}:\n{self.stderr.read()[-4000:]}"
            )
        return json.loads(line)

    def request(self, command: str) -> dict:
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the worker has exited: receive() says why
        return self.receive()

    def close(self) -> None:
        if self.proc.poll() is None:  # still running after an error elsewhere
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def torch_cnn(channels=(16, 32, 64), hidden=(128,), dropout=0.25, n_classes=10, size=28):
    """``handgrad train --model cnn``'s network in torch.nn (app/models/cnn.py): per block a 3×3 convolution
    (padding 1), batch norm, ReLU and 2×2 max-pool; Flatten, Dropout, per hidden layer Linear, batch norm,
    ReLU and Dropout; the output Linear. PyTorch's own initialisation."""
    from torch import nn

    layers, c_in = [], 1
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        c_in, size = c, size // 2
    layers += [nn.Flatten(), nn.Dropout(dropout)]
    d = c_in * size * size
    for h in hidden:
        layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, n_classes))


def torch_char_lm(arch: dict, seed: int):
    """The PyTorch twin of the character language model ``arch`` (``handgrad.app.models.char_lm``, one
    recurrent layer): ``nn.Embedding``, ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (batch-first) and ``nn.Linear``,
    starting from the weights handgrad's ``build_model(arch, set_all_seeds(seed))`` starts from, converted:
    ``weight_ih = Uᵀ``, ``weight_hh = Wᵀ``, ``bias_ih = b``, ``bias_hh = 0`` (the GRU's n block of
    ``bias_hh`` is its ``b_hn``). ``model(ids, state)`` returns (logits (B, T, V), final state); carry the
    state to the next window through ``detach_state`` (truncated BPTT)."""
    import torch
    from torch import nn

    from handgrad.app.models import build_model
    from handgrad.ch05_ml_basics import set_all_seeds

    cell = arch["type"].removeprefix("char-")
    if len(arch["hidden"]) != 1:
        raise ValueError(f"the PyTorch twin has one recurrent layer, not {arch['hidden']}")
    ours = build_model(arch, set_all_seeds(seed))  # handgrad's initial weights (the run's own)
    emb, rnn, head = ours.layers[0], ours.layers[1], ours.layers[2].layer
    V, E, H = arch["vocab_size"], arch["embedding_dim"], arch["hidden"][0]
    recurrent = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]

    class CharLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, E)
            self.rnn = recurrent(E, H, batch_first=True)
            self.head = nn.Linear(H, V)

        def forward(self, x, state=None):
            h, state = self.rnn(self.embedding(x), state)
            return self.head(h), state

    model = CharLM()
    with torch.no_grad():
        model.embedding.weight.copy_(torch.from_numpy(emb.params["W"]))
        model.rnn.weight_ih_l0.copy_(torch.from_numpy(rnn.params["U"].T.copy()))
        model.rnn.weight_hh_l0.copy_(torch.from_numpy(rnn.params["W"].T.copy()))
        model.rnn.bias_ih_l0.copy_(torch.from_numpy(rnn.params["b"]))
        model.rnn.bias_hh_l0.zero_()
        if "b_hn" in rnn.params:
            model.rnn.bias_hh_l0[2 * H :].copy_(torch.from_numpy(rnn.params["b_hn"]))
        model.head.weight.copy_(torch.from_numpy(head.params["W"].T.copy()))
        model.head.bias.copy_(torch.from_numpy(head.params["b"]))
    return model


def detach_state(state):
    """A recurrent layer's final state, (h, c) or h, cut from its graph: the state goes on, the gradient
    stops (truncated BPTT)."""
    return tuple(t.detach() for t in state) if isinstance(state, tuple) else state.detach()
