"""Accuracy of the reference configuration over several seeds, on MNIST and Fashion-MNIST, handgrad beside PyTorch.

The reference configuration: 784-512-10 ReLU MLP, Glorot-uniform weights, zero biases, batch 256, momentum
SGD lr 0.2 β 0.9, weight decay 1e-4 on the weights only, 20 epochs, constant learning rate; the model kept
is the one with the best validation accuracy, evaluated on the test set.

handgrad: each run is the application's own ``handgrad.app.train`` with its defaults, what
``handgrad train --dataset NAME --seed S`` does, without plots.

PyTorch: the same configuration, built by ``mlp_speed.torch_model_and_optimizer`` and trained by
``mlp_speed.torch_train_epoch`` (the network, optimiser and epoch loop of ``mlp_speed.py``), in its own
process with the same 2 threads, on the same split (handgrad's ``load_splits``: 50,000 train / 10,000
validation / test). Validation accuracy is measured before training (epoch 0) and after every epoch; the
test accuracy reported is that of the epoch with the best validation accuracy (the earliest on a tie: like
handgrad, a later epoch replaces the best only with a strictly higher validation accuracy).

PyTorch is there as a trusted implementation of the same configuration: it shows what the configuration
itself reaches, so that a shortfall against a target can be told apart from a fault in handgrad.

Reported per dataset and library: the mean, min and max test accuracy over the seeds, the training time per
epoch (median over all epochs of all seeds; the training loop only, as in ``mlp_speed.py``), the total wall
time of the runs (data loading, training and evaluation; for PyTorch also importing torch, which with its
first optimiser takes some 4–5 s per run, but not starting the interpreter), and per dataset the difference
of the mean accuracies, handgrad − PyTorch, in percentage points.

    python benchmarks/accuracy.py --data-dir ../shared/data                        # 3 seeds × 2 datasets × 20 epochs
    python benchmarks/accuracy.py --data-dir ../shared/data --seeds 1 --epochs 2   # a quick check
    python benchmarks/accuracy.py --data-dir ../shared/data --only pytorch         # one library only

Targets (issue 7): mean test accuracy ≥ 98.2% on MNIST and ≥ 89.0% on Fashion-MNIST over 3 seeds (handgrad's).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common
import mlp_speed
import numpy as np

TARGETS = {"mnist": 0.982, "fashion-mnist": 0.890}
LIBRARIES = ["handgrad", "pytorch"]


def run_handgrad(args, dataset: str, seed: int) -> dict:
    config = mlp_speed.handgrad_config(args, None, epochs=args.epochs, seed=seed, dataset=dataset)
    with tempfile.TemporaryDirectory() as tmp:
        config.out = os.path.join(tmp, "run")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            result, times = mlp_speed.train_with_epoch_times(config)
        wall = time.perf_counter() - t0
    return {
        "test_accuracy": result.test_accuracy,
        "best_epoch": result.best_epoch,
        "epoch_times": times,
        "wall": wall,
    }


def worker_torch(data_dir: str | None, dataset: str, seed: int, epochs: int) -> dict:
    """Train the reference configuration in PyTorch; return the best-by-validation epoch's test accuracy."""
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(common.THREADS)
    s = mlp_speed.load_flat_splits(data_dir, dataset)
    X, y = torch.from_numpy(s.train[0]), torch.from_numpy(s.train[1])
    model, opt = mlp_speed.torch_model_and_optimizer(seed)
    gen = torch.Generator().manual_seed(seed)
    # as in handgrad, the initial parameters are epoch 0, the best so far until an epoch beats them
    best_epoch, best_val = 0, mlp_speed.torch_accuracy(model, *s.val)
    test_acc = mlp_speed.torch_accuracy(model, *s.test)
    times = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        mlp_speed.torch_train_epoch(model, opt, X, y, gen)
        times.append(time.perf_counter() - t0)
        val_acc = mlp_speed.torch_accuracy(model, *s.val)
        if val_acc > best_val:  # strictly higher: the earliest epoch wins a tie
            best_epoch, best_val = epoch, val_acc
            test_acc = mlp_speed.torch_accuracy(model, *s.test)
    return {
        "test_accuracy": test_acc,
        "best_epoch": best_epoch,
        "epoch_times": times,
        "wall": time.perf_counter() - t_start,
    }


