"""Learning curves (``handgrad learning-curve``): error against the size of the training set (§11.3).

§11.3, "determining whether to gather more data": when the training error is low but the test error is
much higher, more data is the most reliable remedy, and a curve of the errors against the training-set
size shows how much more is needed — extrapolate the validation error along a logarithmic size axis.

The sizes are ``points`` log-spaced fractions of the training set, from ``min_fraction`` to all of it
(``--limit`` caps "all"): n_k = round(N f^(1 − k/(K−1))), k = 0 … K − 1. Each size is one ``handgrad
train`` run (the first n_k training images, ``TrainConfig.limit``; the same validation set for every size,
the same epochs — so a small set also takes fewer steps) in its own folder ``n-000500/`` … under the
output folder, resumable as a search's trials are. For each size the best epoch's model (by validation
accuracy) is evaluated on its own training images in eval mode (dropout off) and on the validation set:
``learning_curve.csv`` (size, fraction, train_error, val_error, best_epoch, epochs, seconds) and
``learning_curve.png``. The test set is not used.

For a character language model (``--text FILE`` or a text ``--dataset``) the sizes count characters: run k
trains on the first n_k characters of the training text (a prefix of the training stream, in the run's
``batch_size`` streams; the vocabulary and the validation text are the whole corpus's for every size), and
its best model (by validation bits per character) is measured in **bits per character** on that prefix and
on the validation text, both read as evaluation reads them (``language_model.evaluate_stream``):
``train_bpc`` and ``val_bpc`` in place of the errors. The smallest size must fill one batch
(``batch_size`` × ``seq_len`` + 1 characters), checked before any training.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib

import numpy as np

from ..checkpoint import load_model
from ..config import ConfigError, TrainConfig
from ..evaluation import evaluate_arrays
from ..models import prepare_inputs
from ._trials import ACCURACY, BITS_PER_CHAR, run_all

__all__ = ["LearningCurveResult", "learning_curve", "curve_sizes", "plot_learning_curve"]


@dataclasses.dataclass
class LearningCurveResult:
    """One row per training-set size, smallest first; where the files went."""

    folder: str
    rows: list  # dicts: size, fraction, train_error, val_error (a language model: train_bpc, val_bpc),
    # best_epoch, epochs, seconds, run_dir
    csv_path: str
    plot_path: str | None


def curve_sizes(n, points=5, min_fraction=0.01) -> list:
    """``points`` log-spaced training-set sizes from ``min_fraction`` · n to n (distinct, at least 1)."""
    return sorted({max(1, int(np.rint(n * f))) for f in np.geomspace(min_fraction, 1.0, points)})


def _check(points, min_fraction):
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ConfigError(f"--points must be an integer of at least 2, got {points!r}")
    if not (isinstance(min_fraction, (int, float)) and 0 < min_fraction < 1):
        raise ConfigError(f"--min-fraction must be in (0, 1), got {min_fraction!r}")


class _Images:
    """An image classifier's curve: sizes in images, errors on the training images and validation set."""

    unit, metric = "images", ACCURACY

    def __init__(self, config, log):
        from ..training import load_data

        self.splits, _ = load_data(config.dataset, config.data_dir, log)
        self.name, self.n, self.n_val = self.splits.name, len(self.splits.train[1]), len(self.splits.val[1])
        self.pinned = {"dataset": self.splits.name}  # every size on the same data, also after a fallback

    def check(self, sizes, config, min_fraction):
        pass

    def measure(self, model, arch, size, config) -> dict:
        (X_train, y_train), (X_val, y_val) = self.splits.train, self.splits.val
        _, train_acc, _ = evaluate_arrays(model, prepare_inputs(arch, X_train[:size]), y_train[:size])
        _, val_acc, _ = evaluate_arrays(model, prepare_inputs(arch, X_val), y_val)
        return {"train_error": 1 - train_acc, "val_error": 1 - val_acc}


class _Text:
    """A language model's curve: sizes in characters, bits per character on the prefix and validation."""

    unit, metric = "characters", BITS_PER_CHAR

    def __init__(self, config, log):
        from ..language_model import load_corpus

        self.splits = load_corpus(config)
        self.name, self.n, self.n_val = self.splits.name, len(self.splits.train), len(self.splits.val)
        self.pinned = {}

    def check(self, sizes, config, min_fraction):
        B, T = config.batch_size, config.seq_len
        if sizes[0] < B * T + 1:
            raise ConfigError(
                f"--min-fraction {min_fraction:g} gives {sizes[0]:,} training characters at the smallest "
                f"size, too few for one batch of {B} sequences of {T} characters (needs {B * T + 1:,}); "
                "raise --min-fraction or lower --batch-size or --seq-len"
            )

    def measure(self, model, arch, size, config) -> dict:
        from ..language_model import LN2, evaluate_stream

        streams, T = config.eval_batch_size, config.seq_len
        train_loss, _, _ = evaluate_stream(model, self.splits.train[:size], streams, T)
        val_loss, _, _ = evaluate_stream(model, self.splits.val, streams, T)
        return {"train_bpc": train_loss / LN2, "val_bpc": val_loss / LN2}


