"""Training speed of the CNN recipe's network: handgrad (NumPy) beside the same network in PyTorch on the CPU.

    python benchmarks/cnn_speed.py                       # 60 timed batches of 128 each, extrapolated
    python benchmarks/cnn_speed.py --batches 391         # one whole epoch of MNIST's 50,000 training images

Both sides train the same architecture (``handgrad train --model cnn``'s: three blocks of 3×3 convolution,
batch norm, ReLU and 2×2 max-pool with 16, 32, 64 channels, dropout 0.25, dense 128 with batch norm, 10
outputs) with Adam, in float32, with the same batch size and the same number of BLAS/OpenMP threads
(2), each in its own fresh process so that its peak memory (ru_maxrss) is its own. One training step is
forward, softmax cross-entropy, backward and the Adam update; the data augmentation of the recipe is not
part of it (it is timed separately for handgrad, as its cost per batch). A few warm-up steps are not timed.
The time per epoch is the measured time per step × ⌈50,000 / batch⌉ steps (the training split of MNIST),
labelled "extrapolated" unless ``--batches`` covers a whole epoch; evaluation time is for 10,000 images in
eval mode, in batches of 500. Inputs are real MNIST training images when ``HANDGRAD_DATA`` (or the cache)
has them, else uniform noise of the same shape (the arithmetic is the same).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import THREADS, machine_header, peak_rss_mb, pin_threads, print_table, run_worker  # noqa: E402

TRAIN_IMAGES = 50_000  # MNIST's training split in handgrad (the last 10,000 of the 60,000 are validation)
EVAL_IMAGES, EVAL_BATCH = 10_000, 500


def images(n_needed, seed=0):
    import numpy as np

    try:
        from handgrad.datasets import load_splits

        X, y = load_splits("mnist", download=False).train
        source = "MNIST training images"
    except Exception:  # noqa: BLE001 - no data: noise of the same shape
        rng = np.random.default_rng(seed)
        X, y = rng.random((n_needed, 28, 28), dtype=np.float32), rng.integers(0, 10, n_needed)
        source = "uniform noise (MNIST not found)"
    reps = math.ceil(n_needed / len(X))
    X, y = np.concatenate([X] * reps)[:n_needed], np.concatenate([y] * reps)[:n_needed]
    return np.ascontiguousarray(X[:, None], dtype=np.float32), y.astype(np.int64), source


def worker_handgrad(batch, batches, warmup):
    import numpy as np

    from handgrad.app.config import TrainConfig
    from handgrad.app.models import arch_from_config, build_model
    from handgrad.ch06_feedforward import SoftmaxCrossEntropy
    from handgrad.ch07_regularization import augment_batch
    from handgrad.ch08_optimization import Adam

    config = TrainConfig(model="cnn")
    arch = arch_from_config(config, 10, (28, 28))
    rng = np.random.default_rng(0)
    model = build_model(arch, rng)
    model.reuse_buffers()  # as the application's training loop does
    loss_fn, opt = SoftmaxCrossEntropy(), Adam(config.lr)
    params = {name: p for name, p, _ in model.parameters()}
    grads = {name: g for name, _, g in model.parameters()}
    X, y, source = images((warmup + batches) * batch)
    model.train()
    times = []
    for i in range(warmup + batches):
        xb, yb = X[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
        t0 = time.perf_counter()
        loss_fn.forward(model.forward(xb), yb)
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step(params, grads)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    aug = []
    for i in range(10):
        start = (i % (warmup + batches)) * batch
        t0 = time.perf_counter()
        augment_batch(X[start:start + batch], rng, config.augment_shift, config.augment_degrees)
        aug.append(time.perf_counter() - t0)
    model.eval()
    Xe = X[:EVAL_IMAGES] if len(X) >= EVAL_IMAGES else images(EVAL_IMAGES)[0]
    t0 = time.perf_counter()
    for s in range(0, EVAL_IMAGES, EVAL_BATCH):
        model.forward(Xe[s:s + EVAL_BATCH])
    eval_seconds = time.perf_counter() - t0
    return {"step_seconds": times, "eval_seconds": eval_seconds, "augment_seconds": sorted(aug)[len(aug) // 2],
            "peak_rss_mb": peak_rss_mb(), "source": source}


def worker_torch(batch, batches, warmup):
    import torch
    from torch import nn

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

    model = nn.Sequential(*block(1, 16), *block(16, 32), *block(32, 64), nn.Flatten(), nn.Dropout(0.25),
                          nn.Linear(64 * 3 * 3, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    X, y, source = images((warmup + batches) * batch)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    model.train()
    times = []
    for i in range(warmup + batches):
        xb, yb = X[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    model.eval()
    Xe = X[:EVAL_IMAGES] if len(X) >= EVAL_IMAGES else torch.from_numpy(images(EVAL_IMAGES)[0])
    t0 = time.perf_counter()
    with torch.no_grad():
        for s in range(0, EVAL_IMAGES, EVAL_BATCH):
            model(Xe[s:s + EVAL_BATCH])
    eval_seconds = time.perf_counter() - t0
    return {"step_seconds": times, "eval_seconds": eval_seconds, "peak_rss_mb": peak_rss_mb(), "source": source,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=60, help="timed training steps per contender")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--worker", choices=["handgrad", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        pin_threads()
        fn = worker_handgrad if args.worker == "handgrad" else worker_torch
        print(json.dumps(fn(args.batch_size, args.batches, args.warmup)))
        return 0

    pin_threads()
    for line in machine_header():
        print(line)
    common = ["--batch-size", str(args.batch_size), "--batches", str(args.batches), "--warmup", str(args.warmup)]
    results = {}
    for name in ("handgrad", "torch"):  # one after the other, each in a fresh process
        results[name] = run_worker(__file__, ["--worker", name, *common])
    steps = math.ceil(TRAIN_IMAGES / args.batch_size)
    whole = args.batches >= steps
    label = "measured" if whole else f"extrapolated from {args.batches} steps"
    print(f"network: the CNN recipe (conv 16-32-64 + BN + ReLU + max-pool, dense 128 + BN, dropout 0.25), Adam, "
          f"float32, batch {args.batch_size}, {THREADS} threads each; inputs: {results['handgrad']['source']}")
    print(f"epoch = {steps} steps ({TRAIN_IMAGES:,} images); {label}; evaluation: {EVAL_IMAGES:,} images in batches "
          f"of {EVAL_BATCH}")
    print()
    rows = []
    for name, r in results.items():
        t = sorted(r["step_seconds"])
        median, total = t[len(t) // 2], sum(t)
        epoch = total / len(t) * steps if not whole else sum(r["step_seconds"][:steps])
        r.update(median_step=median, epoch_seconds=epoch)
        rows.append([name, f"{1000 * median:.1f}", f"{1000 * total / len(t):.1f}", f"{epoch:.1f}",
                     f"{r['eval_seconds']:.2f}", f"{r['peak_rss_mb']:.0f}"])
    ratio = results["handgrad"]["epoch_seconds"] / results["torch"]["epoch_seconds"]
    rows.append(["handgrad / torch", f"{results['handgrad']['median_step'] / results['torch']['median_step']:.2f}x", "",
                 f"{ratio:.2f}x", f"{results['handgrad']['eval_seconds'] / results['torch']['eval_seconds']:.2f}x", ""])
    print_table(["contender", "median ms/step", "mean ms/step", f"s/epoch ({'measured' if whole else 'extrapolated'})",
                 "eval s (10k imgs)", "peak RSS MB"], rows)
    print()
    aug = results["handgrad"]["augment_seconds"]
    print(f"handgrad's augmentation (shift ±2 px, rotation ±10°) of one batch of {args.batch_size}: {1000 * aug:.1f} ms "
          f"(+{aug * steps:.1f} s per epoch, not in the table)")
    print(f"target: handgrad's epoch within 3x of PyTorch's -> {ratio:.2f}x: {'met' if ratio <= 3 else 'NOT met'}; "
          f"peak memory < 2 GB -> {max(r['peak_rss_mb'] for r in results.values()):.0f} MB: "
          f"{'met' if max(r['peak_rss_mb'] for r in results.values()) < 2048 else 'NOT met'}")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "step_seconds"} for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
