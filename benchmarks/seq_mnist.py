"""Sequential MNIST (each image read as 28 rows of 28 pixels): test accuracy of the recurrent recipes,
mean over seeds. Issue 13's figures.

    HANDGRAD_DATA=DIR python benchmarks/seq_mnist.py                         # lstm, gru, rnn; seeds 0 1
    HANDGRAD_DATA=DIR python benchmarks/seq_mnist.py --models lstm --seeds 0 --epochs 4

Each run is an ordinary ``handgrad train --model M --dataset mnist --seed S`` (the defaults of
``app/models/rnn.py``; ``--epochs`` shortens the schedule, which then anneals to the shorter end), run in
its own process with its folder under ``--out`` (``runs/bench-seq/<model>-seed<S>``); a folder that holds
a run is continued with ``--resume``, so an interrupted benchmark picks up where it stopped. Test accuracy
is that of the best epoch by validation accuracy (validation = the last 10,000 training images).
"""

from __future__ import annotations

import argparse
import csv
import os
import pathlib
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import THREADS, machine_header, print_table

TARGETS = {"lstm": 0.988, "gru": 0.988, "rnn": 0.975}


def run(model, seed, args):
    out = pathlib.Path(args.out) / f"{model}-seed{seed}"
    command = [
        sys.executable,
        "-m",
        "handgrad",
        "train",
        "--model",
        model,
        "--dataset",
        "mnist",
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--no-plots",
        "--quiet",
    ]
    if args.epochs:
        command += ["--epochs", str(args.epochs)]
    if (out / "last.npz").exists():
        command = [sys.executable, "-m", "handgrad", "train", "--resume", str(out), "--no-plots", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    if args.data_dir:
        env["HANDGRAD_DATA"] = args.data_dir
    print("  " + " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, env=env)
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    seconds = sum(float(r["seconds"]) for r in rows) / len(rows)
    return float(best["test_accuracy"]), int(best["epoch"]), len(rows), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["lstm", "gru", "rnn"], choices=sorted(TARGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (default: the recipe's)")
    parser.add_argument("--data-dir", help="folder holding mnist/ (default: $HANDGRAD_DATA)")
    parser.add_argument("--out", default="runs/bench-seq")
    parser.add_argument(
        "--threads",
        type=int,
        default=THREADS,
        help="BLAS threads per run (1 is faster on a machine other jobs keep busy)",
    )
    args = parser.parse_args(argv)
    for line in machine_header():
        print(line)
    rows = []
    for model in args.models:
        results = [run(model, seed, args) for seed in args.seeds]
        accs = [r[0] for r in results]
        mean = sum(accs) / len(accs)
        met = "met" if mean >= TARGETS[model] else "not met"
        rows.append(
            [
                model,
                str(len(accs)),
                f"**{100 * mean:.2f}%**",
                f"{100 * min(accs):.2f}%",
                f"{100 * max(accs):.2f}%",
                ", ".join(f"{r[1]}/{r[2]}" for r in results),
                f"{sum(r[3] for r in results) / len(results):.0f}",
                f"≥ {100 * TARGETS[model]:.1f}%: {met}",
            ]
        )
    print()
    print_table(
        ["model", "seeds", "mean test accuracy", "min", "max", "best epoch / epochs", "s/epoch", "target"],
        rows,
    )


if __name__ == "__main__":
    main()
