"""Speed of the reference MLP, side by side: handgrad, PyTorch CPU and scikit-learn on the same machine.

The reference network (784-512-10, ReLU, batch 256, momentum SGD lr 0.2 β 0.9, L2 λ 1e-4 on weights,
float32) is trained for a few epochs on the same MNIST training split by each library, each in its own
process with the same 2 BLAS/OpenMP threads.

The epochs are measured in interleaved rounds. The machine is shared and its speed drifts by ±20% over
minutes, so timing all of one library's epochs, then all of the next one's, compares them under different
conditions, and the ratios moved from run to run on unchanged code (0.91× to 0.99× handgrad/PyTorch).
Instead, every library's worker process is started first (it loads its data and builds its model once),
then in each round every library in turn trains one epoch and reports its time. A worker trains only when
the driver asks it to; the others wait on their standard input, so only one library runs at a time and
they never compete for the cores. The order rotates each round, so that no library is always the first
after the driver's pause, and before each epoch the driver waits PAUSE seconds, for the previous worker's
BLAS/OpenMP threads to stop spinning.

handgrad is timed through the application's own training loop, ``handgrad.app.train`` with the reference
configuration: its worker calls ``train`` on the driver's first request (``train`` sets up, then starts
epoch 1 at once, so its setup falls in handgrad's first turn, outside the timed part), and its
``on_epoch_end`` reports the epoch's ``train_seconds`` (the training loop only, without the evaluation and
checkpoint writes that follow each epoch) and then waits for the next request.

Reported per library: seconds per epoch (median and spread over the epochs after the first), time vs
PyTorch, test accuracy after those epochs, peak memory, and the fraction of the machine's measured float32
GEMM peak that an epoch reaches, counting 2·M·N·K FLOPs for every matrix product of the forward and
backward passes. Time vs PyTorch is the median, over the rounds after the first, of the ratio of a library's
epoch time to PyTorch's in the same round; the handgrad/PyTorch ratio of every round is printed as well,
with its median and min–max.

The GEMM peak drifts with the machine as the epochs do (one run here measured 103 GFLOP/s before the
epochs and 90 after, another 176), so it is measured in every round, just before the round's epochs (best
of 3 products of 2048³). The fraction of the peak is then, like the time ratio, the median over the rounds
of each epoch's rate divided by its own round's peak; the fraction against the highest peak seen in the
whole run, the machine at its fastest, is printed beside it, as the conservative figure.

    python benchmarks/mlp_speed.py --data-dir ../shared/data --epochs 30   # the README's run

scikit-learn's MLPClassifier uses learning_rate_init=0.1 (its loss is scaled differently) and plain
momentum, as the issue that set these benchmarks specifies.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import itertools

import common
import numpy as np

HIDDEN, BATCH, LR, BETA, LAM = 512, 256, 0.2, 0.9, 1e-4
PAUSE = 0.3  # seconds the driver waits before each epoch; an idle BLAS thread spins for about 0.1 s


def gemm_flops_per_epoch(n_examples: int, sizes=(784, HIDDEN, 10)) -> float:
    """2·M·N·K per product: forward XW for each layer, backward XᵀdZ for each layer, and dZWᵀ for every
    layer but the first (nobody needs the gradient with respect to the pixels)."""
    flops = 0.0
    for i, (d_in, d_out) in enumerate(itertools.pairwise(sizes)):
        flops += 2 * n_examples * d_in * d_out  # forward
        flops += 2 * n_examples * d_in * d_out  # weight gradient
        if i > 0:
            flops += 2 * n_examples * d_in * d_out  # input gradient
    return flops


def load_flat_splits(data_dir: str | None, dataset: str):
    """handgrad's ``load_splits`` (50,000 train / 10,000 validation / test for the full datasets), with each
    split's images flattened to float32 rows of 784 pixels."""
    from handgrad.datasets import load_splits

    s = load_splits(dataset, data_dir=data_dir, download=False)
    flat = lambda X: np.ascontiguousarray(X.reshape(len(X), -1), dtype=np.float32)  # noqa: E731
    return s._replace(
        train=(flat(s.train[0]), s.train[1]),
        val=(flat(s.val[0]), s.val[1]),
        test=(flat(s.test[0]), s.test[1]),
    )


def load_data(data_dir: str | None, dataset: str):
    """(X_train, y_train, X_test, y_test) of ``load_flat_splits``."""
    s = load_flat_splits(data_dir, dataset)
    return s.train[0], s.train[1], s.test[0], s.test[1]


