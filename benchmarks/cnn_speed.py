"""Training speed of the CNN recipe's network: handgrad (NumPy) beside the same network in PyTorch on the CPU.

    python benchmarks/cnn_speed.py                       # 60 timed steps of 128 each, in rounds of 10
    python benchmarks/cnn_speed.py --batches 200 --eval-rounds 5

Both sides train the same architecture (``handgrad train --model cnn``'s: three blocks of 3×3 convolution,
batch norm, ReLU and 2×2 max-pool with 16, 32, 64 channels, dropout 0.25, dense 128 with batch norm, 10
outputs) with Adam, in float32, with the same batch size and the same number of BLAS/OpenMP threads
(2), each in its own process so that its peak memory (ru_maxrss) is its own. The two processes are
driven round by round: ``--round`` steps of one, then of the other, the order alternating, with a short
pause between turns; "handgrad / torch" for the step is the median of the per-round ratios of median
steps. One training step is forward, softmax cross-entropy, backward and the Adam update; the data
augmentation of the recipe is not part of it (it is timed separately for handgrad, as its cost per
batch). A few warm-up steps are not timed. The time per epoch is the median step × ⌈50,000 / batch⌉
steps (the training split of MNIST). Evaluation is of 10,000 images in eval mode (PyTorch under
``no_grad``), in batches of the CNN model's evaluation batch, the best of ``--eval-rounds`` alternating
runs; one-image prediction is a forward pass of a single image in eval mode, as ``predict`` and the web
page make it. Inputs are real MNIST training images when ``HANDGRAD_DATA`` (or the cache)
has them, else uniform noise of the same shape (the arithmetic is the same).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import (
    THREADS,
    load_average_line,
    machine_header,
    peak_rss_mb,
    pin_threads,
    print_table,
    torch_cnn,
    worker_env,
)

PAUSE = 0.2  # seconds between the two workers' turns

TRAIN_IMAGES = 50_000  # MNIST's training split in handgrad (the last 10,000 of the 60,000 are validation)
EVAL_IMAGES, EVAL_BATCH = 10_000, 500


def images(n_needed, seed=0):
    import numpy as np

    try:
        from handgrad.datasets import load_splits

        X, y = load_splits("mnist", download=False).train
        source = "MNIST training images"
    except Exception:  # no data: noise of the same shape
        rng = np.random.default_rng(seed)
        X, y = rng.random((n_needed, 28, 28), dtype=np.float32), rng.integers(0, 10, n_needed)
        source = "uniform noise (MNIST not found)"
    reps = math.ceil(n_needed / len(X))
    X, y = np.concatenate([X] * reps)[:n_needed], np.concatenate([y] * reps)[:n_needed]
    return np.ascontiguousarray(X[:, None], dtype=np.float32), y.astype(np.int64), source


def handgrad_contender(batch, warmup, eval_batch):
    """(train_steps(k) -> seconds per step, evaluate() -> seconds, predict_one() -> seconds, info)."""
    import numpy as np

    from handgrad.app.allocator import keep_freed_memory
    from handgrad.app.config import TrainConfig
    from handgrad.app.models import arch_from_config, build_model
    from handgrad.ch06_feedforward import SoftmaxCrossEntropy
    from handgrad.ch07_regularization import augment_batch
    from handgrad.ch08_optimization import Adam

    keep_freed_memory()  # as handgrad's command line does
    config = TrainConfig(model="cnn")
    arch = arch_from_config(config, 10, (28, 28))
    rng = np.random.default_rng(0)
    model = build_model(arch, rng)
    model.reuse_buffers()  # as the application's training loop does
    loss_fn, opt = SoftmaxCrossEntropy().reuse_buffers(), Adam(config.lr)
    params = {name: p for name, p, _ in model.parameters()}
    grads = {name: g for name, _, g in model.parameters()}
    X, y, source = images(max(EVAL_IMAGES, 64 * batch))
    n_batches, position = len(X) // batch, [0]

    def train_steps(k):
        model.train()
        times = []
        for _ in range(k):
            i = position[0] % n_batches
            position[0] += 1
            xb, yb = X[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]
            t0 = time.perf_counter()
            loss_fn.forward(model.forward(xb), yb)
            model.backward(loss_fn.backward(), need_input_grad=False)
            opt.step(params, grads)
            times.append(time.perf_counter() - t0)
        return times

    def evaluate():
        model.eval()
        t0 = time.perf_counter()
        for s in range(0, EVAL_IMAGES, eval_batch):
            model.forward(X[s : s + eval_batch])
        return time.perf_counter() - t0

    def predict_one():
        model.eval()
        t0 = time.perf_counter()
        model.forward(X[:1])
        return time.perf_counter() - t0

    train_steps(warmup)
    aug = []
    for i in range(10):
        t0 = time.perf_counter()
        augment_batch(X[i * batch : (i + 1) * batch], rng, config.augment_shift, config.augment_degrees)
        aug.append(time.perf_counter() - t0)
    return train_steps, evaluate, predict_one, {"source": source, "augment_seconds": median(aug)}


def torch_contender(batch, warmup, eval_batch):
    import torch
    from torch import nn

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)

    model = torch_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    X, y, source = images(max(EVAL_IMAGES, 64 * batch))
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    n_batches, position = len(X) // batch, [0]

    def train_steps(k):
        model.train()
        times = []
        for _ in range(k):
            i = position[0] % n_batches
            position[0] += 1
            xb, yb = X[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        return times

    def evaluate():
        model.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            for s in range(0, EVAL_IMAGES, eval_batch):
                model(X[s : s + eval_batch])
        return time.perf_counter() - t0

    def predict_one():
        model.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            model(X[:1])
        return time.perf_counter() - t0

    train_steps(warmup)
    return (
        train_steps,
        evaluate,
        predict_one,
        {"source": source, "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
    )


def serve(name, args):
    """A worker: build one contender, then answer one JSON line per request read from stdin."""
    pin_threads()
    fn = handgrad_contender if name == "handgrad" else torch_contender
    train_steps, evaluate, predict_one, info = fn(args.batch_size, args.warmup, args.eval_batch)
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        request = line.split()
        if not request:
            break
        if request[0] == "train":
            result = train_steps(int(request[1]))
        elif request[0] == "eval":
            result = evaluate()
        elif request[0] == "predict":
            result = sorted(predict_one() for _ in range(int(request[1])))[int(request[1]) // 2]
        else:
            result = {"peak_rss_mb": peak_rss_mb()}
        print(json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=60, help="timed training steps per contender")
    parser.add_argument("--round", type=int, default=10, help="steps per contender and round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--eval-rounds", type=int, default=3, help="evaluations of the 10,000 images each")
    parser.add_argument(
        "--eval-batch",
        type=int,
        default=None,
        help="images per forward pass in evaluation (default: the CNN model's eval batch)",
    )
    parser.add_argument("--worker", choices=["handgrad", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.eval_batch is None:
        from handgrad.app.models import CNN_EVAL_BATCH_SIZE

        args.eval_batch = CNN_EVAL_BATCH_SIZE
    if args.worker:
        serve(args.worker, args)
        return 0

    pin_threads()
    for line in machine_header():
        print(line)
    common = [
        "--batch-size",
        str(args.batch_size),
        "--warmup",
        str(args.warmup),
        "--eval-batch",
        str(args.eval_batch),
    ]
    names = ("handgrad", "torch")
    argv = [sys.executable, __file__, "--worker"]
    procs = {
        name: subprocess.Popen(
            [*argv, name, *common], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=worker_env()
        )
        for name in names
    }
    info = {name: json.loads(procs[name].stdout.readline()) for name in names}

    def ask(name, request):
        time.sleep(PAUSE)  # the other worker's thread pool stops spinning
        procs[name].stdin.write(request + "\n")
        procs[name].stdin.flush()
        return json.loads(procs[name].stdout.readline())

    steps = {name: [] for name in names}
    round_ratios, evals, rounds = [], {name: [] for name in names}, math.ceil(args.batches / args.round)
    for r in range(rounds):  # one round = args.round steps of each contender, the order alternating
        order = names if r % 2 == 0 else names[::-1]
        got = {name: ask(name, f"train {args.round}") for name in order}
        for name in names:
            steps[name] += got[name]
        round_ratios.append(median(got["handgrad"]) / median(got["torch"]))
    for r in range(args.eval_rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            evals[name].append(ask(name, "eval"))
    predict = {name: ask(name, "predict 50") for name in names}
    rss = {name: ask(name, "rss")["peak_rss_mb"] for name in names}
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()

    report(args, info, steps, round_ratios, evals, predict, rss, rounds)
    return 0


def report(args, info, steps, round_ratios, evals, predict, rss, rounds):
    epoch_steps = math.ceil(TRAIN_IMAGES / args.batch_size)
    print(
        f"network: the CNN recipe (conv 16-32-64 + BN + ReLU + max-pool, dense 128 + BN, dropout 0.25), "
        f"Adam, float32, batch {args.batch_size}, {THREADS} threads each; inputs: "
        f"{info['handgrad']['source']}"
    )
    print(
        f"{rounds} rounds of {args.round} steps per contender, alternating; epoch = {epoch_steps} steps "
        f"({TRAIN_IMAGES:,} images) from the median step; evaluation: {EVAL_IMAGES:,} images in batches of "
        f"{args.eval_batch}, best of {args.eval_rounds}; one-image prediction: median of 50"
    )
    print()
    rows = []
    for name in ("handgrad", "torch"):
        m = median(steps[name])
        rows.append(
            [
                name,
                f"{1000 * m:.1f}",
                f"{m * epoch_steps:.1f}",
                f"{min(evals[name]):.2f}",
                f"{1000 * predict[name]:.2f}",
                f"{rss[name]:.0f}",
            ]
        )
    step_ratio = median(round_ratios)
    eval_ratio = min(evals["handgrad"]) / min(evals["torch"])
    spread = f"rounds {min(round_ratios):.2f}-{max(round_ratios):.2f}"
    rows.append(
        [
            "handgrad / torch",
            f"{step_ratio:.2f}x ({spread})",
            "",
            f"{eval_ratio:.2f}x",
            f"{predict['handgrad'] / predict['torch']:.2f}x",
            "",
        ]
    )
    print_table(
        ["contender", "median ms/step", "s/epoch", "eval s (10k imgs)", "predict 1 image ms", "peak RSS MB"],
        rows,
    )
    print()
    aug = info["handgrad"]["augment_seconds"]
    print(
        f"handgrad's augmentation (shift ±2 px, rotation ±10°) of one batch of {args.batch_size}: "
        f"{1000 * aug:.1f} ms (+{aug * epoch_steps:.1f} s per epoch, not in the table)"
    )
    peak = rss["handgrad"]  # the target is handgrad's; PyTorch's peak is in the table beside it
    print(
        f"targets: step <= 1.5x PyTorch's (aim 1.25x) -> {step_ratio:.2f}x: "
        f"{'met' if step_ratio <= 1.5 else 'NOT met'}; evaluation <= 1.1x -> {eval_ratio:.2f}x: "
        f"{'met' if eval_ratio <= 1.1 else 'NOT met'}; handgrad's peak memory < 1 GB -> {peak:.0f} MB: "
        f"{'met' if peak < 1024 else 'NOT met'}"
    )
    print(load_average_line("at end"))


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


if __name__ == "__main__":
    sys.exit(main())
