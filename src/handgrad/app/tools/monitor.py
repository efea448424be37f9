"""``handgrad train --monitor``: what a layer does during training, per epoch (book §11.5, "monitor
histograms of activations and gradient"; the update-to-parameter ratio of the debugging strategies).

Written into ``monitor.csv`` beside ``metrics.csv``, one row per layer and epoch (epoch 0: the
initialisation, activations only), and drawn as ``monitor.png``:

    epoch, layer, kind     the epoch, the layer's index in the model and its class (Linear, ReLU, …)
    act_mean, act_std      mean and standard deviation of the layer's output on the validation batch — the
                           first 256 validation examples, fixed for the run — in eval mode after the epoch;
                           for a character language model the first window of the validation text as the
                           evaluation reads it (its streams × seq_len characters), the recurrent state
                           starting from zeros (and reset afterwards)
    dead_fraction          ReLU-type layers only: the fraction of units that never fired (output ≤ 0 for every
                           example of the validation batch); a unit is a feature of a dense layer and a
                           channel (feature map, all positions) of a convolutional one
    grad_norm              layers with parameters: ‖g‖, the norm of the gradient of all the layer's
                           parameters together as the optimiser receives it (with the L2 term), the mean over
                           the epoch's steps
    update_ratio           ‖Δθ‖ / ‖θ‖ per step, θ all the layer's parameters before the step and Δθ what the
                           step changed them by, the mean over the epoch's steps
    update_ratio_last      the same ratio of the epoch's last step

The rule of thumb is an update ratio of about 1e-2 per step. A warning line is printed the first time a
layer's mean ratio in an epoch is over ten times that (> 1e-1: the learning rate is likely too high) or
under a hundredth of it (< 1e-4: too low, or the layer is not learning), and the first time more than half
of a ReLU layer's units are dead; each is printed once per layer and run.

Cost: off, nothing (the loop skips hooks with one truth test per step). On, per step, one copy of the
parameters and three dot products per parameter array, and per epoch one forward pass of 256 examples.
The monitor draws no random numbers and changes nothing the run computes: a monitored run reaches
bit-for-bit the parameters of an unmonitored one, also when resumed.
"""

from __future__ import annotations

import csv
import math

import numpy as np

from ...ch05_ml_basics import CSVLogger
from ..models import reset_states
from ..training import TrainingHook

__all__ = ["Monitor", "HEALTHY_RATIO", "VALIDATION_BATCH", "COLUMNS", "read_monitor"]

HEALTHY_RATIO = 1e-2  # ‖Δθ‖/‖θ‖ per step
HIGH, LOW = 10 * HEALTHY_RATIO, HEALTHY_RATIO / 100  # warn outside these
DEAD_WARNING = 0.5  # warn when more than this fraction of a ReLU layer's units never fired
VALIDATION_BATCH = 256
RELU_KINDS = ("ReLU", "LeakyReLU")
COLUMNS = (
    "epoch",
    "layer",
    "kind",
    "act_mean",
    "act_std",
    "dead_fraction",
    "grad_norm",
    "update_ratio",
    "update_ratio_last",
)


def _sq(a):
    """‖a‖² accumulated by BLAS (a float32 dot product is as exact as the ratio needs)."""
    flat = a.reshape(-1)
    return float(np.dot(flat, flat))


