"""The challenge of long-term dependencies (book §10.7), shown on Hochreiter's adding problem.

    python benchmarks/long_term.py                           # T = 10, 50, 100; tanh RNN, LSTM, GRU
    python benchmarks/long_term.py --lengths 10 50 --steps 500 --plot long_term.png

Each example is a sequence of T steps of two features: a number drawn from U(0, 1), and a marker that is
1 at exactly two steps (one in the first half of the sequence, one in the second) and 0 elsewhere. The
target is the sum of the two marked numbers. A model that has not learnt to remember the first marked
number predicts the mean, 1, whose mean squared error is Var(u₁ + u₂) = 2/12 ≈ 0.167: the baseline.

Every model has the same size and budget: one recurrent layer of ``--hidden`` units (chapter 10's RNN,
LSTM, GRU), its last hidden state read by a Linear(H, 1) output, trained for ``--steps`` steps of Adam
(lr ``--lr``) on fresh batches of ``--batch`` sequences, the gradient's global norm clipped at ``--clip``
(§10.11.1), and tested on 2,000 held-out sequences. The tanh RNN is also trained without clipping, to
show what clipping changes for it. The loss, the mean squared error and its gradient, is written here:
the benchmark is its only user.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import machine_header, pin_threads, print_table

BASELINE = 2 / 12  # the MSE of always predicting 1


def adding_problem(n, T, rng):
    """(X (n, T, 2) float32, y (n, 1) float32): numbers and markers, and the sum of the marked numbers."""
    X = np.zeros((n, T, 2), np.float32)
    X[:, :, 0] = rng.random((n, T))
    half = max(T // 2, 1)
    first = rng.integers(0, half, n)
    second = rng.integers(half, T, n) if T > 1 else first
    rows = np.arange(n)
    X[rows, first, 1] = 1.0
    X[rows, second, 1] = 1.0
    y = (X[rows, first, 0] + X[rows, second, 0] * (second != first)).astype(np.float32)[:, None]
    return X, y


def mse(pred, y):
    """Mean squared error L = (1/N) Σ_i (ŷ_i − y_i)² and its gradient dL/dŷ = 2 (ŷ − y) / N."""
    diff = pred - y
    return float(np.mean(diff.astype(np.float64) ** 2)), (2.0 / len(y)) * diff


def build(cell, hidden, seed):
    from handgrad.ch06_feedforward import Linear, Sequential
    from handgrad.ch10_sequence import GRU, LSTM, RNN, LastStep

    rng = np.random.default_rng(seed)
    layer = {
        "rnn": lambda: RNN(2, hidden, rng=rng),
        "lstm": lambda: LSTM(2, hidden, rng=rng),
        "gru": lambda: GRU(2, hidden, rng=rng),
    }[cell]()
    return Sequential(layer, LastStep(), Linear(hidden, 1, rng=rng)).reuse_buffers()


def run(cell, T, clip, args):
    from handgrad.ch08_optimization import Adam
    from handgrad.ch10_sequence import clip_grad_norm

    rng = np.random.default_rng(args.seed)
    X_test, y_test = adding_problem(2000, T, np.random.default_rng([args.seed, T, 1]))
    model = build(cell, args.hidden, args.seed)
    params, grads = model.params, model.grads
    opt = Adam(args.lr)
    t0 = time.perf_counter()
    norms = []
    for _ in range(args.steps):
        xb, yb = adding_problem(args.batch, T, rng)
        _, dpred = mse(model.forward(xb), yb)
        model.backward(dpred, need_input_grad=False)
        norm = (
            clip_grad_norm(grads, clip)
            if clip
            else float(np.sqrt(sum(np.vdot(g, g) for g in grads.values())))
        )
        norms.append(norm)
        opt.step(params, grads)
    seconds = time.perf_counter() - t0
    model.eval()
    test, _ = mse(model.forward(X_test), y_test)
    if not np.isfinite(test):
        test = float("nan")
    return test, seconds, float(np.max(norms)), float(np.median(norms))


def plot(results, lengths, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, style in (
        ("tanh RNN, clipped", "-o"),
        ("tanh RNN, no clipping", ":o"),
        ("LSTM", "-s"),
        ("GRU", "-^"),
    ):
        ax.plot(lengths, [results[label][T][0] for T in lengths], style, label=label)
    ax.axhline(BASELINE, color="grey", ls="--", label="always predict 1 (0.167)")
    ax.set(
        xlabel="sequence length T",
        ylabel="test mean squared error",
        yscale="log",
        title="The adding problem (book §10.7): the same size and budget",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="long_term.png", help="where to draw the figure ('' for none)")
    parser.add_argument(
        "--threads", type=int, default=2, help="BLAS threads (1 is faster on a machine other jobs keep busy)"
    )
    args = parser.parse_args(argv)
    pin_threads(args.threads)
    for line in machine_header():
        print(line)
    print(
        f"adding problem: {args.hidden} hidden units, {args.steps} Adam steps (lr {args.lr:g}) of batches of "
        f"{args.batch}, clipping at {args.clip:g}, seed {args.seed}; test MSE on 2,000 sequences\n"
    )
    contenders = {
        "tanh RNN, clipped": ("rnn", args.clip),
        "tanh RNN, no clipping": ("rnn", 0.0),
        "LSTM": ("lstm", args.clip),
        "GRU": ("gru", args.clip),
    }
    results = {label: {} for label in contenders}
    with np.errstate(over="ignore", invalid="ignore"):
        for T in args.lengths:
            for label, (cell, clip) in contenders.items():
                results[label][T] = run(cell, T, clip, args)
                test, seconds, top, median = results[label][T]
                print(
                    f"  T={T:<4d} {label:<22s} test MSE {test:.4f}  gradient norm median {median:.3g} "
                    f"max {top:.3g}  {seconds:.1f} s",
                    flush=True,
                )
    print()
    headers = ["model", *[f"T = {T}" for T in args.lengths]]
    rows = [[label, *[f"{results[label][T][0]:.4f}" for T in args.lengths]] for label in contenders]
    rows.append(["always predict 1", *[f"{BASELINE:.4f}" for _ in args.lengths]])
    print_table(headers, rows)
    print()
    headers = ["tanh RNN: gradient norm", *[f"T = {T}" for T in args.lengths]]
    rows = [
        [
            f"{label[len('tanh RNN, ') :]}: median / max",
            *[f"{results[label][T][3]:.3g} / {results[label][T][2]:.3g}" for T in args.lengths],
        ]
        for label in ("tanh RNN, clipped", "tanh RNN, no clipping")
    ]
    print_table(headers, rows)
    if args.plot:
        print(f"\nwrote {plot(results, args.lengths, args.plot)}")


if __name__ == "__main__":
    main()
