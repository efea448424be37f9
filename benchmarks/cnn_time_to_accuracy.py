"""Time to accuracy: the CNN preset for 99.5% on MNIST, its training time, and the same recipe in PyTorch.

    HANDGRAD_DATA=DIR python benchmarks/cnn_time_to_accuracy.py                 # seeds 0 and 1, both sides
    HANDGRAD_DATA=DIR python benchmarks/cnn_time_to_accuracy.py --epochs 12     # the preset, longer
    HANDGRAD_DATA=DIR python benchmarks/cnn_time_to_accuracy.py --no-torch --seeds 2

For each seed in turn, handgrad then PyTorch (each in its own process with ``common.THREADS`` BLAS/OpenMP
threads, one at a time, so neither shares the cores with the other):

- **handgrad**: the ordinary command line, ``handgrad train --model cnn`` with ``PRESET``'s options (printed
  in the table), in a run folder under ``--out``. Its result is what ``handgrad train`` reports: the test
  accuracy of the epoch with the best validation accuracy. *Training time* is the sum over epochs of
  ``metrics.csv``'s ``train_seconds`` — the mini-batch steps with their augmentation, what the schedule and
  budget are about — and *wall* is the whole command, with the per-epoch evaluation of validation and test
  sets, checkpoints and the start-up.
- **PyTorch**: the same recipe written for torch — the network of ``common.torch_cnn`` (PyTorch's own
  initialisation), the same 50,000 / 10,000 split from ``handgrad.datasets``, mini-batches of the same size
  reshuffled every epoch, the same augmentation (per image an integer shift uniform in ±``augment_shift`` px
  and a rotation uniform in ±``augment_degrees``, bilinear with zeros outside, by ``F.affine_grid`` and
  ``F.grid_sample``; checked against handgrad's ``transform_images`` before training), ``torch.optim.Adam``
  at the same rate with the same linear warmup and cosine annealing per step (``LambdaLR`` over the
  schedule ``handgrad train`` builds, ``app.recipes.lr_schedule``), and the best epoch by validation
  accuracy. Training time is its mini-batch loop, augmentation included; its per-epoch evaluation is left
  out the same way.

The test set is never used to choose anything: the preset was chosen on validation accuracy, and each run
reports the test accuracy of its best validation epoch. The table gives each run and the mean over seeds;
the ratio is handgrad's mean training time over PyTorch's.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import pathlib
import shlex
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import THREADS, load_average_line, machine_header, print_table, torch_cnn, worker_env

# The preset: handgrad train --model cnn with these TrainConfig fields (the rest are the CNN recipe's).
# Chosen on validation accuracy, mean of seeds 0 and 1, among 10-epoch variants of the recipe (README).
PRESET = {"epochs": 10, "lr": 5e-3, "dropout": 0.1, "hidden": (256,)}


def preset_config(epochs=None, seed=0):
    from handgrad.app.config import TrainConfig

    fields = {**PRESET, **({"epochs": epochs} if epochs else {})}
    return TrainConfig(model="cnn", dataset="mnist", seed=seed, **fields)


def command(config) -> list:
    from handgrad.app.tools._trials import train_command

    return shlex.split(train_command(config))[2:]  # the options after "handgrad train"


# ----------------------------------------------------------------------------------------------------
# handgrad: the command line
# ----------------------------------------------------------------------------------------------------


def run_handgrad(config, out_dir) -> dict:
    run_dir = pathlib.Path(out_dir) / f"handgrad-seed{config.seed}"
    if (run_dir / "metrics.csv").exists():
        raise SystemExit(f"{run_dir} already holds a run: remove it or choose another --out")
    argv = [sys.executable, "-m", "handgrad", "train", *command(config)]
    argv += ["--seed", str(config.seed), "--out", str(run_dir), "--quiet", "--no-plots"]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=worker_env(), stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    best = max(rows, key=lambda r: float(r["val_accuracy"]))  # the first of equals, as EarlyStopping keeps
    return {
        "train_seconds": sum(float(r["train_seconds"]) for r in rows),
        "wall_seconds": wall,
        "epochs": len(rows),
        "best_epoch": int(best["epoch"]),
        "val_accuracy": float(best["val_accuracy"]),
        "test_accuracy": float(best["test_accuracy"]),
    }


# ----------------------------------------------------------------------------------------------------
# PyTorch: the same recipe, in a worker process of its own
# ----------------------------------------------------------------------------------------------------


def torch_augment(xb, shifts, radians):
    """handgrad's s(p) = c + R(θ)ᵀ (p − c − t) in affine_grid's normalised (x, y) coordinates (align_corners:
    −1 and 1 are the centres of the border pixels), read by grid_sample: bilinear, zeros outside."""
    import torch
    import torch.nn.functional as F

    h, w = xb.shape[-2:]
    cos, sin = torch.cos(radians), torch.sin(radians)
    ty, tx = shifts[:, 0] * 2 / (h - 1), shifts[:, 1] * 2 / (w - 1)
    theta = torch.stack(
        [
            torch.stack([cos, -sin * (h - 1) / (w - 1), -(cos * tx - sin * ty * (h - 1) / (w - 1))], 1),
            torch.stack([sin * (w - 1) / (h - 1), cos, -(sin * tx * (w - 1) / (h - 1) + cos * ty)], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(xb.shape), align_corners=True)
    return F.grid_sample(xb, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def check_torch_augment():
    """torch_augment against handgrad's transform_images on real shapes: the same transformation."""
    import numpy as np
    import torch

    from handgrad.ch07_regularization import transform_images

    rng = np.random.default_rng(0)
    X = rng.random((16, 1, 28, 28), dtype=np.float32)
    shifts, degrees = rng.integers(-2, 3, (16, 2)), rng.uniform(-10, 10, 16)
    ours = transform_images(X, shifts, degrees)
    theirs = torch_augment(
        torch.from_numpy(X), torch.from_numpy(shifts).float(), torch.from_numpy(np.deg2rad(degrees)).float()
    ).numpy()
    error = float(np.abs(ours - theirs).max())
    if error > 1e-4:
        raise SystemExit(f"the PyTorch augmentation differs from handgrad's by {error:.2e}")
    return error


