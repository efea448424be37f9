"""The cost of ``handgrad train --monitor`` (book §11.5): epoch time of the reference MLP with and without.

Runs alternate (plain, monitored, plain, …) so both see the same machine load; the table shows the fastest
and the median training time of an epoch (``train_seconds`` in metrics.csv: the mini-batch steps only) and
of the whole epoch with evaluation and the monitor's validation-batch pass (``seconds``).

    HANDGRAD_DATA=DIR python benchmarks/monitor_overhead.py [--dataset mnist] [--runs 3] [--epochs 2]
"""

import argparse
import csv
import os
import statistics
import tempfile

from handgrad.app import TrainConfig, train


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    times = {False: {"train_seconds": [], "seconds": []}, True: {"train_seconds": [], "seconds": []}}
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as devnull:
        for run in range(args.runs):
            for monitor in (False, True):
                out = f"{tmp}/{run}-{monitor}"
                config = TrainConfig(
                    dataset=args.dataset,
                    epochs=args.epochs,
                    monitor=monitor,
                    out=out,
                    plots=False,
                    quiet=True,
                )
                train(config, stdout=devnull)
                with open(f"{out}/metrics.csv", newline="") as f:
                    for row in csv.DictReader(f):
                        for key in ("train_seconds", "seconds"):
                            times[monitor][key].append(float(row[key]))
    print(f"reference MLP on {args.dataset}, {args.runs} runs x {args.epochs} epochs each way")
    print(f"{'':>12}  {'steps: fastest':>14}  {'median':>7}  {'epoch: fastest':>14}  {'median':>7}")
    for monitor in (False, True):
        t, s = times[monitor]["train_seconds"], times[monitor]["seconds"]
        print(
            f"{'--monitor' if monitor else 'plain':>12}  {min(t):13.2f}s  {statistics.median(t):6.2f}s  "
            f"{min(s):13.2f}s  {statistics.median(s):6.2f}s"
        )
    ratio = min(times[True]["seconds"]) / min(times[False]["seconds"])
    print(f"fastest epoch with the monitor / without: {ratio:.3f}")


if __name__ == "__main__":
    main()
