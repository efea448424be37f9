"""Is this working tree's training epoch as fast as at git revision REV? Both versions side by side.

    python benchmarks/commit_speed.py --base HEAD~3 --data-dir ../shared/data             # the reference MLP
    python benchmarks/commit_speed.py --base main --model cnn --limit 6400 --rounds 20    # 50 steps of 128

The code at REV is exported with ``git archive`` into a temporary folder; the current working tree
(committed or not) is the new version. One worker process per version is started, each with its own
``PYTHONPATH`` (its ``handgrad`` is printed, to show which code runs) and the same number of BLAS/OpenMP
threads (printed by each worker from threadpoolctl). Each worker runs the application's own training
loop, ``handgrad.app.train(TrainConfig(model=..., dataset="mnist", epochs=ROUNDS, limit=...))``: its
``on_epoch_end`` sends the epoch's ``train_seconds`` (the loop over the mini-batches only, without the
evaluation and checkpoints after it) and then waits for the driver's next "go" line on standard input.

So only one version trains at a time. In every round each version trains one epoch, the order rotating
each round, after a pause of PAUSE seconds for the other worker's BLAS threads to stop spinning (as in
``mlp_speed.py``). Reported: each version's median s/epoch and spread, and the median of the per-round
ratios new/base with their min–max, over the rounds after the first (the first holds the warm-up). The
machine drifts over minutes, so the per-round ratio is the figure to read; a ratio of 1.00 means "not
slower". Both versions train from the same seed on the same data, so their epochs do the same arithmetic
unless the change under test alters it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common
import numpy as np
from mlp_speed import PAUSE, send, steady

REPO = pathlib.Path(__file__).resolve().parent.parent


# The workers' side: one process per version, which trains one epoch per "go" from the driver.


def next_go() -> bool:
    """Wait for the driver's next line: True for "go" (train one more epoch), False for "stop" (or none)."""
    return sys.stdin.readline().strip() == "go"


def worker(args) -> None:
    import handgrad
    from handgrad.app import TrainConfig, train

    send({"handgrad": handgrad.__file__, "blas": common.blas_info()})  # ready: which code, which BLAS

    def on_epoch_end(epoch, row):
        send({"seconds": float(row["train_seconds"])})
        return next_go()  # False ends train() after this epoch

    if not next_go():  # train() starts epoch 1 right after its setup: start it on the first "go"
        return
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        config = TrainConfig(
            model=args.model,
            dataset="mnist",
            data_dir=args.data_dir,
            epochs=args.rounds,
            limit=args.limit,
            out=os.path.join(tmp, "run"),
            plots=False,
            quiet=True,
        )
        train(config, on_epoch_end=on_epoch_end)
    send({"peak_mb": common.peak_rss_mb()})


# The driver's side.


def git(*argv: str) -> str:
    proc = subprocess.run(["git", "-C", str(REPO), *argv], check=True, capture_output=True, text=True)
    return proc.stdout.strip()


