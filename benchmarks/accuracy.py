"""Accuracy of the reference configuration over several seeds, on MNIST and Fashion-MNIST.

Each run is the application's own ``handgrad.app.train`` with its defaults (784-512-10 ReLU MLP, batch 256,
momentum SGD lr 0.2 β 0.9, weight decay 1e-4 on weights, 20 epochs, constant learning rate): what
``handgrad train --dataset NAME --seed S`` does, without plots. Reported per dataset: the mean, min and
max test accuracy of the best-by-validation model, the training time per epoch (median over all epochs
of all seeds; the training loop only, as in ``mlp_speed.py``) and the total wall time of the runs.

    python benchmarks/accuracy.py --data-dir ../shared/data                        # 3 seeds × 2 datasets × 20 epochs
    python benchmarks/accuracy.py --data-dir ../shared/data --seeds 1 --epochs 2   # a quick check

Targets (issue 7): mean test accuracy ≥ 98.2% on MNIST and ≥ 89.0% on Fashion-MNIST over 3 seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import mlp_speed  # noqa: E402

import numpy as np  # noqa: E402

TARGETS = {"mnist": 0.982, "fashion-mnist": 0.890}


def run_one(args, dataset: str, seed: int) -> dict:
    config = mlp_speed.handgrad_config(args, None, epochs=args.epochs, seed=seed, dataset=dataset)
    with tempfile.TemporaryDirectory() as tmp:
        config.out = os.path.join(tmp, "run")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            result, times = mlp_speed.train_with_epoch_times(config)
        wall = time.perf_counter() - t0
    return {"test_accuracy": result.test_accuracy, "best_epoch": result.best_epoch, "epoch_times": times,
            "wall": wall}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ and fashion-mnist/ (default: HANDGRAD_DATA)")
    p.add_argument("--datasets", default="mnist,fashion-mnist", help="comma-separated (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0, 1, …, N−1 (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=20, help="epochs per run (default: %(default)s, the reference)")
    args = p.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1:
        p.error("--seeds and --epochs must be positive")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]

    common.pin_threads()
    for line in common.machine_header():
        print(line)
    print(f"reference configuration, {args.epochs} epochs, seeds 0..{args.seeds - 1}\n", flush=True)

    rows = []
    for dataset in datasets:
        runs = []
        for seed in range(args.seeds):
            r = run_one(args, dataset, seed)
            runs.append(r)
            print(f"  {dataset} seed {seed}: test accuracy {100 * r['test_accuracy']:.2f}% "
                  f"(best epoch {r['best_epoch']}), {np.median(r['epoch_times']):.3f} s/epoch, "
                  f"{r['wall']:.1f} s in all", flush=True)
        acc = np.array([r["test_accuracy"] for r in runs])
        epoch_times = np.concatenate([r["epoch_times"] for r in runs])
        target = TARGETS.get(dataset)
        verdict = "-" if target is None or args.epochs < 20 or args.seeds < 3 else (
            "met" if acc.mean() >= target else "NOT met")
        rows.append([
            dataset,
            str(args.seeds),
            f"{100 * acc.mean():.2f}%",
            f"{100 * acc.min():.2f}%",
            f"{100 * acc.max():.2f}%",
            f"≥ {100 * target:.1f}% ({verdict})" if target else "-",
            f"{np.median(epoch_times):.3f}",
            f"{sum(r['wall'] for r in runs):.1f}",
        ])
    print()
    common.print_table(["dataset", "seeds", "mean acc", "min", "max", "target", "s/epoch (train)", "total s"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