def torch_model_and_optimizer(seed: int):
    """The reference network and optimiser in PyTorch: 784-512-10 ReLU, Glorot-uniform weights, zero biases,
    momentum SGD lr 0.2 β 0.9 with weight decay 1e-4 on the weights only (a parameter group of their own)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD(
        [{"params": weights, "weight_decay": LAM}, {"params": biases, "weight_decay": 0.0}],
        lr=LR,
        momentum=BETA,
    )
    return model, opt


def torch_train_epoch(model, opt, X, y, gen) -> None:
    """One epoch: a shuffle of the tensors (X, y) drawn from the generator `gen`, then one optimiser step on
    the mean cross-entropy of each mini-batch of BATCH examples."""
    import torch
    from torch.nn.functional import cross_entropy

    perm = torch.randperm(len(X), generator=gen)
    for i in range(0, len(X), BATCH):
        idx = perm[i : i + BATCH]
        opt.zero_grad(set_to_none=True)
        loss = cross_entropy(model(X[idx]), y[idx])
        loss.backward()
        opt.step()


def torch_accuracy(model, X: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        return float((model(torch.from_numpy(X)).argmax(1).numpy() == y).mean())


# The workers' side: one process per library, which trains one epoch per request from the driver.


def send(message: dict) -> None:
    """A worker's message to the driver: one JSON line on the process's own standard output
    (``sys.__stdout__``, since handgrad's worker sends from inside ``train``, where ``sys.stdout`` is
    redirected)."""
    print(json.dumps(message), file=sys.__stdout__, flush=True)


def next_request() -> bool:
    """Wait for the driver's next line: True for "epoch" (train one more), False for "stop" (or no driver)."""
    return sys.stdin.readline().strip() == "epoch"


def serve_epochs(train_epoch) -> None:
    """Call ``train_epoch()`` once per "epoch" request and send its seconds, until "stop"."""
    while next_request():
        t0 = time.perf_counter()
        train_epoch()
        send({"seconds": time.perf_counter() - t0})


def worker_torch(args) -> dict:
    import torch

    torch.set_num_threads(common.THREADS)
    Xtr, ytr, Xte, yte = load_data(args.data_dir, args.dataset)
    X, y = torch.from_numpy(Xtr), torch.from_numpy(ytr)
    model, opt = torch_model_and_optimizer(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    send({"n_train": len(X)})  # ready
    serve_epochs(lambda: torch_train_epoch(model, opt, X, y, gen))
    return {"accuracy": torch_accuracy(model, Xte, yte), "peak_mb": common.peak_rss_mb()}


def worker_sklearn(args) -> dict:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    Xtr, ytr, Xte, yte = load_data(args.data_dir, args.dataset)
    clf = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,),
        solver="sgd",
        momentum=BETA,
        nesterovs_momentum=False,
        batch_size=BATCH,
        alpha=LAM,
        learning_rate_init=0.1,
        random_state=args.seed,
    )
    classes = np.arange(10)
    send({"n_train": len(Xtr)})  # ready
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        serve_epochs(lambda: clf.partial_fit(Xtr, ytr, classes=classes))  # one pass over the data per call
    acc = float((clf.predict(Xte) == yte).mean())
    return {"accuracy": acc, "peak_mb": common.peak_rss_mb()}


def train_with_epoch_times(config) -> tuple[object, list[float]]:
    """Run the application's ``handgrad.app.train(config)``; return (result, training seconds per epoch).

    An epoch's time is the application's own ``train_seconds``: its training loop only, from the first
    mini-batch to the last optimiser step, as for the other contenders, without the evaluation on
    validation and test and the checkpoint writes that ``train`` does after each epoch.
    """
    from handgrad.app import train

    result = train(config)
    return result, [float(row["train_seconds"]) for row in result.history]


def handgrad_config(args, out_dir, epochs=None, seed=None, dataset=None):
    """The reference configuration (the application's defaults) for a benchmark run: no plots, no output."""
    from handgrad.app import TrainConfig

    return TrainConfig(
        dataset=dataset or args.dataset,
        data_dir=args.data_dir,
        out=out_dir,
        epochs=epochs or args.epochs,
        seed=args.seed if seed is None else seed,
        plots=False,
        quiet=True,
    )


