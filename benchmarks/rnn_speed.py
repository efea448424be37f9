"""Speed of a recurrent training step, side by side: handgrad's LSTM, GRU and RNN against torch.nn's.

The step is a sequence-to-label model's (row-by-row MNIST shapes): N = 128 sequences of T = 28 steps of
D = 28 features, one recurrent layer of H = 128 units, its last hidden state into Linear(128, 10), mean
cross entropy, backward, and one Adam step (lr 1e-3), in float32. handgrad runs
``Sequential(LSTM(28, 128), LastStep(), Linear(128, 10))`` with ``SoftmaxCrossEntropy`` and chapter 8's
``Adam`` (buffer reuse on, as the training loop has it); PyTorch runs ``nn.LSTM(28, 128, batch_first=True)``,
``out[:, -1]``, ``nn.Linear`` and ``torch.optim.Adam``. Same for GRU and the tanh RNN.

Every contender is a worker process of its own (so its peak memory is its own) with the same BLAS/OpenMP
threads (``common.THREADS``), started first and then driven round by round: in each round every worker in
turn runs ``--steps`` training steps on one fixed batch and reports its median step time, while the others
wait on their standard input. The order rotates each round. Printed: the median over rounds of each
contender's ms/step, the median over rounds of the handgrad/PyTorch ratio for each layer (the target is at
most 1.5 for the LSTM), and peak memory (resident set size of the worker).

Then the subnormal measurement: a float32 tanh RNN (N = 128, T = 500, D = 8, H = 128, U(±1/√H) weights)
whose loss sees only the last step, so the carried gradient decays by orders of magnitude through the
subnormal range; its backward is timed with and without ``flush_subnormals``.

    python benchmarks/rnn_speed.py --rounds 5 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

N, T, D, H, K = 128, 28, 28, 128, 10
KINDS = ("LSTM", "GRU", "RNN")
PAUSE = 0.3  # seconds before each worker's turn, for the previous worker's threads to stop spinning


def batch():
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.standard_normal((N, T, D)).astype(np.float32), rng.integers(0, K, N)


def handgrad_step_fn(kind):
    from handgrad.ch06_feedforward import Linear, Sequential, SoftmaxCrossEntropy
    from handgrad.ch08_optimization import Adam
    from handgrad.ch10_sequence import GRU, LSTM, RNN, LastStep

    X, y = batch()
    layer = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}[kind](D, H, rng=0)
    model = Sequential(layer, LastStep(), Linear(H, K, rng=1))
    model.reuse_buffers()
    loss_fn, opt = SoftmaxCrossEntropy(), Adam(lr=1e-3)
    params, grads = model.params, model.grads

    def step():
        loss_fn.forward(model.forward(X), y)
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step(params, grads)

    return step


def torch_step_fn(kind):
    import torch

    torch.set_num_threads(common.THREADS)
    torch.manual_seed(0)
    X, y = (torch.from_numpy(a) for a in batch())
    rnn = getattr(torch.nn, kind)(D, H, batch_first=True)
    head = torch.nn.Linear(H, K)
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        out, _ = rnn(X)
        torch.nn.functional.cross_entropy(head(out[:, -1]), y).backward()
        opt.step()

    return step


def worker(lib, kind):
    step = (handgrad_step_fn if lib == "handgrad" else torch_step_fn)(kind)
    step()  # warm up: buffers, thread pools
    print(json.dumps({"ready": True}), flush=True)
    while True:
        line = sys.stdin.readline().strip()
        if not line.startswith("steps"):
            break
        times = []
        for _ in range(int(line.split()[1])):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        print(json.dumps({"ms": 1e3 * statistics.median(times)}), flush=True)
    print(json.dumps({"peak_mb": common.peak_rss_mb()}), flush=True)


def subnormal_timing(repeats=7):
    """Backward of a long float32 tanh RNN with and without flushing, alternated call by call:
    {flush: (median ms, subnormal entries in dA)}."""
    import numpy as np

    from handgrad.ch10_sequence import RNN

    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, 500, 8)).astype(np.float32)
    dH = np.zeros((128, 500, 128), np.float32)
    dH[:, -1] = 1.0
    layers, times = {}, {True: [], False: []}
    for flush in (True, False):
        layers[flush] = rnn = RNN(8, 128, rng=0)
        rnn.flush_subnormals = flush
        rnn.forward(X)
    for _ in range(repeats):
        for flush, rnn in layers.items():
            t0 = time.perf_counter()
            rnn.backward(dH)
            times[flush].append(time.perf_counter() - t0)
    out = {}
    for flush, rnn in layers.items():
        dA = rnn._buffers["dA"]
        sub = int(((dA != 0) & (np.abs(dA) < np.finfo(np.float32).tiny)).sum())
        out[flush] = (1e3 * statistics.median(times[flush]), sub)
    return out


def subnormal_penalty(repeats=300):
    """This CPU's cost of subnormal operands: µs of a (128, 128) product and multiply, normal vs subnormal."""
    import numpy as np

    rng = np.random.default_rng(0)
    W = rng.standard_normal((128, 128)).astype(np.float32) * 0.1
    out, res = np.empty((128, 128), np.float32), {}
    for name, scale in (("normal", 1.0), ("subnormal", 1e-40)):
        a = (rng.standard_normal((128, 128)) * scale).astype(np.float32)
        t0 = time.perf_counter()
        for _ in range(repeats):
            np.matmul(a, W, out=out)
        t1 = time.perf_counter()
        for _ in range(repeats):
            np.multiply(a, 0.5, out=out)
        res[name] = (1e6 * (t1 - t0) / repeats, 1e6 * (time.perf_counter() - t1) / repeats)
    return res


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="training steps per worker and round")
    parser.add_argument("--worker", nargs=2, metavar=("LIB", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        common.pin_threads()
        return worker(*args.worker)

    print("\n".join(common.machine_header()))
    print(
        f"step: N={N} T={T} D={D} H={H}, Linear({H}, {K}), cross entropy, Adam; float32; "
        f"{args.rounds} rounds x {args.steps} steps"
    )
    names = [(lib, kind) for kind in KINDS for lib in ("handgrad", "torch")]
    procs = {}
    for lib, kind in names:
        procs[lib, kind] = p = subprocess.Popen(
            [sys.executable, __file__, "--worker", lib, kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=common.worker_env(),
        )
        json.loads(p.stdout.readline())  # ready
    ms = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            time.sleep(PAUSE)
            procs[name].stdin.write(f"steps {args.steps}\n")
            procs[name].stdin.flush()
            ms[name].append(json.loads(procs[name].stdout.readline())["ms"])
    peak = {}
    for name, p in procs.items():
        p.stdin.write("stop\n")
        p.stdin.flush()
        peak[name] = json.loads(p.stdout.readline())["peak_mb"]
        p.wait()
    rows = []
    for kind in KINDS:
        ratios = [a / b for a, b in zip(ms["handgrad", kind], ms["torch", kind])]
        ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        for lib in ("handgrad", "torch"):
            rows.append(
                [
                    kind,
                    lib,
                    f"{statistics.median(ms[lib, kind]):.2f}",
                    f"{min(ms[lib, kind]):.2f}-{max(ms[lib, kind]):.2f}",
                    ratio if lib == "handgrad" else "1",
                    f"{peak[lib, kind]:.0f}",
                ]
            )
    common.print_table(["layer", "library", "ms/step (median)", "range", "vs torch", "peak MB"], rows)

    timing = subnormal_timing()
    (on, sub_on), (off, sub_off) = timing[True], timing[False]
    print(
        f"\nsubnormals: tanh RNN N=128 T=500 D=8 H=128 float32, loss on the last step, backward: "
        f"flushed {on:.1f} ms ({sub_on} subnormal entries in dA), not flushed {off:.1f} ms "
        f"({sub_off} subnormal entries), {off / on:.1f}x"
    )
    pen = subnormal_penalty()
    print(
        "this CPU on (128, 128) float32 operands: matmul {:.0f} us normal, {:.0f} us subnormal; multiply "
        "{:.1f} us normal, {:.1f} us subnormal".format(
            pen["normal"][0], pen["subnormal"][0], pen["normal"][1], pen["subnormal"][1]
        )
    )
    print(common.load_average_line("at end"))


if __name__ == "__main__":
    main()