def torch_worker(config_json) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from handgrad.app.config import TrainConfig
    from handgrad.app.recipes import lr_schedule
    from handgrad.datasets import load_splits

    config = TrainConfig.from_dict(json.loads(config_json))
    c = config.to_dict()
    torch.set_num_threads(THREADS)
    torch.manual_seed(c["seed"])
    augment_error = check_torch_augment()
    splits = load_splits("mnist")
    (Xtr, ytr), (Xva, yva), (Xte, yte) = splits.train, splits.val, splits.test
    as_tensor = lambda X: torch.from_numpy(np.ascontiguousarray(X[:, None], dtype=np.float32))  # noqa: E731
    Xtr, Xva, Xte = as_tensor(Xtr), as_tensor(Xva), as_tensor(Xte)
    ytr, yva, yte = (torch.from_numpy(y.astype(np.int64)) for y in (ytr, yva, yte))
    model = torch_cnn(c["channels"], c["hidden"], c["dropout"], 10)
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    schedule = lr_schedule(config, math.ceil(len(ytr) / c["batch_size"]))  # handgrad's, step by step
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: schedule(t) / c["lr"])

    def accuracy(X, y):
        model.eval()
        with torch.no_grad():
            hits = sum(
                int((model(X[s : s + 500]).argmax(1) == y[s : s + 500]).sum()) for s in range(0, len(y), 500)
            )
        return hits / len(y)

    train_seconds, best = 0.0, (-1.0, 0, 0.0)
    for epoch in range(1, c["epochs"] + 1):
        model.train()
        t0 = time.perf_counter()
        for idx in torch.randperm(len(ytr)).split(c["batch_size"]):
            xb = Xtr[idx]
            n = len(idx)
            shifts = torch.randint(-c["augment_shift"], c["augment_shift"] + 1, (n, 2)).float()
            radians = torch.deg2rad((torch.rand(n) * 2 - 1) * c["augment_degrees"])
            xb = torch_augment(xb, shifts, radians)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), ytr[idx]).backward()
            opt.step()
            sched.step()
        train_seconds += time.perf_counter() - t0
        val = accuracy(Xva, yva)
        if val > best[0]:
            best = (val, epoch, accuracy(Xte, yte))
    return {
        "train_seconds": train_seconds,
        "epochs": c["epochs"],
        "best_epoch": best[1],
        "val_accuracy": best[0],
        "test_accuracy": best[2],
        "augment_error": augment_error,
        "torch": torch.__version__,
    }


