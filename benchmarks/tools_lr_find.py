"""The learning-rate range test (``handgrad lr-find``) on the reference MLP and the CNN recipe: issue 14's
figure. The suggestion should lie within a decade of the rate each recipe was tuned to (0.2 for the MLP
with momentum SGD, 3e-3 for the CNN with Adam).

    HANDGRAD_DATA=DIR python benchmarks/tools_lr_find.py                   # MLP on MNIST and the sample,
                                                                           # CNN on 10,000 MNIST images
    HANDGRAD_DATA=DIR python benchmarks/tools_lr_find.py --cnn-limit 0     # the CNN on all of MNIST

Each row is an ordinary ``handgrad lr-find`` call with its defaults (1e-6 to 10 over 100 steps, β 0.98, stop
at 4× the minimum); the plots of the MNIST rows are copied to ``docs/lr-find-mlp.png`` and
``docs/lr-find-cnn.png`` for the README.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import shutil
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import machine_header, pin_threads, print_table

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", help="folder holding mnist/ (default: $HANDGRAD_DATA)")
    parser.add_argument("--cnn-limit", type=int, default=10_000, help="CNN: training images (0: all)")
    parser.add_argument("--out", default="runs/bench-lr-find", help="folder for the CSVs and plots")
    parser.add_argument(
        "--docs", action=argparse.BooleanOptionalAction, default=True, help="copy the MNIST plots into docs/"
    )
    args = parser.parse_args()
    pin_threads()
    from handgrad.app import TrainConfig
    from handgrad.app.tools._trials import train_command
    from handgrad.app.tools.lr_find import lr_find

    jobs = [
        ("mlp", "mnist", TrainConfig(dataset="mnist", data_dir=args.data_dir), 0.2, "lr-find-mlp.png"),
        ("mlp", "mnist-sample", TrainConfig(dataset="mnist-sample"), 0.2, None),
        (
            "cnn",
            "mnist",
            TrainConfig(model="cnn", dataset="mnist", data_dir=args.data_dir, limit=args.cnn_limit or None),
            3e-3,
            "lr-find-cnn.png",
        ),
    ]
    rows = []
    for model, dataset, config, reference, doc in jobs:
        out = pathlib.Path(args.out) / f"{model}-{dataset}"
        t0 = time.perf_counter()
        r = lr_find(config, out=out, log=lambda *a: None)
        seconds = time.perf_counter() - t0
        within = lambda lr: abs(math.log10(lr / reference)) <= 1  # noqa: B023, E731
        command = train_command(config).replace("handgrad train", "handgrad lr-find")
        rows.append(
            [
                command,
                f"{reference:g}",
                r.steps,
                "yes" if r.diverged else "no",
                f"{r.suggestion:.3g} ({'within' if within(r.suggestion) else 'NOT within'} a decade)"
                if r.suggestion
                else "none",
                f"{r.min_loss_lr / 10:.3g} ({'within' if within(r.min_loss_lr / 10) else 'NOT within'})",
                f"{seconds:.1f}",
            ]
        )
        if doc and args.docs and r.plot_path:
            shutil.copyfile(r.plot_path, ROOT / "docs" / doc)
    for line in machine_header():
        print(line)
    print_table(
        ["command", "tuned lr", "steps", "diverged", "steepest descent", "minimum / 10", "seconds"], rows
    )


if __name__ == "__main__":
    main()
