"""Where the CNN recipe's training step goes: each stage's forward and backward, handgrad beside PyTorch.

    python benchmarks/cnn_breakdown.py                  # 20 rounds, batch 128, float32, 2 threads
    python benchmarks/cnn_breakdown.py --rounds 40

The network is ``handgrad train --model cnn``'s (three blocks of 3×3 convolution, batch norm, ReLU and
2×2 max-pool with 16, 32, 64 channels, flatten, dropout, dense 128 with batch norm, ReLU, dropout, 10
outputs), built by ``build_model`` exactly as training builds it (buffer reuse on, training mode). A
*stage* is what the model runs as one step of its forward pass: a single layer, or a fused block where
the model has one (``model.stages``); the PyTorch side runs the same layers (``torch.nn`` modules, 2
threads) grouped the same way, on inputs of the same shapes.

Each stage is fed the input it sees in a real step and the upstream gradient it receives in a real
backward pass (both recorded once, then copied), and its forward and backward are timed separately:
forward with PyTorch's autograd recording (as in training), backward as ``y.backward(dy)`` on that
stage alone. The first stage computes no input gradient, as in training. The loss (softmax
cross-entropy, forward + backward) and the Adam update are rows of their own, and a last row times the
whole step. Each library runs in its own process (one process holding both, their thread pools spin
against each other and both slow down); every round runs every row once in each, alternating which
goes first, with a short pause between the two. The table gives median milliseconds and the median of
the per-round ratios; read the ratios rather than the times on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from common import THREADS, load_average_line, machine_header, pin_threads, print_table, worker_env

PAUSE = 0.2  # seconds between the two workers' turns


def handgrad_side(batch, seed=0):
    import numpy as np

    from handgrad.app.config import TrainConfig
    from handgrad.app.models import arch_from_config, build_model
    from handgrad.ch06_feedforward import SoftmaxCrossEntropy
    from handgrad.ch08_optimization import Adam

    config = TrainConfig(model="cnn")
    arch = arch_from_config(config, 10, (28, 28))
    model = build_model(arch, np.random.default_rng(seed)).reuse_buffers().train()
    stages = getattr(model, "stages", None) or [(1, layer) for layer in model.layers]
    rng = np.random.default_rng(seed)
    X = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    loss_fn = SoftmaxCrossEntropy().reuse_buffers()
    params = {name: p for name, p, _ in model.parameters()}
    grads = {name: g for name, _, g in model.parameters()}
    opt = Adam(config.lr)

    inputs, h = [], X  # record one real step: each stage's input and upstream gradient
    for _, stage in stages:
        inputs.append(h.copy())
        h = stage.forward(h)
    loss_fn.forward(h, y)
    logits = h.copy()
    dys, d = [None] * len(stages), loss_fn.backward()
    for i in range(len(stages) - 1, -1, -1):
        dys[i] = d.copy()
        stages[i][1].input_grad = i > 0
        d = stages[i][1].backward(d)

    def stage_fns(i):
        stage, x, dy = stages[i][1], inputs[i], dys[i]
        return (lambda: stage.forward(x)), (lambda: stage.backward(dy))

    def loss():
        loss_fn.forward(logits, y)
        loss_fn.backward()

    def step():
        loss_fn.forward(model.forward(X), y)
        model.backward(loss_fn.backward(), need_input_grad=False)
        opt.step(params, grads)

    names = [type(stage).__name__ for _, stage in stages]
    spans = [n for n, _ in stages]
    return names, spans, stage_fns, loss, (lambda: opt.step(params, grads)), step


def torch_side(batch, spans, seed=0):
    import torch
    from torch import nn

    torch.set_num_threads(THREADS)
    torch.manual_seed(seed)
    layers = []
    for c_in, c_out in ((1, 16), (16, 32), (32, 64)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
    layers += [
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(576, 128),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Linear(128, 10),
    ]
    model = nn.Sequential(*layers).train()
    stages, start = [], 0
    for n in spans:
        stages.append(nn.Sequential(*layers[start : start + n]))
        start += n
    if start != len(layers):
        raise RuntimeError(f"handgrad's stages cover {start} layers, the PyTorch network has {len(layers)}")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    X = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    inputs, h = [], X
    with torch.no_grad():
        for stage in stages:
            inputs.append(h.clone())
            h = stage(h)
    logits = h.clone().requires_grad_(True)
    out = nn.functional.cross_entropy(logits, y)
    out.backward()
    dys, d = [None] * len(stages), logits.grad
    for i in range(len(stages) - 1, -1, -1):  # each stage's upstream gradient, one stage at a time
        dys[i] = d.clone()
        x = inputs[i].clone().requires_grad_(i > 0)
        yi = stages[i](x)
        yi.backward(d)
        d = x.grad

    state = {}

    def stage_fns(i):
        stage, x_in, dy = stages[i], inputs[i], dys[i]

        def fwd():
            x = x_in.detach().requires_grad_(i > 0)
            state[i] = stage(x)

        def bwd():
            state[i].backward(dy)

        return fwd, bwd

    def loss():
        lg = logits.detach().requires_grad_(True)
        nn.functional.cross_entropy(lg, y).backward()

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()

    def adam():
        opt.step()

    for p in model.parameters():  # so that opt.step has gradients to use
        p.grad = torch.zeros_like(p)
    return stage_fns, loss, adam, step, torch.__version__


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def rows_of(side, batch):
    """[(label, pass, fn)] of one library, in the table's order; the handgrad side names the stages."""
    names, spans, hg_stage, hg_loss, hg_adam, hg_step = handgrad_side(batch)
    if side == "torch":
        stage_fn, loss, adam, step, _ = torch_side(batch, spans)
    else:
        stage_fn, loss, adam, step = hg_stage, hg_loss, hg_adam, hg_step
    rows = []
    for i, name in enumerate(names):
        fwd, bwd = stage_fn(i)
        label = f"{i} {name}" + (f" ({spans[i]} layers)" if spans[i] > 1 else "")
        rows += [(label, "forward", fwd), (label, "backward", bwd)]
    return [*rows, ("loss", "fwd + bwd", loss), ("Adam", "update", adam), ("whole step", "all", step)]


