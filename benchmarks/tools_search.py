"""Random against grid search on the MLP with the same trials and the same budget per trial: issue 14's
figure after Bergstra & Bengio (2012) and the book's figure 11.2. With two hyperparameters of which one
matters much more (the learning rate) than the other (here the weight decay, over a short run), a k × k grid
tries only k learning rates in k² trials; random search tries k² of them.

    HANDGRAD_DATA=DIR python benchmarks/tools_search.py                 # 4, 9 and 16 trials, 3 random seeds
    HANDGRAD_DATA=DIR python benchmarks/tools_search.py --limit 0 --epochs 5 --jobs 2

Every trial is an ordinary ``handgrad search`` trial (same model, data, epochs, seed of the initialisation);
the grids are ``--method grid --grid-points k`` for k = 2, 3, 4, the random searches ``--trials 16`` with
``--search-seed`` 0, 1, 2, of which the first 4 and 9 trials are the smaller random searches (trial i does
not depend on the count). The table gives the best validation accuracy per trial count; the test set is
not used. Search folders go under ``--out`` and are continued when the benchmark is run again.

The MNIST search of the README (≥ 98.8% test accuracy, chosen on validation) is a long run, printed by
``--mnist-command`` rather than run here.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import machine_header, print_table

SPACE = "lr=log(0.003,3) weight_decay=log(1e-6,1e-3)"
MNIST_SPACE = (
    "lr=log(1e-3,0.5) optimizer=choice(momentum,adam) schedule=choice(constant,cosine) "
    "hidden=choice(800,1024,1024-1024) dropout=uniform(0,0.5) batch_norm=choice(on,off) "
    "augment=choice(on,off) augment_shift=int(1,2) augment_degrees=uniform(0,12) "
    "weight_decay=log(1e-6,1e-3)"
)
MNIST_COMMAND = f"handgrad search '{MNIST_SPACE}' --trials 24 --epochs 30 --jobs 2 --out runs/search-mnist"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", help="folder holding mnist/ (default: $HANDGRAD_DATA)")
    parser.add_argument("--limit", type=int, default=5000, help="training images per trial (0: all 50,000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden", default="128", help="hidden layer sizes of the MLP")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="random searches' seeds")
    parser.add_argument("--jobs", type=int, default=1, help="trials at once (one BLAS thread each)")
    parser.add_argument("--out", default="runs/bench-search")
    parser.add_argument("--mnist-command", action="store_true", help="print the MNIST search's command")
    args = parser.parse_args()
    if args.mnist_command:
        print(MNIST_COMMAND)
        return
    from handgrad.app.tools.search import search

    base = dict(
        dataset="mnist",
        data_dir=args.data_dir,
        limit=args.limit or None,
        epochs=args.epochs,
        hidden=tuple(int(h) for h in args.hidden.split(",")),
        plots=False,
    )
    out, quiet = pathlib.Path(args.out), lambda *a: None
    t0 = time.perf_counter()
    grids = {
        k * k: search(
            SPACE,
            base,
            method="grid",
            grid_points=k,
            out=out / f"grid-{k}",
            jobs=args.jobs,
            plot=False,
            log=quiet,
        )
        for k in (2, 3, 4)
    }
    randoms = [
        search(SPACE, base, trials=16, seed=s, out=out / f"random-{s}", jobs=args.jobs, plot=False, log=quiet)
        for s in args.seeds
    ]
    seconds = time.perf_counter() - t0
    rows = []
    for n in (4, 9, 16):
        g = grids[n].best
        best = [max(t["val_accuracy"] for t in r.trials if t["trial"] <= n) for r in randoms]
        lrs = sorted({t["settings"]["lr"] for t in grids[n].trials})
        rows.append(
            [
                n,
                f"{100 * g['val_accuracy']:.2f}% (lr {g['settings']['lr']:g})",
                len(lrs),
                f"{100 * sum(best) / len(best):.2f}%",
                f"{100 * min(best):.2f}–{100 * max(best):.2f}%",
                n,
            ]
        )
    for line in machine_header():
        print(line)
    print(
        f"space: {SPACE}; MLP {args.hidden}, {args.epochs} epochs on {args.limit or 50000:,} MNIST images "
        f"per trial, validation on 10,000; {seconds:.0f} s in all"
    )
    print_table(
        [
            "trials",
            "grid: best val acc",
            "grid: distinct lr",
            f"random: mean best of {len(best)} seeds",
            "random: min–max",
            "random: distinct lr",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