def read_monitor(path):
    """The rows of a monitor.csv as dicts of numbers (None where a column does not apply)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row = {"epoch": int(r["epoch"]), "layer": int(r["layer"]), "kind": r["kind"]}
            for k in COLUMNS[3:]:
                row[k] = float(r[k]) if r[k] != "" else None
            rows.append(row)
    return rows


class Monitor(TrainingHook):
    """The training monitor (module docstring) as a ``TrainingHook``."""

    def start(self, run):
        layers = getattr(run.model, "layers", [run.model])
        self.kinds = [type(layer).__name__ for layer in layers]
        # layer index -> its parameter arrays (names "3.W" -> layer 3) and their gradients
        self.groups = {}
        for name, p, g in run.model.parameters():
            self.groups.setdefault(int(name.split(".")[0]), []).append((p, g))
        self.before = {i: [np.empty_like(p) for p, _ in group] for i, group in self.groups.items()}
        self.diff = {i: [np.empty_like(p) for p, _ in group] for i, group in self.groups.items()}
        self.X_batch = run.data.monitor_batch(run, VALIDATION_BATCH)
        self.warned = set()
        self._reset()
        path = run.run_dir / "monitor.csv"
        kept = []
        if run.start_epoch and path.exists():  # a resumed run: keep the rows of the epochs it keeps
            with open(path, newline="", encoding="utf-8") as f:
                kept = [r for r in csv.DictReader(f) if int(r["epoch"]) <= run.start_epoch]
        path.unlink(missing_ok=True)
        self.path, self.log = path, CSVLogger(path)
        for r in kept:
            self.log.log({k: r[k] for k in COLUMNS})
        if not run.start_epoch:
            self._write(run, 0, step_stats=False)

    def _reset(self):
        self.steps = 0
        self.grad_sum = dict.fromkeys(self.groups, 0.0)
        self.ratio_sum = dict.fromkeys(self.groups, 0.0)
        self.ratio_last = dict.fromkeys(self.groups, math.nan)

    def before_step(self, run):
        for i, group in self.groups.items():
            for (p, _), keep in zip(group, self.before[i]):
                np.copyto(keep, p)

    def after_step(self, run):
        for i, group in self.groups.items():
            d2 = p2 = g2 = 0.0
            for (p, g), old, diff in zip(group, self.before[i], self.diff[i]):
                np.subtract(p, old, out=diff)
                d2 += _sq(diff)
                p2 += _sq(old)
                g2 += _sq(g)
            ratio = math.sqrt(d2 / p2) if p2 > 0 else math.nan
            self.grad_sum[i] += math.sqrt(g2)
            self.ratio_sum[i] += ratio
            self.ratio_last[i] = ratio
        self.steps += 1

    def _activations(self, run):
        """(mean, std, dead fraction or None) of each layer's output on the validation batch, eval mode."""
        model, was_training = run.model, run.model.training
        layers = getattr(model, "layers", [model])
        model.eval()
        reset_states(model)  # a language model's window starts from a zero state, as evaluation's does
        out = []
        try:
            X = self.X_batch
            for layer, kind in zip(layers, self.kinds):
                X = layer.forward(X)
                dead = None
                if kind in RELU_KINDS:
                    units = (
                        X.max(axis=0)
                        if X.ndim == 2
                        else X.max(axis=(0, 2, 3))
                        if X.ndim == 4
                        else X.reshape(len(X), -1).max(axis=0)
                    )
                    dead = float(np.mean(units <= 0))
                out.append((float(X.mean(dtype=np.float64)), float(X.std(dtype=np.float64)), dead))
        finally:
            reset_states(model)
            model.train(was_training)
        return out

    def _write(self, run, epoch, step_stats=True):
        rows = []
        for i, (kind, (mean, std, dead)) in enumerate(zip(self.kinds, self._activations(run))):
            row = {
                "epoch": epoch,
                "layer": i,
                "kind": kind,
                "act_mean": f"{mean:.6g}",
                "act_std": f"{std:.6g}",
                "dead_fraction": "" if dead is None else f"{dead:.6g}",
                "grad_norm": "",
                "update_ratio": "",
                "update_ratio_last": "",
            }
            if step_stats and i in self.groups and self.steps:
                row.update(
                    grad_norm=f"{self.grad_sum[i] / self.steps:.6g}",
                    update_ratio=f"{self.ratio_sum[i] / self.steps:.6g}",
                    update_ratio_last=f"{self.ratio_last[i]:.6g}",
                )
            self.log.log(row)
            rows.append((row, dead))
        return rows

    def end_epoch(self, run, epoch, row):
        for r, dead in self._write(run, epoch):
            name = f"layer {r['layer']} ({r['kind']})"
            if r["update_ratio"]:
                ratio = float(r["update_ratio"])
                if ratio > HIGH and (r["layer"], "high") not in self.warned:
                    self.warned.add((r["layer"], "high"))
                    run.log(
                        f"warning: epoch {epoch}: {name} changes by {ratio:.1e} of its norm per step "
                        f"(mean ‖Δθ‖/‖θ‖), over 10× the healthy ~{HEALTHY_RATIO:g}: the learning rate "
                        f"is likely too high (§11.5)"
                    )
                elif ratio < LOW and (r["layer"], "low") not in self.warned:
                    self.warned.add((r["layer"], "low"))
                    run.log(
                        f"warning: epoch {epoch}: {name} changes by {ratio:.1e} of its norm per step "
                        f"(mean ‖Δθ‖/‖θ‖), under 1/100 of the healthy ~{HEALTHY_RATIO:g}: the learning "
                        f"rate is likely too low or the layer does not learn (§11.5)"
                    )
            if dead is not None and dead > DEAD_WARNING and (r["layer"], "dead") not in self.warned:
                self.warned.add((r["layer"], "dead"))
                run.log(
                    f"warning: epoch {epoch}: {100 * dead:.0f}% of the units of {name} never fired on "
                    f"the validation batch (dead ReLUs): lower the learning rate or check the "
                    f"initialisation (§11.5)"
                )
        self._reset()

    def end(self, run):
        if getattr(self, "log", None) is not None:
            self.log.close()

    def report(self, run, result):
        if not run.config.plots:
            return
        from .. import plots

        if plots.available():
            plots.plot_monitor(
                read_monitor(self.path), run.run_dir / "monitor.png", title=f"training monitor: {run.dataset}"
            )