def learning_curve(
    base: dict | None = None,
    *,
    points=5,
    min_fraction=0.01,
    out="learning-curve",
    jobs=1,
    plot=True,
    log=print,
) -> LearningCurveResult:
    """Train on growing fractions of the training set and measure training and validation error (module
    docstring), or bits per character for a language model. ``base`` holds the TrainConfig fields, as
    ``handgrad train``'s options give them. Bad options are a ConfigError before any training."""
    _check(points, min_fraction)
    base = {k: v for k, v in dict(base or {}).items() if k not in ("out", "resume", "quiet")}
    config = TrainConfig(**base).validate()
    data = (_Text if config.trains_text else _Images)(config, log)
    n = data.n if config.limit is None else min(config.limit, data.n)
    sizes = curve_sizes(n, points, min_fraction)
    data.check(sizes, config, min_fraction)
    folder = pathlib.Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    log(
        f"learning curve on {data.name}: {len(sizes)} training-set sizes "
        f"{', '.join(f'{s:,}' for s in sizes)} of {n:,} {data.unit}, each for {config.epochs} epochs; "
        f"validation on {data.n_val:,} {data.unit} -> {folder}"
    )
    items = [(size, {**base, "limit": size, **data.pinned}, str(folder / f"n-{size:06d}")) for size in sizes]
    results = {}

    def finished(size, result):
        results[size] = result
        how = "finished before" if result["skipped"] else f"{result['seconds']:.1f} s"
        log(f"  n {size:>7,}: val {data.metric.text(result[data.metric.key])} [{how}]")

    run_all(items, jobs, finished)
    rows = []
    for size in sizes:
        result = results[size]
        model, ckpt = load_model(pathlib.Path(result["run_dir"]) / "best.npz")
        rows.append(
            {
                "size": size,
                "fraction": size / data.n,
                **data.measure(model, ckpt.metadata["arch"], size, config),
                "best_epoch": result["best_epoch"],
                "epochs": result["epochs"],
                "seconds": result["seconds"],
                "run_dir": result["run_dir"],
            }
        )
    csv_path = folder / "learning_curve.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_path = plot_learning_curve(rows, folder / "learning_curve.png", data.name) if plot else None
    return LearningCurveResult(
        folder=str(folder),
        rows=rows,
        csv_path=str(csv_path),
        plot_path=None if plot_path is None else str(plot_path),
    )


def format_table(result: LearningCurveResult) -> str:
    if "val_bpc" in result.rows[0]:
        return _format_text_table(result)
    lines = [f"{'images':>8}  {'fraction':>8}  {'train error':>11}  {'val error':>9}  {'epochs':>6}  seconds"]
    for r in result.rows:
        lines.append(
            f"{r['size']:>8,}  {r['fraction']:>8.4f}  {100 * r['train_error']:>10.2f}%  "
            f"{100 * r['val_error']:>8.2f}%  {r['best_epoch']:>2}/{r['epochs']:<3}  "
            f"{r['seconds']:>7.1f}"
        )
    if len(result.rows) >= 2:
        a, b = result.rows[-2], result.rows[-1]
        lines.append(
            f"the last ×{b['size'] / a['size']:.1f} of data changed the validation error by "
            f"{100 * (b['val_error'] - a['val_error']):+.2f} points; the gap to the training "
            f"error is {100 * (b['val_error'] - b['train_error']):.2f} points "
            f"at {b['size']:,} images"
        )
    lines.append(f"wrote {result.csv_path}" + (f" and {result.plot_path}" if result.plot_path else ""))
    return "\n".join(lines)


def _format_text_table(result: LearningCurveResult) -> str:
    """A language model's table: bits per character against the training characters."""
    lines = [f"{'characters':>10}  {'fraction':>8}  {'train bpc':>9}  {'val bpc':>7}  {'epochs':>6}  seconds"]
    for r in result.rows:
        lines.append(
            f"{r['size']:>10,}  {r['fraction']:>8.4f}  {r['train_bpc']:>9.4f}  {r['val_bpc']:>7.4f}  "
            f"{r['best_epoch']:>2}/{r['epochs']:<3}  {r['seconds']:>7.1f}"
        )
    if len(result.rows) >= 2:
        a, b = result.rows[-2], result.rows[-1]
        lines.append(
            f"the last ×{b['size'] / a['size']:.1f} of text changed the validation bits per character by "
            f"{b['val_bpc'] - a['val_bpc']:+.4f}; the gap to the training bpc is "
            f"{b['val_bpc'] - b['train_bpc']:.4f} at {b['size']:,} characters"
        )
    lines.append(f"wrote {result.csv_path}" + (f" and {result.plot_path}" if result.plot_path else ""))
    return "\n".join(lines)


def plot_learning_curve(rows, path, dataset=""):
    """Training and validation error (%) against the training-set size, log axis; for a language model
    bits per character against the training characters."""
    from ..plots import _figure, _save

    fig = _figure(6.5, 4.2)
    if fig is None:
        return None
    ax = fig.subplots()
    sizes = [r["size"] for r in rows]
    if "val_bpc" in rows[0]:
        ax.plot(sizes, [r["train_bpc"] for r in rows], "-o", ms=4, label="training bits per character")
        ax.plot(sizes, [r["val_bpc"] for r in rows], "-s", ms=4, label="validation bits per character")
        unit, ylabel = "characters", "bits per character"
    else:
        ax.plot(sizes, [100 * r["train_error"] for r in rows], "-o", ms=4, label="training error")
        ax.plot(sizes, [100 * r["val_error"] for r in rows], "-s", ms=4, label="validation error")
        unit, ylabel = "images", "error (%)"
    ax.set_xscale("log")
    ax.set(
        xlabel=f"training-set size ({unit})",
        ylabel=ylabel,
        title=f"learning curve{' on ' + dataset if dataset else ''} (§11.3)",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)
