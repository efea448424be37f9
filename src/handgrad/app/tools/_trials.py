"""What ``search`` and ``learning_curve`` share: one training run in a folder of its own, run to its end or
continued where it stopped, its result kept beside it; several of them in parallel processes; the metric
that ranks runs; and the ``handgrad train`` command line that repeats a configuration.

A finished run's folder holds ``result.json`` (status, the best epoch's validation metric, the test
metric as a monitor, epochs, seconds) besides what ``handgrad train`` writes; a folder without it but with
``last.npz`` is an interrupted run and is continued bit for bit (``TrainConfig(resume=...)``). The metric
is validation accuracy for an image classifier (``val_accuracy``, ``test_accuracy``; higher is better) and
bits per character for a character language model (``val_bpc``, ``test_bpc``; lower is better): the
metric each run chooses its own best epoch by.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import shlex
import sys

from ..allocator import keep_freed_memory
from ..checkpoint import load_checkpoint
from ..config import TrainConfig

__all__ = [
    "field_kind",
    "train_command",
    "run_in_folder",
    "run_all",
    "Metric",
    "ACCURACY",
    "BITS_PER_CHAR",
    "metric_of",
    "BLAS_THREAD_VARIABLES",
]

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Fields that say where and how verbosely a run goes, not what it trains: never on a repeated command.
NOT_ON_COMMAND = ("out", "resume", "data_dir", "quiet", "plots", "eval_batch_size")


@dataclasses.dataclass(frozen=True)
class Metric:
    """What ranks finished runs: a validation metric, its test counterpart (a monitor), and its direction."""

    key: str  # the result's key of the best epoch's validation metric
    test_key: str  # the result's key of the test metric of the best parameters
    checkpoint_key: str  # the checkpoint's metadata key of the best epoch's validation metric
    name: str  # as the reports say it
    short: str  # a table's column heading
    higher_is_better: bool

    def cell(self, value) -> str:
        """The value as a table shows it: 98.40% or 1.2345 (bits per character)."""
        return f"{100 * value:.2f}%" if self.higher_is_better else f"{value:.4f}"

    def text(self, value) -> str:
        return self.cell(value) if self.higher_is_better else f"{value:.4f} bpc"

    def rank_key(self, row):
        """Sort key, best first (ties: the earlier trial)."""
        value = row[self.key]
        return (-value if self.higher_is_better else value), row["trial"]


ACCURACY = Metric(
    "val_accuracy", "test_accuracy", "best_val_accuracy", "validation accuracy", "val acc", True
)
BITS_PER_CHAR = Metric(
    "val_bpc", "test_bpc", "best_val_bpc", "validation bits per character", "val bpc", False
)


def metric_of(config: TrainConfig) -> Metric:
    """Bits per character for a language-model run (``config.trains_text``), else validation accuracy."""
    return BITS_PER_CHAR if config.trains_text else ACCURACY


def field_kind(name) -> str:
    """'int', 'float', 'str', 'bool' or 'tuple': the kind of the TrainConfig field ``name``."""
    field = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
    text = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    return text.replace(" ", "").split("|")[0]


def train_command(config: TrainConfig) -> str:
    """The ``handgrad train`` command line that trains ``config``: the options that differ from the
    defaults of ``config.model`` (``handgrad train``'s flags are the field names with dashes)."""
    reference = TrainConfig(model=config.model)
    parts = ["handgrad", "train"]
    for field in dataclasses.fields(TrainConfig):
        name = field.name
        value = getattr(config, name)
        default = field.default if name == "model" else getattr(reference, name)  # the recipe's, but --model
        if name in NOT_ON_COMMAND or value == default:
            continue
        flag = "--" + name.replace("_", "-")
        kind = field_kind(name)
        if kind == "bool":
            parts.append(flag if value else "--no-" + name.replace("_", "-"))
        elif kind == "tuple":
            parts += [flag, ",".join(map(str, value)) or "none"]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _blas_threads():
    """The BLAS library's thread count in this process (threadpoolctl), or None when unknown."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return counts[0] if counts else None


def _write_json(path, data):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_in_folder(fields: dict, folder) -> dict:
    """Train ``TrainConfig(**fields)`` in ``folder`` to its end (continuing it when it was interrupted) and
    return its result, also written to ``folder/result.json``; a folder that holds one is not run again
    (the result comes back with ``"skipped": True``). The run's own lines go to ``folder/train.log``.
    A diverged run is a result too (status "diverged", its best epoch before the divergence)."""
    from ..training import TrainingDiverged, train

    folder = pathlib.Path(folder)
    done = folder / "result.json"
    if done.exists():
        return {**json.loads(done.read_text(encoding="utf-8")), "skipped": True}
    config = TrainConfig(**{**fields, "out": str(folder), "quiet": False, "resume": None})
    metric = metric_of(config)
    if (folder / "last.npz").exists() and (folder / "config.json").exists():
        config = TrainConfig(
            resume=str(folder), epochs=config.epochs, data_dir=config.data_dir, plots=config.plots
        )
    else:  # nothing to continue: start afresh (train refuses a folder holding a config.json)
        (folder / "config.json").unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.log", "a", encoding="utf-8") as stream:
        try:
            run = train(config, stdout=stream)
            status, history, best_epoch, epochs = "done", run.history, run.best_epoch, run.epochs
            best_val, test = (
                (run.best_val_accuracy, run.test_accuracy)
                if metric is ACCURACY
                else (run.best_val_bits_per_char, run.test_bits_per_char)
            )
        except TrainingDiverged as err:
            print(f"handgrad: error: {err}", file=stream)
            meta = load_checkpoint(folder / "best.npz").metadata
            status, history = "diverged", meta.get("history", [])
            best_val, best_epoch, epochs = meta[metric.checkpoint_key], meta["best_epoch"], err.epoch
            test = meta.get("metrics", {}).get(metric.test_key)
    result = {
        "status": status,
        metric.key: float(best_val),
        metric.test_key: None if test is None or not math.isfinite(test) else float(test),
        "best_epoch": int(best_epoch),
        "epochs": int(epochs),
        "seconds": round(sum(row["seconds"] for row in history), 2),
        "run_dir": str(folder),
        "blas_threads": _blas_threads(),
    }
    _write_json(done, result)
    return {**result, "skipped": False}


def _worker_init():
    """A parallel worker: one BLAS thread (its environment said so before NumPy loaded; threadpoolctl
    makes sure), no progress bars (its stderr is not the terminal's to share), and the allocator as the
    command line sets it (``app.allocator``)."""
    keep_freed_memory()
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (the worker's lifetime)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    global _LIMITS
    _LIMITS = threadpool_limits(1)


_LIMITS = None


def _work(item):
    key, fields, folder = item
    return key, run_in_folder(fields, folder)


@contextlib.contextmanager
def _one_blas_thread_environment():
    saved = {name: os.environ.get(name) for name in BLAS_THREAD_VARIABLES}
    os.environ.update(dict.fromkeys(BLAS_THREAD_VARIABLES, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_all(items, jobs: int, on_result) -> None:
    """Run ``(key, fields, folder)`` items with ``run_in_folder``, ``jobs`` at a time, calling
    ``on_result(key, result)`` as each finishes. With ``jobs`` > 1 each runs in a fresh (spawned) process
    whose environment sets one BLAS thread before NumPy is imported, so the processes share the cores
    instead of each BLAS taking them all."""
    items = list(items)
    if jobs <= 1 or len(items) <= 1:
        for item in items:
            on_result(*_work(item))
        return
    import multiprocessing

    with _one_blas_thread_environment():  # a spawned child copies the environment when it starts
        pool = multiprocessing.get_context("spawn").Pool(min(jobs, len(items)), initializer=_worker_init)
    try:
        for key, result in pool.imap_unordered(_work, items):
            on_result(key, result)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
