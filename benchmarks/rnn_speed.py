"""Speed of a recurrent training step, side by side: handgrad's LSTM, GRU and RNN against torch.nn's, in a
sequence-to-label model and in the character language model.

The first step is a sequence-to-label model's (row-by-row MNIST shapes): N = 128 sequences of T = 28 steps
of D = 28 features, one recurrent layer of H = 128 units, its last hidden state into Linear(128, 10), mean
cross entropy, backward, and one Adam step (lr 1e-3), in float32. handgrad runs
``Sequential(LSTM(28, 128), LastStep(), Linear(128, 10))`` with ``SoftmaxCrossEntropy`` and chapter 8's
``Adam`` (buffer reuse on, as the training loop has it); PyTorch runs ``nn.LSTM(28, 128, batch_first=True)``,
``out[:, -1]``, ``nn.Linear`` and ``torch.optim.Adam``. Same for GRU and the tanh RNN.

The second is the step of the language model ``handgrad train --model lstm|gru|rnn --text FILE`` trains,
with its recipe's sizes (``app.models.char_lm``): ``Embedding(V, 64)``, a stateful LSTM / GRU / RNN of
256 units, ``TimeDistributed(Linear(256, V))``; one window of B = 64 streams × T = 100 characters,
(B, T) int ids -> (B, T, V) logits, ``SoftmaxCrossEntropy`` over the B·T = 6,400 characters, backward
(``need_input_grad=False``), the gradient's global norm clipped at 5, one Adam step (lr 2e-3), as
``app.language_model._train_windows`` does it (without its bookkeeping: the finite-loss check and the
accuracy count). V = 111, the vocabulary of the ``fortunes`` corpus (``char_lm_torch.py``'s runs); the ids
are the bundled ``fortunes-min`` corpus's training part (79 distinct characters) in the stream layout of
64 streams, read window after window, the state carried from each window to the next and reset when the
windows start over (an epoch's start). PyTorch runs ``common.torch_char_lm`` (``char_lm_torch.py``'s
twin: ``nn.Embedding``, ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``, ``nn.Linear``, from handgrad's initial
weights, so its worker's peak memory includes handgrad's modules and a copy of the weights) on the same
windows, the state detached between windows, ``cross_entropy`` over the flattened logits,
``clip_grad_norm_`` and ``torch.optim.Adam``.

Every contender is a worker process of its own (so its peak memory is its own) with the same BLAS/OpenMP
threads (``common.THREADS``), started first and then driven round by round: in each round every worker in
turn runs ``--steps`` training steps (the sequence-to-label one on one fixed batch, the language model's
on the next windows) and reports its median step time, while the others wait on their standard input. The
order rotates each round. The six sequence-to-label workers race first, then the six language-model
workers. Printed for each: the median over rounds of each contender's ms/step, the median over rounds of
the handgrad/PyTorch ratio for each layer (the target is at most 1.5 for the LSTM), and peak memory
(resident set size of the worker).

Then the subnormal measurement: a float32 tanh RNN (N = 128, T = 500, D = 8, H = 128, U(±1/√H) weights)
whose loss sees only the last step, so the carried gradient decays by orders of magnitude through the
subnormal range; its backward is timed with and without ``flush_subnormals``.

    python benchmarks/rnn_speed.py --rounds 7 --steps 10
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

N, T, D, H, K = 128, 28, 28, 128, 10
KINDS = ("LSTM", "GRU", "RNN")
LIBS = ("handgrad", "torch")
# the language model: streams, window, embedding, hidden units, vocabulary; Adam's lr and the clipping norm
LM_B, LM_T, LM_E, LM_H, LM_V = 64, 100, 64, 256, 111
LM_LR, LM_CLIP = 2e-3, 5.0
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


def lm_arch(kind):
    from handgrad.app.models import char_arch

    return char_arch(kind.lower(), LM_V, LM_E, (LM_H,))


def lm_windows():
    """fortunes-min's training part (int32 ids) as LM_B streams, cut into its full windows of LM_T
    characters: a list of (X, Y) views, each (LM_B, LM_T), Y the next characters of X."""
    from handgrad.app.language_model import stream_layout
    from handgrad.datasets import load_text

    X, Y = stream_layout(load_text(dataset="fortunes-min").train, LM_B)
    return [(X[:, s : s + LM_T], Y[:, s : s + LM_T]) for s in range(0, X.shape[1] - LM_T + 1, LM_T)]


def handgrad_lm_step_fn(kind):
    from handgrad.app.models import build_model, reset_states
    from handgrad.ch05_ml_basics import set_all_seeds
    from handgrad.ch06_feedforward import SoftmaxCrossEntropy
    from handgrad.ch08_optimization import Adam
    from handgrad.ch10_sequence import clip_grad_norm

    model = build_model(lm_arch(kind), set_all_seeds(0)).reuse_buffers()
    model.train()
    loss_fn, opt = SoftmaxCrossEntropy().reuse_buffers(), Adam(lr=LM_LR)
    params = {name: p for name, p, _ in model.parameters()}
    grads = {name: g for name, _, g in model.parameters()}
    windows, count = lm_windows(), itertools.count()

    def step():
        i = next(count) % len(windows)
        if i == 0:
            reset_states(model)  # the windows start over: an epoch's start
        xb, yb = windows[i]
        logits = model.forward(xb)  # (B, T, V); the state carried from the previous window
        loss_fn.forward(logits.reshape(-1, LM_V), yb.reshape(-1))
        model.backward(loss_fn.backward().reshape(logits.shape), need_input_grad=False)
        clip_grad_norm(grads, LM_CLIP)
        opt.step(params, grads)

    return step


def torch_lm_step_fn(kind):
    import torch

    torch.set_num_threads(common.THREADS)
    torch.manual_seed(0)
    model = common.torch_char_lm(lm_arch(kind), seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=LM_LR)
    windows = [
        (torch.from_numpy(x.astype("int64")), torch.from_numpy(y.astype("int64"))) for x, y in lm_windows()
    ]
    count, state = itertools.count(), None

    def step():
        nonlocal state
        i = next(count) % len(windows)
        if i == 0:
            state = None
        xb, yb = windows[i]
        logits, state = model(xb, state)
        state = common.detach_state(state)  # truncated BPTT: the state goes on, the gradient stops
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, LM_V), yb.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), LM_CLIP)
        opt.step()

    return step


STEP_FNS = {
    ("handgrad", "seq"): handgrad_step_fn,
    ("torch", "seq"): torch_step_fn,
    ("handgrad", "lm"): handgrad_lm_step_fn,
    ("torch", "lm"): torch_lm_step_fn,
}


def worker(lib, task, kind):
    step = STEP_FNS[lib, task](kind)
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


def race(task, rounds, steps):
    """The six workers of ``task`` ("seq" or "lm"), started one after the other, then driven round by round
    (the order rotating): ({(lib, kind): [median ms/step of each round]}, {(lib, kind): peak MB})."""
    names = [(lib, kind) for kind in KINDS for lib in LIBS]
    workers = {}
    try:
        for lib, kind in names:
            workers[lib, kind] = w = common.WorkerProcess(
                f"{lib} {task} {kind}", [sys.executable, __file__, "--worker", lib, task, kind]
            )
            w.receive()  # ready
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                time.sleep(PAUSE)
                workers[name].times.append(workers[name].request(f"steps {steps}")["ms"])
        peak = {name: w.request("stop")["peak_mb"] for name, w in workers.items()}
        for w in workers.values():
            w.proc.wait()
    finally:
        for w in workers.values():
            w.close()
    return {name: w.times for name, w in workers.items()}, peak


def print_speed_table(first, ms, peak):
    rows = []
    for kind in KINDS:
        ratios = [a / b for a, b in zip(ms["handgrad", kind], ms["torch", kind])]
        ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        for lib in LIBS:
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
    common.print_table([first, "library", "ms/step (median)", "range", "vs torch", "peak MB"], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="training steps per worker and round")
    parser.add_argument("--worker", nargs=3, metavar=("LIB", "TASK", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        common.pin_threads()
        return worker(*args.worker)

    print("\n".join(common.machine_header()))
    print(
        f"step: N={N} T={T} D={D} H={H}, Linear({H}, {K}), cross entropy, Adam; float32; "
        f"{args.rounds} rounds x {args.steps} steps"
    )
    seq_ms, seq_peak = race("seq", args.rounds, args.steps)
    print_speed_table("layer", seq_ms, seq_peak)
    print(
        f"\nlanguage-model step: Embedding({LM_V}, {LM_E}), stateful LSTM/GRU/RNN({LM_E}, {LM_H}), "
        f"TimeDistributed(Linear({LM_H}, {LM_V})); B={LM_B} streams x T={LM_T} characters of fortunes-min, "
        f"the state carried; cross entropy over {LM_B * LM_T} characters, gradient norm clipped at "
        f"{LM_CLIP:g}, Adam lr {LM_LR:g}; float32; {args.rounds} rounds x {args.steps} steps"
    )
    lm_ms, lm_peak = race("lm", args.rounds, args.steps)
    print_speed_table("language model", lm_ms, lm_peak)

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
