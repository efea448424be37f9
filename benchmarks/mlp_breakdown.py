"""Where one training epoch of the reference MLP goes in handgrad: the measurements behind the README's
"where the epoch goes", in one script, so that anyone can rerun that analysis on their own machine.

The reference network (784-512-10, ReLU, batch 256, momentum SGD lr 0.2 β 0.9, L2 λ 1e-4 on the weights,
float32) trains on the 50,000-image MNIST training split with 2 BLAS threads, in one process.

A. handgrad's epoch beside a plain NumPy epoch, alternated round by round. The handgrad epoch uses the
   application's own pieces (reference TrainConfig, build_model, make_optimizer, SoftmaxCrossEntropy,
   batch_iterator) exactly as ``handgrad.app.training.train`` does per batch. The plain epoch does the same
   arithmetic with every array preallocated and nothing else. Their ratio is what the library costs.
B. The plain epoch part by part (the same rounds): what the two large products (X·W1 forward, Xᵀ·dZ
   backward) take, what everything else takes, and how far the issue's 75%-of-GEMM-peak target is.
C. The momentum update of W1 (784×512 float32, six NumPy passes, ``Momentum.step``) timed on its own,
   its arrays hot in cache, and right after the 256×784×512 product that precedes it in every step:
   the update is limited by memory once the product has evicted its arrays.
D. The ceiling: an epoch of nothing but its matrix products (the five per batch, with the reference
   shapes, back to back, nothing else in between), alternated with the 2048³ measurement of the peak.
   Its fraction of the peak bounds what any training epoch built on this BLAS can reach here: the
   element-wise work (bias, ReLU, softmax, the optimiser's update) only adds time to it.

Times in A and B are medians over the rounds after the first (the first is the warm-up); for them the
GEMM peak is measured before and after the epochs and the higher used. D counts all its rounds, since
the epochs of A have already warmed the same products, and sets each against its own round's peak. The
plain epoch reads the clock between its parts (about 2,500 reads per epoch, well under a millisecond).

    python benchmarks/mlp_breakdown.py --data-dir ../shared/data [--rounds 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common
import numpy as np
from mlp_speed import BATCH, BETA, HIDDEN, LAM, LR, gemm_flops_per_epoch, load_flat_splits, steady

PARTS = (
    "gather",
    "forward X·W1",
    "bias + ReLU",
    "layer 2 forward",
    "softmax + loss gradient",
    "layer 2 backward",
    "ReLU backward",
    "backward Xᵀ·dZ",
    "bias gradient",
    "update W1",
    "update the rest",
)
TARGET = 0.75  # the fraction of the GEMM peak


def library_epoch(X, y, seed):
    """One epoch of handgrad's reference model per call, batch by batch as ``train`` does it; also returns
    the model's initial parameters, for the plain loop to start from."""
    from handgrad.app.config import TrainConfig
    from handgrad.app.models import arch_from_config, build_model
    from handgrad.app.training import make_optimizer
    from handgrad.ch05_ml_basics import batch_iterator, set_all_seeds
    from handgrad.ch06_feedforward import SoftmaxCrossEntropy

    config = TrainConfig()
    assert (config.hidden, config.batch_size, config.lr, config.momentum, config.weight_decay) == (
        (HIDDEN,),
        BATCH,
        LR,
        BETA,
        LAM,
    ), "the reference configuration changed: update mlp_speed's settings"
    rng = set_all_seeds(seed)
    model = build_model(arch_from_config(config, 10, (28, 28)), rng)
    model.reuse_buffers()  # as the application's training loop does
    optimizer, loss_fn = make_optimizer(config), SoftmaxCrossEntropy()
    params = {name: p for name, p, _ in model.parameters()}
    grads = {name: g for name, _, g in model.parameters()}
    initial = {name: p.copy() for name, p in params.items()}
    model.train()

    def epoch():
        correct = 0
        for xb, yb in batch_iterator(X, y, config.batch_size, shuffle=True, rng=rng):
            logits = model.forward(xb)
            loss_fn.forward(logits, yb)
            correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
            model.backward(loss_fn.backward(), need_input_grad=False)
            optimizer.step(params, grads)
        return correct / len(y)

    return epoch, initial