def worker_handgrad(args) -> dict:
    import contextlib
    import io

    from handgrad.app import train
    from handgrad.app.allocator import keep_freed_memory

    keep_freed_memory()  # as handgrad's command line does
    n_train = len(load_data(args.data_dir, args.dataset)[1])  # the split the application trains on
    send({"n_train": n_train})  # ready

    def on_epoch_end(epoch, row):
        send({"seconds": float(row["train_seconds"])})
        return next_request()  # False ends train() after this epoch

    # train() sets up and then starts epoch 1 at once: call it on the driver's first request, so that the
    # driver starts every epoch
    if not next_request():
        raise SystemExit("handgrad worker: stopped before its first epoch")
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        result = train(handgrad_config(args, os.path.join(tmp, "run")), on_epoch_end=on_epoch_end)
    # the accuracy after the last epoch, like the other contenders (not the best epoch's)
    return {"accuracy": float(result.history[-1]["test_accuracy"]), "peak_mb": common.peak_rss_mb()}


WORKERS = {"handgrad": worker_handgrad, "pytorch": worker_torch, "scikit-learn": worker_sklearn}


# The driver's side.


class Worker(common.WorkerProcess):
    """The driver's end of one library's worker process: started once, then asked for one epoch at a time."""

    def __init__(self, name: str, argv: list[str]):
        super().__init__(name, [sys.executable, *argv, "--worker", name])

    def train_epoch(self) -> float:
        self.times.append(self.request("epoch")["seconds"])  # seconds of each epoch, one per round
        return self.times[-1]

    def finish(self) -> dict:
        """The worker's last report (test accuracy, peak memory), after which it exits."""
        result = self.request("stop")
        self.proc.wait()
        return result


def steady(values: list) -> list:
    """The values of the rounds after the first (the first holds each library's warm-up), or all if one."""
    return values[1:] or values