def run_torch(args, dataset: str, seed: int) -> dict:
    worker_args = [
        "--worker",
        "pytorch",
        "--datasets",
        dataset,
        "--seed",
        str(seed),
        "--epochs",
        str(args.epochs),
    ]
    if args.data_dir:
        worker_args += ["--data-dir", args.data_dir]
    return common.run_worker(os.path.abspath(__file__), worker_args)


RUNNERS = {"handgrad": run_handgrad, "pytorch": run_torch}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data-dir", default=None, help="folder holding mnist/ and fashion-mnist/ (default: HANDGRAD_DATA)"
    )
    p.add_argument("--datasets", default="mnist,fashion-mnist", help="comma-separated (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0, 1, …, N−1 (default: %(default)s)")
    p.add_argument(
        "--epochs", type=int, default=20, help="epochs per run (default: %(default)s, the reference)"
    )
    p.add_argument("--only", choices=LIBRARIES, action="append", help="run only this library (repeatable)")
    p.add_argument("--worker", choices=["pytorch"], help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # the worker's one seed
    args = p.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1:
        p.error("--seeds and --epochs must be positive")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    libraries = [name for name in LIBRARIES if name in (args.only or LIBRARIES)]

    common.pin_threads()
    if args.worker:
        print(json.dumps(worker_torch(args.data_dir, datasets[0], args.seed, args.epochs)))
        return 0

    for line in common.machine_header():
        print(line)
    print(
        f"reference configuration, {args.epochs} epochs, seeds 0..{args.seeds - 1}, "
        f"{' and '.join(libraries)}\n",
        flush=True,
    )

    rows = []
    for dataset in datasets:
        runs = {name: [] for name in libraries}
        for seed in range(args.seeds):
            for name in libraries:
                r = RUNNERS[name](args, dataset, seed)
                runs[name].append(r)
                print(
                    f"  {dataset} seed {seed} {name:<8}: test accuracy {100 * r['test_accuracy']:.2f}% "
                    f"(best epoch {r['best_epoch']}), {np.median(r['epoch_times']):.3f} s/epoch, "
                    f"{r['wall']:.1f} s in all",
                    flush=True,
                )
        means = {name: np.mean([r["test_accuracy"] for r in runs[name]]) for name in libraries}
        for name in libraries:
            acc = np.array([r["test_accuracy"] for r in runs[name]])
            epoch_times = np.concatenate([r["epoch_times"] for r in runs[name]])
            target = TARGETS.get(dataset) if name == "handgrad" else None
            verdict = (
                "-"
                if target is None or args.epochs < 20 or args.seeds < 3
                else ("met" if acc.mean() >= target else "NOT met")
            )
            diff = "-"
            if name == "handgrad" and "pytorch" in means:
                diff = f"{100 * (means['handgrad'] - means['pytorch']):+.2f} pp"
            rows.append(
                [
                    dataset,
                    name,
                    str(args.seeds),
                    f"{100 * acc.mean():.2f}%",
                    f"{100 * acc.min():.2f}%",
                    f"{100 * acc.max():.2f}%",
                    diff,
                    f"≥ {100 * target:.1f}% ({verdict})" if target else "-",
                    f"{np.median(epoch_times):.3f}",
                    f"{sum(r['wall'] for r in runs[name]):.1f}",
                ]
            )
    print()
    common.print_table(
        [
            "dataset",
            "library",
            "seeds",
            "mean acc",
            "min",
            "max",
            "handgrad − PyTorch",
            "target",
            "s/epoch (train)",
            "total s",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