class PlainMLP:
    """The same training step in plain NumPy, every array preallocated, each part timed."""

    def __init__(self, initial, seed):
        self.params = tuple(initial[k].copy() for k in ("0.W", "0.b", "2.W", "2.b"))  # W1, b1, W2, b2
        self.grads = [np.zeros_like(p) for p in self.params]
        self.velocity = [np.zeros_like(p) for p in self.params]
        self.step = np.empty_like(self.params[0])  # scratch for g + λW and lr·v, as Momentum's
        f32, shape = np.float32, (BATCH, HIDDEN)
        # per-batch arrays (sliced for the last, smaller batch): Z, H, dH, mask, zeros, L, P, ones, rows
        self.buffers = (
            np.empty(shape, f32),
            np.empty(shape, f32),
            np.empty(shape, f32),
            np.empty(shape, bool),
            np.zeros(shape, f32),
            np.empty((BATCH, 10), f32),
            np.empty((BATCH, 10), f32),
            np.ones(BATCH, f32),
            np.arange(BATCH),
        )
        self.rng = np.random.default_rng(seed)

    def update(self, i):
        """Momentum with weight decay on weights, as ``Momentum.step``: g + λW, v ← βv + g, W ← W − lr v."""
        p, g, v = self.params[i], self.grads[i], self.velocity[i]
        step = self.step.reshape(-1)[: p.size].reshape(p.shape)
        if p.ndim > 1:
            np.multiply(p, LAM, out=step)
            g = np.add(step, g, out=step)
        np.multiply(v, BETA, out=v)
        np.add(v, g, out=v)
        np.multiply(v, LR, out=step)
        np.subtract(p, step, out=p)

    def epoch(self, X, y, times):
        """One epoch; adds each part's seconds to ``times``, returns the training accuracy."""
        W1, b1, W2, b2 = self.params
        dW1, db1, dW2, db2 = self.grads
        correct, t = 0, time.perf_counter()

        def lap(part, t0):
            t1 = time.perf_counter()
            times[part] += t1 - t0
            return t1

        perm = self.rng.permutation(len(X))
        for start in range(0, len(X), BATCH):
            idx = perm[start : start + BATCH]
            xb, yb, b = X[idx], y[idx], len(idx)
            Z, H, dH, mask, zeros, L, P, ones, rows = (a[:b] for a in self.buffers)
            t = lap("gather", t)
            np.matmul(xb, W1, out=Z)
            t = lap("forward X·W1", t)
            np.add(Z, b1, out=Z)
            np.greater(Z, 0, out=mask)
            np.maximum(Z, zeros, out=H)
            t = lap("bias + ReLU", t)
            np.matmul(H, W2, out=L)
            np.add(L, b2, out=L)
            t = lap("layer 2 forward", t)
            m = np.maximum.reduce(L, axis=1, keepdims=True)
            np.subtract(L, m, out=P)
            np.exp(P, out=P)
            s = np.add.reduce(P, axis=1, keepdims=True)
            np.divide(P, s, out=P)
            _loss = float(np.mean(m[:, 0] + np.log(s[:, 0]) - L[rows, yb]))  # computed, as the library does
            correct += int(np.count_nonzero(L.argmax(axis=1) == yb))
            np.multiply(P, 1.0 / b, out=P)
            P[rows, yb] -= 1.0 / b  # (P − onehot) / B
            t = lap("softmax + loss gradient", t)
            np.matmul(H.T, P, out=dW2)
            np.matmul(ones, P, out=db2)
            np.matmul(P, W2.T, out=dH)
            t = lap("layer 2 backward", t)
            np.multiply(dH, mask, out=dH)
            t = lap("ReLU backward", t)
            np.matmul(xb.T, dH, out=dW1)
            t = lap("backward Xᵀ·dZ", t)
            np.matmul(ones, dH, out=db1)
            t = lap("bias gradient", t)
            self.update(0)
            t = lap("update W1", t)
            for i in (1, 2, 3):
                self.update(i)
            t = lap("update the rest", t)
        return correct / len(y)


def time_momentum_update(blocks=30, steps=20):
    """Median ms per ``Momentum.step`` of W1: (a) repeated on its own, (b) each right after a 256×784×512
    product, alternated block by block."""
    from handgrad.ch08_optimization import Momentum

    rng = np.random.default_rng(0)
    X = rng.standard_normal((BATCH, 784), dtype=np.float32)
    dZ = 0.01 * rng.standard_normal((BATCH, HIDDEN), dtype=np.float32)
    W = 0.05 * rng.standard_normal((784, HIDDEN), dtype=np.float32)
    dW = np.matmul(X.T, dZ)
    opt = Momentum(LR, BETA, weight_decay=LAM)
    params, grads = {"0.W": W}, {"0.W": dW}
    opt.step(params, grads)  # allocates the velocity and the scratch
    res = {"alone": [], "after": []}
    for _ in range(blocks):
        for mode in res:
            total = 0.0
            for _ in range(steps):
                if mode == "after":
                    np.matmul(X.T, dZ, out=dW)
                t0 = time.perf_counter()
                opt.step(params, grads)
                total += time.perf_counter() - t0
            res[mode].append(1e3 * total / steps)
    return float(np.median(res["alone"])), float(np.median(res["after"]))