def run_torch(config) -> dict:
    spec = json.dumps(config.to_dict())
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--torch-worker", spec], capture_output=True, text=True, env=worker_env()
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the PyTorch worker failed:\n{proc.stderr[-4000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall_seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------------


def check_recipe(config):
    """The PyTorch twin implements the CNN recipe's Adam, warmup-then-cosine and augmentation only."""
    wanted = {"optimizer": "adam", "schedule": "cosine", "augment": True, "batch_norm": True}
    wanted.update(weight_decay=0.0, activation="relu", clip_grad_norm=None, lr_batch=None)
    wrong = {k: getattr(config, k) for k, v in wanted.items() if getattr(config, k) != v}
    if wrong:
        raise SystemExit(f"the PyTorch twin does not implement {wrong}; it takes the CNN recipe's {wanted}")


def row(name, seed, r):
    return [
        name,
        str(seed),
        str(r["epochs"]),
        f"{r['train_seconds']:.1f}",
        f"{r['wall_seconds']:.1f}",
        str(r["best_epoch"]),
        f"{100 * r['val_accuracy']:.2f}%",
        f"{100 * r['test_accuracy']:.2f}%",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"default: the preset's ({PRESET['epochs']})"
    )
    parser.add_argument("--out", default="runs/bench-tta", help="folder for handgrad's run folders")
    parser.add_argument("--no-torch", action="store_true", help="handgrad only")
    parser.add_argument("--torch-worker", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_worker:
        print(json.dumps(torch_worker(args.torch_worker)), flush=True)
        return
    configs = [preset_config(args.epochs, seed) for seed in args.seeds]
    check_recipe(configs[0])
    for line in machine_header():
        print(line)
    print(load_average_line("before"))
    print(f"handgrad train {shlex.join(command(configs[0]))}  (+ --seed S), {THREADS} threads each side\n")
    results = {"handgrad": [], "pytorch": []}
    rows = []
    for config in configs:
        results["handgrad"].append(run_handgrad(config, args.out))
        rows.append(row("handgrad", config.seed, results["handgrad"][-1]))
        print(" | ".join(rows[-1]), flush=True)
        if not args.no_torch:
            results["pytorch"].append(run_torch(config))
            rows.append(row("pytorch", config.seed, results["pytorch"][-1]))
            print(" | ".join(rows[-1]), flush=True)
    for name, runs in results.items():
        if runs:
            mean = {k: sum(r[k] for r in runs) / len(runs) for k in ("train_seconds", "wall_seconds")}
            mean.update({k: sum(r[k] for r in runs) / len(runs) for k in ("val_accuracy", "test_accuracy")})
            mean.update(epochs=runs[0]["epochs"], best_epoch="-")
            rows.append(row(f"**{name} mean**", "-", mean))
    print()
    print_table(["", "seed", "epochs", "training s", "wall s", "best epoch", "val acc", "test acc"], rows)
    if results["pytorch"]:
        ratio = sum(r["train_seconds"] for r in results["handgrad"]) / sum(
            r["train_seconds"] for r in results["pytorch"]
        )
        print(
            f"\nhandgrad / PyTorch training time: {ratio:.2f}  (torch {results['pytorch'][0]['torch']}; "
            f"augmentation twin within {results['pytorch'][0]['augment_error']:.1e} of handgrad's)"
        )
    print(load_average_line("after"))


if __name__ == "__main__":
    main()
