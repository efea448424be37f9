"""Speed of the reference MLP, side by side: handgrad, PyTorch CPU and scikit-learn on the same machine.

The reference network (784-512-10, ReLU, batch 256, momentum SGD lr 0.2 β 0.9, L2 λ 1e-4 on weights,
float32) is trained for a few epochs on the same MNIST training split by each library, each in its own
process with the same 2 BLAS/OpenMP threads. Reported per library: seconds per epoch (median and spread
over the epochs after the first), test accuracy after those epochs, peak memory, and the fraction of the
machine's measured float32 GEMM peak that an epoch reaches, counting 2·M·N·K FLOPs for every matrix
product of the forward and backward passes.

    python benchmarks/mlp_speed.py --data-dir ../shared/data --epochs 5

scikit-learn's MLPClassifier uses learning_rate_init=0.1 (its loss is scaled differently) and plain
momentum, as the issue that set these benchmarks specifies.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import numpy as np  # noqa: E402

HIDDEN, BATCH, LR, BETA, LAM = 512, 256, 0.2, 0.9, 1e-4


def gemm_flops_per_epoch(n_examples: int, sizes=(784, HIDDEN, 10)) -> float:
    """2·M·N·K per product: forward XW for each layer, backward XᵀdZ for each layer, and dZWᵀ for every
    layer but the first (nobody needs the gradient with respect to the pixels)."""
    flops = 0.0
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
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
    return s._replace(train=(flat(s.train[0]), s.train[1]), val=(flat(s.val[0]), s.val[1]),
                      test=(flat(s.test[0]), s.test[1]))


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


def worker_torch(args) -> dict:
    import torch

    torch.set_num_threads(common.THREADS)
    Xtr, ytr, Xte, yte = load_data(args.data_dir, args.dataset)
    X, y = torch.from_numpy(Xtr), torch.from_numpy(ytr)
    model, opt = torch_model_and_optimizer(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    times = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        torch_train_epoch(model, opt, X, y, gen)
        times.append(time.perf_counter() - t0)
    acc = torch_accuracy(model, Xte, yte)
    return {"times": times, "accuracy": acc, "peak_mb": common.peak_rss_mb(), "n_train": len(X)}


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
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            clf.partial_fit(Xtr, ytr, classes=classes)  # one pass over the data per call
            times.append(time.perf_counter() - t0)
    acc = float((clf.predict(Xte) == yte).mean())
    return {"times": times, "accuracy": acc, "peak_mb": common.peak_rss_mb(), "n_train": len(Xtr)}


def train_with_epoch_times(config) -> tuple[object, list[float]]:
    """Run the application's own ``handgrad.app.train(config)`` and return (result, training seconds per epoch).

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

    return TrainConfig(dataset=dataset or args.dataset, data_dir=args.data_dir, out=out_dir,
                       epochs=epochs or args.epochs, seed=args.seed if seed is None else seed,
                       plots=False, quiet=True)


def worker_handgrad(args) -> dict:
    import contextlib
    import io
    import tempfile

    n_train = len(load_data(args.data_dir, args.dataset)[1])  # the split the application trains on
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        result, times = train_with_epoch_times(handgrad_config(args, os.path.join(tmp, "run")))
    # the accuracy after the last epoch, like the other contenders (not the best epoch's)
    acc = result.history[-1]["test_accuracy"]
    return {"times": times, "accuracy": float(acc), "peak_mb": common.peak_rss_mb(), "n_train": n_train}


WORKERS = {"handgrad": worker_handgrad, "pytorch": worker_torch, "scikit-learn": worker_sklearn}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder holding mnist/ (default: HANDGRAD_DATA)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=sorted(WORKERS), action="append", help="run only these contenders")
    p.add_argument("--threads", type=int, default=common.THREADS,
                   help="BLAS/OpenMP threads for every contender (default: %(default)s, the issue's setting)")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error("--threads must be positive")

    common.THREADS = args.threads
    common.pin_threads(args.threads)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return 0

    for line in common.machine_header():
        print(line)
    peak = common.gemm_peak_gflops()
    print(f"measured float32 GEMM peak (NumPy BLAS, 2048^3, best of 5): {peak:.1f} GFLOP/s")
    load1 = os.getloadavg()[0]
    if load1 > 0.5 * (os.cpu_count() or 1) / 2:
        print(f"WARNING: load average {load1:.2f} on {os.cpu_count()} CPUs: other processes compete for the cores. "
              f"A multi-threaded BLAS then waits for its descheduled threads and every contender's time can grow "
              f"several-fold; rerun on a quiet machine (or compare with --threads 1).")
    base = [__file__, "--dataset", args.dataset, "--epochs", str(args.epochs), "--seed", str(args.seed),
            "--threads", str(args.threads)]
    if args.data_dir:
        base += ["--data-dir", args.data_dir]
    results = {}
    for name in args.only or list(WORKERS):
        print(f"running {name} ...", flush=True)
        results[name] = common.run_worker(base[0], base[1:] + ["--worker", name])

    peak_after = common.gemm_peak_gflops()
    print(f"measured again after the contenders: {peak_after:.1f} GFLOP/s; the higher of the two is used")
    peak = max(peak, peak_after)
    n_train = next(iter(results.values()))["n_train"]
    flops = gemm_flops_per_epoch(n_train)
    print(f"\n{args.epochs} epochs of {n_train} examples; GEMM work per epoch {flops / 1e9:.1f} GFLOP "
          f"= {flops / peak / 1e9:.3f} s at the measured peak\n")
    medians = {name: float(np.median(r["times"][1:] or r["times"])) for name, r in results.items()}
    ref_median = medians.get("pytorch")
    rows = []
    for name, r in results.items():
        steady = r["times"][1:] or r["times"]
        med = medians[name]
        rows.append([
            name,
            f"{med:.3f}",
            f"{min(steady):.3f}–{max(steady):.3f}",
            f"{med / ref_median:.2f}x" if ref_median else "-",
            f"{100 * r['accuracy']:.2f}%",
            f"{r['peak_mb']:.0f}",
            f"{100 * flops / 1e9 / med / peak:.0f}%",
        ])
    common.print_table(
        ["library", "s/epoch (median)", "spread", "time vs PyTorch", "test acc", "peak MB", "of GEMM peak"],
        rows,
    )
    if "handgrad" in results:
        hg = medians["handgrad"]
        print("\ntargets (issue 6):")
        if ref_median:
            print(f"  handgrad / PyTorch time   {hg / ref_median:.2f}  (≤ 0.90: {'met' if hg <= 0.9 * ref_median else 'NOT met'})")
        frac = flops / 1e9 / hg / peak
        print(f"  of the GEMM peak          {100 * frac:.0f}%  (≥ 75%: {'met' if frac >= 0.75 else 'NOT met'})")
        if "scikit-learn" in medians:
            sk = medians["scikit-learn"] / hg
            print(f"  scikit-learn / handgrad   {sk:.2f}  (≥ 1.5: {'met' if sk >= 1.5 else 'NOT met'})")
        mb = results["handgrad"]["peak_mb"]
        print(f"  handgrad peak memory      {mb:.0f} MB  (< 1000 MB: {'met' if mb < 1000 else 'NOT met'})")
    print("load average (1, 5, 15 min) at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