def time_products_alone(n, rounds):
    """Seconds of an epoch of products alone and the 2048³ peak, alternated `rounds` times: a list of
    (seconds, peak GFLOP/s) pairs. Per batch: X·W1, H·W2 forward; Hᵀ·dZ2, dZ2·W2ᵀ, Xᵀ·dZ1 backward."""
    rng = np.random.default_rng(0)
    X = rng.random((BATCH, 784), dtype=np.float32)
    W1 = rng.standard_normal((784, HIDDEN), dtype=np.float32)
    W2 = rng.standard_normal((HIDDEN, 10), dtype=np.float32)
    H, dH, dW1 = (
        np.empty((BATCH, HIDDEN), np.float32),
        np.empty((BATCH, HIDDEN), np.float32),
        np.empty_like(W1),
    )
    L, dW2 = np.empty((BATCH, 10), np.float32), np.empty_like(W2)
    sizes = [min(BATCH, n - start) for start in range(0, n, BATCH)]
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for b in sizes:
            x, h, dh, l = X[:b], H[:b], dH[:b], L[:b]
            np.matmul(x, W1, out=h)
            np.matmul(h, W2, out=l)
            np.matmul(h.T, l, out=dW2)
            np.matmul(l, W2.T, out=dh)
            np.matmul(x.T, dh, out=dW1)
        out.append((time.perf_counter() - t0, common.gemm_peak_gflops()))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: HANDGRAD_DATA)")
    p.add_argument(
        "--rounds", type=int, default=6, help="epochs of each loop, alternated (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be positive")
    common.pin_threads()

    for line in common.machine_header():
        print(line)
    peak = common.gemm_peak_gflops()
    print(f"measured float32 GEMM peak (NumPy BLAS, 2048^3, best of 5): {peak:.1f} GFLOP/s")

    X, y = load_flat_splits(args.data_dir, "mnist").train
    n = len(y)
    lib_epoch, initial = library_epoch(X, y, args.seed)
    plain = PlainMLP(initial, args.seed)
    lib_times, plain_times, part_times = [], [], []
    over = {1: "round 1", 2: "round 2"}.get(args.rounds, f"rounds 2–{args.rounds}")
    print(f"\nA. handgrad's epoch vs a plain NumPy epoch, {n:,} images, alternated for {args.rounds} rounds:")
    for r in range(args.rounds):
        t0 = time.perf_counter()
        lib_acc = lib_epoch()
        lib_times.append(time.perf_counter() - t0)
        parts = dict.fromkeys(PARTS, 0.0)
        t0 = time.perf_counter()
        plain_acc = plain.epoch(X, y, parts)
        plain_times.append(time.perf_counter() - t0)
        part_times.append(parts)
        print(
            f"  round {r + 1}: handgrad {lib_times[-1]:.3f} s (train acc {100 * lib_acc:.2f}%), "
            f"plain {plain_times[-1]:.3f} s ({100 * plain_acc:.2f}%)",
            flush=True,
        )
    lib, bare = float(np.median(steady(lib_times))), float(np.median(steady(plain_times)))
    print(
        f"  median over {over}: handgrad {lib:.3f} s/epoch, plain NumPy {bare:.3f} s/epoch, "
        f"handgrad/plain {lib / bare:.3f}"
    )

    peak_after = common.gemm_peak_gflops()
    print(
        f"  GEMM peak measured again after the epochs: {peak_after:.1f} GFLOP/s; the higher of the two is used"
    )
    peak = max(peak, peak_after)

    print(f"\nB. the plain epoch part by part (median s/epoch over {over}):\n")
    med = {part: float(np.median([pt[part] for pt in steady(part_times)])) for part in PARTS}
    rows = [[part, f"{med[part]:.3f}", f"{100 * med[part] / bare:.1f}%"] for part in PARTS]
    rows.append(["epoch (whole)", f"{bare:.3f}", "100%"])
    common.print_table(["part", "s/epoch", "share"], rows)
    big_flops = 2.0 * n * 784 * HIDDEN  # each of the two large products
    for part in ("forward X·W1", "backward Xᵀ·dZ"):
        rate = big_flops / med[part] / 1e9
        print(f"  {part}: {rate:.1f} GFLOP/s, {100 * rate / peak:.0f}% of the measured peak")
    flops = gemm_flops_per_epoch(n)
    target = flops / 1e9 / peak / TARGET
    big = med["forward X·W1"] + med["backward Xᵀ·dZ"]
    print(
        f"  {TARGET:.0%} of the peak on {flops / 1e9:.1f} GFLOP per epoch needs an epoch of {target:.3f} s;"
    )
    print(
        f"  the two large products take {big:.3f} s of it, leaving {target - big:.3f} s for everything else "
        f"(now {bare - big:.3f} s)"
    )

    alone, after = time_momentum_update()
    print("\nC. the momentum update of W1 (784×512 float32, Momentum.step, 6 passes), median ms per step:")
    print(
        f"  on its own, arrays hot in cache: {alone:.3f} ms; right after the 256×784×512 product: "
        f"{after:.3f} ms ({after / alone:.2f}×)"
    )

    print(f"\nD. an epoch of nothing but its products, alternated with the 2048³ peak, {args.rounds} rounds:")
    fractions = []
    for seconds, round_peak in time_products_alone(n, args.rounds):
        fractions.append(flops / 1e9 / seconds / round_peak)
        print(
            f"  {seconds:.3f} s, {flops / 1e9 / seconds:.1f} GFLOP/s; peak {round_peak:.1f} GFLOP/s: "
            f"{100 * fractions[-1]:.0f}% of it"
        )
    print(
        f"  median {100 * np.median(fractions):.0f}%, best {100 * max(fractions):.0f}%: the most an epoch that also "
        f"does its element-wise work can reach here (target {TARGET:.0%})"
    )
    print(common.load_average_line("at the end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