def export_revision(rev: str, dest: pathlib.Path) -> str:
    """Write ``src/`` as it is at git revision `rev` under `dest`; return the full commit hash."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    tar = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "src"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        if hasattr(tarfile, "data_filter"):  # Python 3.12, and 3.8.17+ point releases
            archive.extractall(dest, filter="data")
        else:
            archive.extractall(dest)
    return commit


class Worker:
    """The driver's end of one version's worker process, asked for one epoch at a time."""

    def __init__(self, name: str, src: pathlib.Path, argv: list[str]):
        self.name, self.src = name, src
        self.times: list[float] = []
        self.stderr = tempfile.TemporaryFile("w+")  # read back only if the worker fails
        env = common.worker_env()
        env["PYTHONPATH"] = str(src)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *argv, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
        )

    def receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.stderr.seek(0)
            raise RuntimeError(
                f"the {self.name} worker exited with status {self.proc.wait()}:\n{self.stderr.read()[-4000:]}"
            )
        return json.loads(line)

    def request(self, command: str) -> dict:
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the worker has exited: receive() says why
        return self.receive()

    def train_epoch(self) -> float:
        self.times.append(self.request("go")["seconds"])
        return self.times[-1]

    def close(self) -> None:
        if self.proc.poll() is None:  # still running after an error elsewhere
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="git revision to compare the working tree against")
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: HANDGRAD_DATA)")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp", help="(default: %(default)s)")
    p.add_argument(
        "--rounds", type=int, default=20, help="epochs per version, one per round (default: %(default)s)"
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="train on the first N images only, to keep an epoch short (the CNN: e.g. 6400)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=common.THREADS,
        help="BLAS/OpenMP threads for both versions (default: %(default)s)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.threads < 1 or (args.limit is not None and args.limit < 1):
        p.error("--rounds, --threads and --limit must be positive")

    common.THREADS = args.threads
    common.pin_threads(args.threads)
    if args.worker:
        worker(args)
        return 0

    for line in common.machine_header():
        print(line)
    worker_argv = [
        "--base",
        args.base,
        "--model",
        args.model,
        "--rounds",
        str(args.rounds),
        "--threads",
        str(args.threads),
    ]
    worker_argv += ["--data-dir", args.data_dir] if args.data_dir else []
    worker_argv += ["--limit", str(args.limit)] if args.limit else []
    with tempfile.TemporaryDirectory(prefix="handgrad-base-") as tmp:
        commit = export_revision(args.base, pathlib.Path(tmp))
        dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--", "src") else ""
        print(f"base: {args.base} = {commit[:12]}, exported to {tmp}")
        print(f"new:  the working tree at {git('rev-parse', '--short=12', 'HEAD')}{dirty}")
        versions = {"base": pathlib.Path(tmp) / "src", "new": REPO / "src"}
        print(
            f"starting both workers ({args.model}, {args.rounds} rounds, limit {args.limit}) ...", flush=True
        )
        workers = {name: Worker(name, src, worker_argv) for name, src in versions.items()}
        try:
            for name, w in workers.items():
                ready = w.receive()
                if not pathlib.Path(ready["handgrad"]).resolve().is_relative_to(w.src.resolve()):
                    raise RuntimeError(
                        f"the {name} worker imported {ready['handgrad']}, not the code under {w.src}"
                    )
                print(f"  {name}: {ready['handgrad']}; BLAS: {ready['blas']}")
            names = list(workers)
            for r in range(args.rounds):
                order = names[r % 2 :] + names[: r % 2]
                parts = []
                for name in order:
                    time.sleep(PAUSE)
                    parts.append(f"{name} {workers[name].train_epoch():.3f} s")
                ratio = workers["new"].times[-1] / workers["base"].times[-1]
                print(f"  round {r + 1}: {', '.join(parts)}, new/base {ratio:.3f}", flush=True)
            peaks = {name: w.request("stop")["peak_mb"] for name, w in workers.items()}
        finally:
            for w in workers.values():
                w.close()

    rounds = f"rounds 2–{args.rounds}" if args.rounds > 2 else f"round {args.rounds}"
    ratios = [a / b for a, b in zip(steady(workers["new"].times), steady(workers["base"].times))]
    print(f"\ns/epoch over {rounds} (the first round is the warm-up)\n")
    rows = []
    for name, w in workers.items():
        times = steady(w.times)
        spread = f"{min(times):.3f}–{max(times):.3f}"
        rows.append([name, f"{np.median(times):.3f}", spread, f"{peaks[name]:.0f}"])
    common.print_table(["version", "s/epoch (median)", "spread", "peak MB"], rows)
    print(
        f"\nnew/base time per round, {rounds}: median {np.median(ratios):.3f}, "
        f"min–max {min(ratios):.3f}–{max(ratios):.3f}  (below 1: the working tree is faster)"
    )
    print(common.load_average_line("at the end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
