"""The learning-rate range test (``handgrad lr-find``): the cheapest experiment on a new problem.

§11.4.1 calls the learning rate "perhaps the most important hyperparameter": training error against it is
U-shaped (figure 11.1), too small and training is slow, too large and it diverges. The range test (Smith,
2015; the form fastai, torch-lr-finder and Lightning use) traces that curve in one short run. From the
initialisation ``handgrad train`` would use (``training.prepare`` with the same seed, model, optimiser,
weight decay and augmentation), it takes one mini-batch step per learning rate on an exponential ramp

    η_i = η_min (η_max / η_min)^(i / (n − 1)),    i = 0 … n − 1,

records each mini-batch's loss L_i before its update, and smooths it with a debiased exponential moving
average (the bias correction of Adam, §8.5.3):

    m_i = β m_{i−1} + (1 − β) L_i,  m_{−1} = 0,    L̂_i = m_i / (1 − β^(i+1)),    β = 0.98.

It stops early when L̂_i exceeds 4× its minimum so far, or the loss is no longer finite (``diverged``).
Two suggestions:

- **steepest descent**: the learning rate where L̂ falls fastest per decade, dL̂ / d log10 η, by central
  differences over ±``half_window`` steps (a 5-step window by default, a third of a decade at 100 steps).
  Only the part of the curve before L̂'s minimum counts, and the first ``half_window`` steps are left out,
  so the rise into divergence and the first values of the average (means of a handful of losses) cannot
  be picked. None when fewer than 2 · half_window + 1 steps lie before the minimum.
- **minimum / 10**: a tenth of the learning rate at L̂'s minimum (``min_loss_lr``): the minimum itself is
  already at the edge of stability.

For a character language model (``--text FILE`` or a text ``--dataset``) a step is one window of the
training text, B streams × T characters, taken in order as training takes them: the recurrent state is
carried from window to window (truncated back-propagation through time, §10.2.2), reset when the text
starts over, and the gradient's norm clipped as the recipe says; the loss is the mean cross-entropy in
nats per character (bits per character are nats / ln 2).

Deterministic for a seed: the data order, the initialisation and any dropout or augmentation draws come
from the run's generator. The model is built in memory (``prepare(..., files=False)``) and discarded:
nothing is written but the CSV (step, lr, loss, smoothed_loss) and the plot.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib
import textwrap

import numpy as np

from ...ch06_feedforward import SoftmaxCrossEntropy
from ..config import ConfigError, TrainConfig
from ..models import describe

__all__ = ["LRFindResult", "lr_find", "lr_ramp", "debiased_ema", "steepest_descent", "plot_lr_find"]

BETA = 0.98
STOP_FACTOR = 4.0


@dataclasses.dataclass
class LRFindResult:
    """What ``lr_find`` returns; ``to_json()`` is what ``--json`` prints."""

    lrs: list  # the learning rate of each step taken
    losses: list  # the mini-batch loss of each step (before its update)
    smoothed: list  # the debiased moving average L̂ of the losses
    suggestion: float | None  # steepest descent of L̂ (None when too few steps lie before the minimum)
    min_loss_lr: float  # the learning rate at L̂'s minimum; the second suggestion is a tenth of it
    min_loss: float
    steps: int  # steps taken
    diverged: bool  # stopped because L̂ passed 4× its minimum or the loss was not finite
    csv_path: str
    plot_path: str | None
    description: str = ""  # the model, data and optimiser, as the report and the plot name them
    per_character: bool = False  # a language model: the losses are nats per character

    def to_json(self) -> dict:
        return {
            "suggestion": self.suggestion,
            "min_loss_lr": self.min_loss_lr,
            "steps": self.steps,
            "diverged": self.diverged,
        }


def lr_ramp(min_lr, max_lr, steps) -> np.ndarray:
    """η_i = η_min (η_max / η_min)^(i / (n − 1)) for i = 0 … n − 1 (float64)."""
    return min_lr * (max_lr / min_lr) ** (np.arange(steps) / (steps - 1))


def debiased_ema(losses, beta=BETA) -> np.ndarray:
    """L̂_i = m_i / (1 − β^(i+1)), m_i = β m_{i−1} + (1 − β) L_i, m_{−1} = 0 (float64)."""
    out, m = np.empty(len(losses)), 0.0
    for i, loss in enumerate(losses):
        m = beta * m + (1 - beta) * loss
        out[i] = m / (1 - beta ** (i + 1))
    return out


def steepest_descent(lrs, smoothed, half_window=2):
    """The learning rate where ``smoothed`` falls fastest against log10(lr), before its minimum; or None.

    Slope at step i: (L̂_{i+h} − L̂_{i−h}) / (log10 η_{i+h} − log10 η_{i−h}), h = ``half_window``, for
    h ≤ i ≤ argmin L̂ − h (the window never reaches past the minimum).
    """
    lrs, smoothed = np.asarray(lrs, dtype=np.float64), np.asarray(smoothed, dtype=np.float64)
    h, last = int(half_window), int(np.argmin(smoothed))
    if last - h < h:
        return None
    x = np.log10(lrs)
    i = np.arange(h, last - h + 1)
    slopes = (smoothed[i + h] - smoothed[i - h]) / (x[i + h] - x[i - h])
    return float(lrs[i[np.argmin(slopes)]])


def _check_range(min_lr, max_lr, steps):
    for name, value in (("--min-lr", min_lr), ("--max-lr", max_lr)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} must be a positive learning rate, got {value!r}")
    if min_lr >= max_lr:
        raise ConfigError(
            f"--min-lr ({min_lr:g}) must be below --max-lr ({max_lr:g}): the ramp grows from "
            "the one to the other; swap them or widen the range"
        )
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
        raise ConfigError(f"--steps must be an integer of at least 2, got {steps!r}")


def _batches(run):
    """The batches training takes (``run.data.train_batches``: shuffled mini-batches of images, or the
    windows of the training text in order), epoch after epoch, without end."""
    while True:
        yield from run.data.train_batches(run)


def _ramp(run, lrs, beta, stop_factor):
    """One training step per learning rate until the end of the ramp or divergence."""
    from ..training import backward_step, forward_loss

    loss_fn = SoftmaxCrossEntropy()
    losses, smoothed, m, best, diverged = [], [], 0.0, math.inf, False
    batches = _batches(run)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for i, lr in enumerate(lrs):
            xb, yb = next(batches)
            run.optimizer.lr = float(lr)
            loss, logits, _, _ = forward_loss(run, loss_fn, xb, yb)
            loss = float(loss)
            if not math.isfinite(loss):
                diverged = True
                break
            m = beta * m + (1 - beta) * loss
            value = m / (1 - beta ** (i + 1))
            losses.append(loss)
            smoothed.append(value)
            best = min(best, value)
            if value > stop_factor * best:
                diverged = True
                break
            # The rest of the step train takes: backward, [clipping], + λθ where the loop adds it, update.
            backward_step(run, loss_fn, logits.shape)
    batches.close()
    return losses, smoothed, diverged


def lr_find(
    config: TrainConfig | None = None,
    *,
    min_lr=1e-6,
    max_lr=10.0,
    steps=100,
    out="lr-find",
    beta=BETA,
    stop_factor=STOP_FACTOR,
    half_window=2,
    plot=True,
    log=print,
) -> LRFindResult:
    """Run the range test for the model, data and optimiser ``config`` describes (see the module docstring).

    ``config.lr`` and the schedule are not used (the ramp sets the rate of every step). Writes
    ``out/lr_find.csv`` and, with ``plot`` and matplotlib, ``out/lr_find.png``. Raises ConfigError for a
    bad range (``min_lr`` ≥ ``max_lr``, fewer than 2 steps) or configuration, before loading any data.
    """
    from ..training import prepare

    _check_range(min_lr, max_lr, steps)
    config = dataclasses.replace(config if config is not None else TrainConfig(), resume=None).validate()
    out = pathlib.Path(out)
    quiet = lambda msg="": None  # noqa: E731
    run = prepare(config, None, log, quiet, files=False)
    lrs = lr_ramp(float(min_lr), float(max_lr), steps)
    losses, smoothed, diverged = _ramp(run, lrs, beta, stop_factor)
    taken = len(losses)
    if taken == 0:
        raise ConfigError(f"the loss was not finite at the first step (lr {min_lr:g}); lower --min-lr")
    lrs = lrs[:taken]
    best = int(np.argmin(smoothed))
    suggestion = steepest_descent(lrs, smoothed, half_window)
    result = LRFindResult(
        lrs=[float(v) for v in lrs],
        losses=losses,
        smoothed=[float(v) for v in smoothed],
        suggestion=suggestion,
        min_loss_lr=float(lrs[best]),
        min_loss=float(smoothed[best]),
        steps=taken,
        diverged=diverged,
        csv_path=str(out / "lr_find.csv"),
        plot_path=None,
        description=_describe(run),
        per_character=run.config.trains_text,
    )
    del run  # the model, its optimiser state and the data: nothing of them is kept
    out.mkdir(parents=True, exist_ok=True)
    with open(result.csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "lr", "loss", "smoothed_loss"])
        for i, (lr, loss, s) in enumerate(zip(result.lrs, result.losses, result.smoothed), 1):
            writer.writerow([i, f"{lr:.6g}", f"{loss:.6g}", f"{s:.6g}"])
    if plot:
        result.plot_path = plot_lr_find(result, out / "lr_find.png", title=result.description)
    return result


def _describe(run) -> str:
    config = run.config
    extra = f" β {config.momentum:g}" if config.optimizer == "momentum" else ""
    batch = f"batch {config.batch_size}"
    if config.trains_text:
        batch = f"{config.batch_size} streams × {config.seq_len} characters, windows in order"
    return f"{describe(run.arch)} on {run.dataset}, {config.optimizer}{extra}, {batch}"


def plot_lr_find(result: LRFindResult, path, title=None):
    """Loss against learning rate (log axis): each step's loss, the smoothed curve, both suggestions."""
    from ..plots import _figure, _save

    fig = _figure(7, 4.5)
    if fig is None:
        return None
    ax = fig.subplots()
    ax.plot(
        result.lrs,
        result.losses,
        color="0.75",
        lw=0.8,
        label="window loss" if result.per_character else "mini-batch loss",
    )
    ax.plot(result.lrs, result.smoothed, color="C0", lw=1.8, label=f"smoothed (debiased EMA, β {BETA})")
    if result.suggestion is not None:
        ax.axvline(result.suggestion, color="C2", ls="--", label=f"steepest descent: {result.suggestion:.3g}")
    ax.axvline(
        result.min_loss_lr / 10, color="C3", ls=":", label=f"minimum / 10: {result.min_loss_lr / 10:.3g}"
    )
    ax.plot(
        [result.min_loss_lr],
        [result.min_loss],
        "o",
        color="C3",
        ms=5,
        label=f"minimum at {result.min_loss_lr:.3g}",
    )
    ax.set_xscale("log")
    top = min(max(result.losses), 4.5 * result.min_loss, max(result.smoothed) * 1.1)
    ax.set_ylim(min(min(result.losses), result.min_loss) * 0.9, max(top, result.smoothed[0] * 1.05))
    ax.set(
        xlabel="learning rate",
        ylabel="cross-entropy (nats per character)" if result.per_character else "cross-entropy loss",
    )
    ax.set_title(
        "learning-rate range test" + ("\n" + textwrap.shorten(title, 90) if title else ""), fontsize=9
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return str(_save(fig, path))


def format_report(result: LRFindResult, min_lr, max_lr) -> str:
    """The lines ``handgrad lr-find`` prints."""
    how = (
        "stopped: the smoothed loss passed 4x its minimum"
        if result.diverged
        else "the loss did not diverge in this range; raise --max-lr to see where it does"
    )
    lines = [
        f"lr-find: {result.description}",
        f"{result.steps} steps from lr {min_lr:g} to {max_lr:g} ({how})",
        f"  minimum of the smoothed loss: {result.min_loss:.4f}"
        + (" nats per character" if result.per_character else "")
        + f" at lr {result.min_loss_lr:.3g}",
    ]
    steepest = (
        f"lr {result.suggestion:.3g}"
        if result.suggestion is not None
        else "none: too few steps before the minimum; lower --min-lr"
    )
    lines += [
        f"  suggestion, steepest descent of the smoothed loss (before its minimum): {steepest}",
        f"  suggestion, the learning rate at the minimum / 10:                     "
        f"lr {result.min_loss_lr / 10:.3g}",
    ]
    lines.append(f"wrote {result.csv_path}" + (f" and {result.plot_path}" if result.plot_path else ""))
    return "\n".join(lines)