def serve(side, batch):
    """A worker: build one library's rows, then time every row once per line read from stdin."""
    pin_threads()
    if side == "torch":
        import torch

        version = torch.__version__
    else:
        version = "numpy " + __import__("numpy").__version__
    rows = rows_of(side, batch)
    print(json.dumps({"rows": [r[:2] for r in rows], "version": version}), flush=True)
    for line in sys.stdin:
        if line.strip() != "round":
            break
        print(json.dumps([timed(fn) for _, _, fn in rows]), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--worker", choices=["handgrad", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve(args.worker, args.batch_size)
        return 0
    pin_threads()
    import numpy as np

    for line in machine_header():
        print(line)
    procs, heads = {}, {}
    for side in ("handgrad", "torch"):
        procs[side] = subprocess.Popen(
            [sys.executable, __file__, "--worker", side, "--batch-size", str(args.batch_size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=worker_env(),
        )
        heads[side] = json.loads(procs[side].stdout.readline())
    rows = heads["handgrad"]["rows"]
    if [tuple(r) for r in heads["torch"]["rows"]] != [tuple(r) for r in rows]:
        raise RuntimeError("the two workers time different rows")
    times = {side: [] for side in procs}
    for r in range(args.warmup + args.rounds):
        order = ("handgrad", "torch") if r % 2 == 0 else ("torch", "handgrad")
        for side in order:
            time.sleep(PAUSE)  # let the other process's threads stop spinning
            procs[side].stdin.write("round\n")
            procs[side].stdin.flush()
            result = json.loads(procs[side].stdout.readline())
            if r >= args.warmup:
                times[side].append(result)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    h_all, t_all = np.array(times["handgrad"]), np.array(times["torch"])  # (rounds, rows)
    print(
        f"network: the CNN recipe, batch {args.batch_size}, float32, {THREADS} threads each, one process "
        f"per library; {heads['torch']['version']}; {args.rounds} rounds (+{args.warmup} warm-up)"
    )
    print()
    table = []
    for k, (label, kind) in enumerate(rows):
        h, t = h_all[:, k], t_all[:, k]
        table.append(
            [
                label,
                kind,
                f"{1000 * np.median(h):.2f}",
                f"{1000 * np.median(t):.2f}",
                f"{np.median(h / t):.2f}x",
            ]
        )
    hs, ts = h_all[:, :-1].sum(axis=1), t_all[:, :-1].sum(axis=1)
    whole = table.pop()
    table.append(
        [
            "sum of the rows",
            "",
            f"{1000 * np.median(hs):.2f}",
            f"{1000 * np.median(ts):.2f}",
            f"{np.median(hs / ts):.2f}x",
        ]
    )
    table.append(whole)
    print_table(["stage", "pass", "handgrad ms", "PyTorch ms", "handgrad / PyTorch"], table)
    print()
    med = np.median(h_all[:, :-1], axis=0)
    share = sorted(zip(med / med.sum(), rows[:-1]), reverse=True)[:5]
    print(
        "handgrad's largest shares of the sum: "
        + ", ".join(f"{lab} {kind} {100 * s:.0f}%" for s, (lab, kind) in share)
    )
    print(load_average_line("at end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