def round_ratios(workers: dict, name: str, ref: str) -> list[float]:
    """Epoch time of `name` over that of `ref` in each round after the first."""
    return [a / b for a, b in zip(steady(workers[name].times), steady(workers[ref].times))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: HANDGRAD_DATA)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument(
        "--epochs", type=int, default=5, help="epochs per library, one per round (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=sorted(WORKERS), action="append", help="run only these contenders")
    p.add_argument(
        "--threads",
        type=int,
        default=common.THREADS,
        help="BLAS/OpenMP threads for every contender (default: %(default)s, the issue's setting)",
    )
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads < 1 or args.epochs < 1:
        p.error("--threads and --epochs must be positive")

    common.THREADS = args.threads
    common.pin_threads(args.threads)
    if args.worker:
        send(WORKERS[args.worker](args))
        return 0

    for line in common.machine_header():
        print(line)
    load1 = os.getloadavg()[0]
    if load1 > 0.5 * (os.cpu_count() or 1) / 2:
        print(
            f"WARNING: load average {load1:.2f} on {os.cpu_count()} CPUs: other processes compete for the "
            "cores. "
            f"A multi-threaded BLAS then waits for its descheduled threads and every contender's time can "
            "grow "
            f"several-fold; rerun on a quiet machine (or compare with --threads 1)."
        )
    worker_argv = [
        __file__,
        "--dataset",
        args.dataset,
        "--epochs",
        str(args.epochs),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
    ]
    if args.data_dir:
        worker_argv += ["--data-dir", args.data_dir]
    names = list(dict.fromkeys(args.only or WORKERS))
    both = "handgrad" in names and "pytorch" in names
    print(f"starting {', '.join(names)} (each loads its data and builds its model) ...", flush=True)
    workers = {name: Worker(name, worker_argv) for name in names}
    try:
        ready = {name: workers[name].receive() for name in names}  # each has loaded its data
        n_train = ready[names[0]]["n_train"]
        print(
            f"{args.epochs} rounds; in each, one epoch per library in turn, the order rotated each round:",
            flush=True,
        )
        peaks = []  # the GEMM peak of each round, GFLOP/s
        for r in range(args.epochs):
            order = names[r % len(names) :] + names[: r % len(names)]
            time.sleep(PAUSE)
            peaks.append(common.gemm_peak_gflops(repeats=3))
            parts = [f"peak {peaks[-1]:.0f} GFLOP/s"]
            for name in order:
                time.sleep(PAUSE)
                parts.append(f"{name} {workers[name].train_epoch():.3f} s")
            if both:
                parts.append(
                    f"handgrad/PyTorch {workers['handgrad'].times[-1] / workers['pytorch'].times[-1]:.3f}"
                )
            print(f"  round {r + 1}: " + ", ".join(parts), flush=True)
        results = {name: workers[name].finish() for name in names}
    finally:
        for w in workers.values():
            w.close()

    flops = gemm_flops_per_epoch(n_train)
    peak = max(peaks)
    rounds = f"rounds 2–{args.epochs}" if args.epochs > 1 else "round 1"
    print(
        f"\n{args.epochs} epochs of {n_train} examples per library; GEMM work per epoch {flops / 1e9:.1f} "
        "GFLOP"
    )
    print(
        f"float32 GEMM peak (NumPy BLAS, 2048^3, best of 3, once per round), all {args.epochs} rounds: "
        "median "
        f"{np.median(peaks):.1f} GFLOP/s, min–max {min(peaks):.1f}–{peak:.1f}; "
        f"at the highest, {peak:.1f}, the products need {flops / peak / 1e9:.3f} s an epoch"
    )
    if both:
        hg_ratios = round_ratios(workers, "handgrad", "pytorch")
        print(
            f"handgrad/PyTorch time per round, {rounds}: median {np.median(hg_ratios):.3f}, "
            f"min–max {min(hg_ratios):.3f}–{max(hg_ratios):.3f}"
        )
    print(
        f"s/epoch and spread over {rounds}; time vs PyTorch: the median of the per-round ratios over "
        f"{rounds}\n"
    )
    medians = {name: float(np.median(steady(w.times))) for name, w in workers.items()}
    vs_torch = {}  # the headline: median of the per-round ratios
    if "pytorch" in names:
        vs_torch = {name: float(np.median(round_ratios(workers, name, "pytorch"))) for name in names}
    # fraction of the GEMM peak: the median of each round's (epoch rate / that round's peak)
    of_peak = {
        name: float(np.median([flops / 1e9 / t / pk for t, pk in zip(steady(w.times), steady(peaks))]))
        for name, w in workers.items()
    }
    of_highest = {name: flops / 1e9 / medians[name] / peak for name in workers}  # the conservative figure
    rows = []
    for name, r in results.items():
        times = steady(workers[name].times)
        med = medians[name]
        rows.append(
            [
                name,
                f"{med:.3f}",
                f"{min(times):.3f}–{max(times):.3f}",
                f"{vs_torch[name]:.2f}x" if name in vs_torch else "-",
                f"{100 * r['accuracy']:.2f}%",
                f"{r['peak_mb']:.0f}",
                f"{100 * of_peak[name]:.0f}%",
                f"{100 * of_highest[name]:.0f}%",
            ]
        )
    common.print_table(
        [
            "library",
            "s/epoch (median)",
            "spread",
            "time vs PyTorch",
            "test acc",
            "peak MB",
            "of GEMM peak",
            "of highest peak",
        ],
        rows,
    )
    print(
        "of GEMM peak: the median over the rounds of the epoch's rate / its round's peak; of highest peak: "
        "the median epoch against the highest peak of the run"
    )
    if "handgrad" in results:
        print("\ntargets (issue 6):")
        if "handgrad" in vs_torch:
            ratio = vs_torch["handgrad"]
            print(
                f"  handgrad / PyTorch time   {ratio:.2f}  (≤ 0.90: {'met' if ratio <= 0.9 else 'NOT met'}; "
                f"median of the per-round ratios)"
            )
        frac = of_peak["handgrad"]
        print(
            f"  of the GEMM peak          {100 * frac:.0f}%  (≥ 75%: {'met' if frac >= 0.75 else 'NOT met'}; "
            f"against the highest peak of the run {100 * of_highest['handgrad']:.0f}%)"
        )
        if "scikit-learn" in results:
            sk = float(np.median(round_ratios(workers, "scikit-learn", "handgrad")))
            print(
                f"  scikit-learn / handgrad   {sk:.2f}  (≥ 1.5: {'met' if sk >= 1.5 else 'NOT met'}; "
                f"median of the per-round ratios)"
            )
        mb = results["handgrad"]["peak_mb"]
        print(f"  handgrad peak memory      {mb:.0f} MB  (< 1000 MB: {'met' if mb < 1000 else 'NOT met'})")
    print(common.load_average_line("at the end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
