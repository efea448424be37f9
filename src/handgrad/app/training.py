"""The training loop: the book's pipeline from data to a saved, evaluated model (design report §4).

    seed every RNG → load train / validation / test → build and initialise the model → per epoch:
    shuffle and iterate mini-batches (ch. 5 ``batch_iterator``) → forward → softmax cross-entropy →
    backward → [clip the gradient's norm (ch. 10 ``clip_grad_norm``)] → + λw (ch. 7 ``add_l2_grad_``)
    → optimiser step (ch. 8, learning rate from the schedule
    per step) → evaluate on validation and test → keep the best parameters by validation accuracy
    (a language model: by validation bits per character).

``train`` runs it in three steps over one ``RunState``: ``prepare`` (a new run, or a resumed one restored
from its ``last.npz``) → ``run_epoch`` as often as the epochs, early stopping or ``on_epoch_end`` allow →
``finish`` (the best parameters back from ``best.npz``, the test metrics, the plots, the summary line).
The optimiser and the schedule come by name from :mod:`handgrad.app.recipes`.

What differs between an image classifier and a character language model is the run's data
(``RunState.data``): ``ImageData`` (shuffled mini-batches of images; accuracy chooses the best epoch) or,
for a language-model run (``config.trains_text``), :class:`handgrad.app.language_model.TextData` (the
windows of the training text in order, the recurrent state carried and reset per epoch, truncated BPTT
§10.2.2; the lowest validation bits per character chooses it). The data object yields the training
batches, evaluates a split, names the metric that chooses the best epoch and the checkpoint's key for it
(``best_val_accuracy`` or ``best_val_bpc``), adds its columns to the epoch's row, and writes the epoch's
line and the summary; the steps, checkpoints, resume, hooks and early stopping are the same code.

With ``augment`` each training batch is replaced by a randomly shifted and rotated copy (ch. 7 §7.4,
``augment_batch``) drawn from the run's generator — the same one that shuffles and draws dropout masks —
so a resumed run repeats every draw. With ``patience`` N, training stops early (§7.8, Algorithm 7.1) once
N epochs in a row have not improved the best validation metric; the best parameters are restored from
``best.npz`` at the end in any case.

A run folder (``runs/<timestamp>/`` unless ``out`` names one) receives ``config.json``, ``metrics.csv``
(one row per epoch, flushed), ``best.npz`` and ``last.npz`` (see :mod:`handgrad.app.checkpoint`) and the
plots. The columns of ``metrics.csv`` (and of ``TrainResult.history``):

    epoch                          1, 2, …
    train_loss, train_accuracy     means over the epoch's mini-batches, in training mode (dropout on)
    val_loss, val_accuracy         the validation set after the epoch; val_accuracy chooses the best epoch
    test_loss, test_accuracy       the test set after the epoch, for monitoring only: never used to choose
                                   anything (the per-epoch line says "test acc (monitor)")
    train_bpc, val_bpc, test_bpc   language models only: the three losses in bits per character (loss / ln 2);
                                   val_bpc chooses the best epoch, *_accuracy is next-character accuracy
    lr                             the learning rate of the epoch's last step
    train_seconds, seconds         wall time of the mini-batch steps, and of the whole epoch with evaluation

Under ``mpiexec -n K`` (K > 1) the same loop runs on every rank as synchronous data-parallel SGD (book
§12.1.3): :mod:`handgrad.app.distributed`, imported only then, shards each batch, all-reduces the
gradients, and lets rank 0 alone print and write; it enters the loop at the lines that test ``dist``.

Hooks (``TrainingHook``) watch a run without copying the loop: ``train(config, hooks=[...])`` or
``RunState.hooks``. Each is called at the start, before and after every optimiser step, with each epoch's
row (to add columns to it), after each epoch and at the end; with no hooks the loop does one truth test
per step. ``config.monitor`` adds chapter 11's training monitor (:mod:`handgrad.app.tools.monitor`) and
``config.overfit`` the "fit a tiny dataset" check (:mod:`handgrad.app.tools.overfit`). A hook must not
draw from the run's generator, so a run with hooks reaches bit-for-bit the parameters of one without.

``last.npz`` holds everything needed to continue — parameters, optimiser state, the generator's
state, the epoch and history — and is rewritten after every epoch (and once before the first), so
``resume`` continues an interrupted run and reaches bit-for-bit the parameters of an uninterrupted one.

Speed: every array is float32; the images are reshaped for the model once per dataset (a view), each
mini-batch is gathered once by ``batch_iterator``, the first layer computes no input gradient, the
gradient arrays are the layers' own (updated in place, so the ``params``/``grads`` dicts are built once),
and evaluation runs in batches of 2,000 in eval mode.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import pathlib
import sys
import time

import numpy as np

from .. import __version__
from ..ch05_ml_basics import CSVLogger, batch_iterator, confusion_matrix, f1_score, set_all_seeds
from ..ch06_feedforward import SoftmaxCrossEntropy
from ..ch07_regularization import EarlyStopping, add_l2_grad_, augment_batch
from ..ch10_sequence import clip_grad_norm
from .checkpoint import CheckpointError, check_saved_steps, load_checkpoint, restore_into, save_checkpoint
from .config import DEFAULT_DATASET, FALLBACK_DATASET, ConfigError, TrainConfig
from .evaluation import evaluate_arrays
from .language_model import TextData
from .models import arch_from_config, build_model, describe, first_layer_weights, prepare_inputs
from .recipes import loop_weight_decay, lr_schedule, make_optimizer

__all__ = [
    "train",
    "prepare",
    "run_epoch",
    "finish",
    "RunState",
    "TrainResult",
    "TrainingDiverged",
    "TrainingHook",
    "load_data",
    "make_optimizer",
    "lr_schedule",
    "FALLBACK_NOTICE",
]

FALLBACK_NOTICE = """\
==============================================================================================
NOTE: the full MNIST dataset was not found and could not be downloaded, so this run trains on
the bundled sample (mnist-sample: 5,000 training, 1,000 validation and 1,000 test images).
To train on all 60,000 images, do one of:
  * put the four MNIST files (train-images-idx3-ubyte.gz, ...) in DIR/mnist/ and set
    HANDGRAD_DATA=DIR, or pass --data-dir DIR;
  * run once with network access: handgrad downloads and verifies MNIST into ~/.cache/handgrad.
==============================================================================================
"""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and batch and what to try."""

    def __init__(self, message, epoch, batch, run_dir):
        super().__init__(message)
        self.epoch, self.batch, self.run_dir = epoch, batch, run_dir


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: where the run lives and how well its best model does."""

    run_dir: str
    dataset: str
    best_epoch: int
    best_val_accuracy: float
    test_accuracy: float
    test_loss: float
    test_macro_f1: float
    epochs: int  # epochs completed in total (including those before a resume)
    seconds: float  # wall time of this call
    history: list  # one dict per epoch, the rows of metrics.csv
    fell_back: bool = False  # trained on mnist-sample because MNIST was not found
    stopped_early: bool = False  # on_epoch_end asked to stop before the configured epochs
    stopped_by_patience: bool = False  # early stopping (--patience) ended the run before its epochs
    test_bits_per_char: float | None = None  # language models: the test loss in bits per character
    best_val_bits_per_char: float | None = None  # language models: the best epoch's validation bpc
    overfit_reached: bool | None = None  # with overfit N: whether the tiny training set was fitted

    def to_dict(self):
        return dataclasses.asdict(self)

    def __getitem__(self, key):  # result["test_accuracy"] works as for a dict
        return getattr(self, key)


class TrainingHook:
    """Something that watches a run (the training monitor, the overfitting check): every method a no-op.

    ``start(run)`` once ``prepare`` is done; ``before_step(run)`` and ``after_step(run)`` around each
    optimiser step (the gradients of the step are in ``run.grads``, the parameters in ``run.params``);
    ``epoch_metrics(run, epoch, row)`` with the epoch's row before it is logged (a hook may add columns to
    metrics.csv there); ``end_epoch(run, epoch, row)`` after the epoch's checkpoints and line; ``end(run)``
    when the loop is left, also on an error (close files here); ``report(run, result)`` after the summary.
    A hook must leave the parameters, the optimiser and the run's generator alone.
    """

    def start(self, run):
        pass

    def before_step(self, run):
        pass

    def after_step(self, run):
        pass

    def epoch_metrics(self, run, epoch, row):
        pass

    def end_epoch(self, run, epoch, row):
        pass

    def end(self, run):
        pass

    def report(self, run, result):
        pass


# ----------------------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------------------


def load_data(dataset, data_dir=None, log=print):
    """(Splits, fell_back). ``dataset=None`` means MNIST, falling back to mnist-sample with a notice."""
    from ..datasets import DatasetNotFoundError, load_splits

    if dataset is not None:
        return load_splits(dataset, data_dir), False
    try:
        return load_splits(DEFAULT_DATASET, data_dir), False
    except DatasetNotFoundError:
        log(FALLBACK_NOTICE)
        return load_splits(FALLBACK_DATASET, data_dir), True


def _new_run_dir(out):
    if out is not None:
        path = pathlib.Path(out)
        if (path / "last.npz").exists() or (path / "config.json").exists():
            raise ConfigError(
                f"{path} already holds a run; continue it with --resume {path} or choose another --out"
            )
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = pathlib.Path("runs") / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise ConfigError("could not create a fresh folder under runs/; pass --out DIR")


def _progress(total, desc, disable):
    if disable:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, mininterval=0.2)


def _fmt_seconds(s):
    return f"{s:.1f} s" if s < 90 else f"{int(s // 60)} min {s % 60:.0f} s"


# ----------------------------------------------------------------------------------------------------
# The run: prepare (a new or a resumed run) -> one epoch, as often as asked -> finish
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunState:
    """What one run carries from step to step: the model and its optimiser, the data (``ImageData`` or
    ``language_model.TextData``), the generator, the history, the best epoch so far (chapter 7's
    ``EarlyStopping``, on the data's metric: validation accuracy, or validation bits per character) and the
    files."""

    config: TrainConfig
    run_dir: pathlib.Path
    data: object  # ImageData or language_model.TextData: the batches, the evaluation, the best-epoch metric
    arch: dict
    model: object
    optimizer: object
    rng: np.random.Generator
    steps_per_epoch: int
    schedule: object  # t -> learning rate, or None for config.lr throughout
    weight_decay: float  # λ the loop adds with add_l2_grad_ (0 where the optimiser decays itself)
    params: dict  # name -> the layers' own parameter arrays, built once
    grads: dict  # name -> the layers' own gradient arrays, overwritten in place by each backward
    augment: object  # xb -> an augmented copy, or None
    stopper: EarlyStopping
    base_meta: dict  # what every checkpoint's metadata holds besides the epoch's own
    say: object
    log: object
    bar_disabled: bool = True
    history: list = dataclasses.field(default_factory=list)
    step: int = 0
    start_epoch: int = 0
    saved: dict = dataclasses.field(default_factory=dict)  # checkpoint file name -> its epoch on disk
    csv_log: object = None
    stopped_early: bool = False
    stopped_by_patience: bool = False
    dist: object = None  # chapter 12's DataParallel under mpiexec (app.distributed), else None
    hooks: list = dataclasses.field(default_factory=list)  # TrainingHook objects, called in order

    @property
    def dataset(self) -> str:
        return self.data.name

    @property
    def best_epoch(self) -> int:
        return 0 if self.stopper.best_epoch is None else self.stopper.best_epoch

    @property
    def best_val(self) -> float:
        """The best epoch's metric: validation accuracy (-1 before any), or bits per character (inf)."""
        return self.data.worst if self.stopper.best_metric is None else self.stopper.best_metric


@dataclasses.dataclass
class ImageData:
    """An image classifier's data in a run (``RunState.data``): the images as the model takes them (views,
    reshaped once), shuffled mini-batches for training, accuracy on validation choosing the best epoch.
    ``language_model.TextData`` is its counterpart for a character language model, with the same methods."""

    name: str
    classes: tuple
    fell_back: bool
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_test_img: np.ndarray  # the test images as loaded, for the plots

    unit = "img"  # what the per-epoch line counts per second
    mode, worst = "max", -1.0  # the best epoch has the highest validation accuracy
    best_key = "best_val_accuracy"  # the checkpoint's metadata key of the best epoch's metric
    chosen_by = "validation accuracy"
    diverged_hint = ""

    @classmethod
    def load(cls, config, log):
        """(the data, the architecture the data's shape and classes give)."""
        splits, fell_back, (X_train_img, y_train) = _load_run_data(config, log)
        arch = arch_from_config(config, splits.n_classes, splits.input_shape)
        X_train, X_val, X_test = (
            prepare_inputs(arch, X) for X in (X_train_img, splits.val[0], splits.test[0])
        )
        data = cls(
            name=splits.name,
            classes=tuple(splits.classes),
            fell_back=fell_back,
            X_train=X_train,
            y_train=y_train,
            X_val=X_val,
            y_val=splits.val[1],
            X_test=X_test,
            y_test=splits.test[1],
            X_test_img=splits.test[0],
        )
        return data, arch

    def steps(self, config) -> int:
        return math.ceil(len(self.y_train) / config.batch_size)

    def saved_config(self) -> dict:
        return {"dataset": self.name}  # the dataset trained on, also after a fallback to mnist-sample

    def meta(self, config) -> dict:
        return {"classes": list(self.classes)}

    def train_batches(self, run):
        """The epoch's shuffled mini-batches (ch. 5 ``batch_iterator``; under MPI this rank's shards),
        each augmented when the run augments (§7.4)."""
        B, augment = run.config.batch_size, run.augment
        batches = (
            batch_iterator(self.X_train, self.y_train, B, shuffle=True, rng=run.rng)
            if run.dist is None
            else run.dist.shards(self.X_train, self.y_train, B, run.rng)
        )
        for xb, yb in batches:
            yield (xb if augment is None else augment(xb)), yb

    def evaluate(self, run, split):
        """(loss, accuracy) on "val" or "test"; under MPI each rank takes a slice."""
        X, y = (self.X_val, self.y_val) if split == "val" else (self.X_test, self.y_test)
        if run.dist is not None:
            loss, acc, _ = run.dist.evaluate(run.model, X, y, run.config.eval_batch_size)
        else:
            loss, acc, _ = evaluate_arrays(run.model, X, y, run.config.eval_batch_size)
        return loss, acc

    def select(self, val_loss, val_acc) -> float:
        return val_acc

    def derived(self, train_loss, val_loss, test_loss) -> dict:
        return {}

    def fit(self, run) -> dict:
        """The overfitting check's columns: accuracy on the training images, eval mode."""
        _, acc, _ = evaluate_arrays(run.model, self.X_train, self.y_train, run.config.eval_batch_size)
        return {"overfit_accuracy": acc}

    def monitor_batch(self, run, n):
        """The monitor's fixed validation batch: the first ``n`` validation images."""
        return self.X_val[:n]

    def check_resume(self, run, meta):
        """CheckpointError unless ``last.npz``'s metadata fits this data and architecture."""
        if meta.get("arch") != run.arch:
            raise CheckpointError(
                f"{run.run_dir / 'last.npz'} holds a different architecture than "
                f"{run.run_dir / 'config.json'}"
            )
        data = f"{len(self.y_train):,} training images in batches of {run.config.batch_size}"
        check_saved_steps(run.run_dir, meta, run.steps_per_epoch, f"{data}; was the dataset changed?")

    def describe(self, run) -> str:
        config = run.config
        return (
            f"{describe(run.arch)} on {self.name}: {len(self.y_train):,} train / {len(self.y_val):,} val / "
            f"{len(self.y_test):,} test images, batch {config.batch_size}, "
            f"{config.optimizer} lr {config.lr:g}"
            + (
                f" β {config.momentum:g}{' nesterov' if config.nesterov else ''}"
                if config.optimizer == "momentum"
                else ""
            )
            + f", weight decay {config.weight_decay:g}, {config.schedule} schedule"
            + (f" (warmup {config.warmup_epochs:g} epochs)" if config.warmup_epochs else "")
            + (
                f", augmentation ±{config.augment_shift} px ±{config.augment_degrees:g}°"
                + (f" elastic α {config.augment_elastic:g}" if config.augment_elastic else "")
                if config.augment
                else ""
            )
            + (f", patience {config.patience}" if config.patience else "")
            + (f", gradient norm clipped at {config.clip_grad_norm:g}" if config.clip_grad_norm else "")
            + f", {config.epochs} epochs -> {run.run_dir}"
        )

    def epoch_line(self, run, epoch, row, seen, improved) -> str:
        config, secs = run.config, row["train_seconds"]
        return (
            f"epoch {epoch:>{len(str(config.epochs))}}/{config.epochs}  train loss {row['train_loss']:.4f} "
            f"acc {100 * row['train_accuracy']:.2f}%  val loss {row['val_loss']:.4f} acc "
            f"{100 * row['val_accuracy']:.2f}%  test acc (monitor) {100 * row['test_accuracy']:.2f}%  "
            f"lr {run.optimizer.lr:.3g}  {secs:.1f} s ({seen / secs:,.0f} img/s){'  *' if improved else ''}"
        )

    def final(self, run) -> dict:
        """The TrainResult fields of the best parameters (in the model): test loss, accuracy, macro-F1; the
        plots drawn."""
        config, model = run.config, run.model
        test_loss, test_acc, preds = evaluate_arrays(model, self.X_test, self.y_test, config.eval_batch_size)
        macro_f1 = float(f1_score(self.y_test, preds, average="macro", n_classes=len(self.classes)))
        if config.plots and run.history:
            _write_plots(run, self.X_test_img, self.y_test, preds, self.classes)
        return {
            "best_val_accuracy": run.best_val,
            "test_accuracy": test_acc,
            "test_loss": test_loss,
            "test_macro_f1": macro_f1,
        }

    def summary(self, run, fields, seconds) -> str:
        return (
            f"best epoch {run.best_epoch}/{len(run.history)}: test accuracy "
            f"{100 * fields['test_accuracy']:.2f}%, macro-F1 {fields['test_macro_f1']:.4f} "
            f"(val {100 * max(run.best_val, 0):.2f}%) on {self.name}; {_fmt_seconds(seconds)}; "
            f"saved in {run.run_dir}"
        )


# Environment variables through which launchers tell a process how many ranks it has (MPICH's PMI, Open
# MPI, MVAPICH, PMIx). Reading them costs nothing; importing mpi4py would start MPI in every process.
MPI_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


def launched_ranks(environ=None) -> int:
    """The number of ranks ``mpiexec`` started this process among, or 1 without a launcher."""
    environ = os.environ if environ is None else environ
    for name in MPI_SIZE_VARIABLES:
        try:
            return max(1, int(environ[name]))
        except (KeyError, ValueError):
            continue
    return 1


def _data_parallel():
    """Chapter 12's DataParallel context when ``mpiexec`` started K > 1 ranks, else None (one process)."""
    if launched_ranks() < 2:
        return None
    from .distributed import context  # the only import of the MPI code

    return context()


def train(config: TrainConfig | None = None, *, on_epoch_end=None, stdout=None, hooks=()) -> TrainResult:
    """``_train`` in one process; under mpiexec on every rank, where an error on any rank ends them all."""
    dist = _data_parallel()
    if dist is None:
        return _train(config, on_epoch_end, stdout, hooks, None)
    with dist.guard():
        return _train(config, dist.agreed(on_epoch_end) if on_epoch_end else None, stdout, hooks, dist)


def _train(config, on_epoch_end, stdout, hooks, dist) -> TrainResult:
    """Train a model as ``config`` says (defaults: the reference configuration) and return a TrainResult.

    ``on_epoch_end(epoch, row)`` is called after each epoch's checkpoints are written; returning False
    stops the run there, as an interruption would (``resume`` continues it). ``hooks`` are
    ``TrainingHook`` objects (after the monitor and the overfitting check when the config asks for them).
    Progress goes to ``stdout``
    (default ``sys.stdout``) and the progress bar to stderr when it is a terminal and not ``quiet``.

    Raises ConfigError (bad settings or run folder), DatasetError (data not loadable), CheckpointError
    (``resume`` of a folder with a damaged checkpoint, or a checkpoint that cannot be written: the message
    says which ones on disk are intact) and TrainingDiverged (NaN/inf loss; ``best.npz`` holds the best
    parameters so far).
    """
    started = time.perf_counter()
    config, resume_dir = _settle_config(config) if dist is None else dist.root_call(_settle_config, config)
    if config.trains_text and dist is not None:
        raise ConfigError("a character language model trains in one process; run it without mpiexec")
    stream = stdout or sys.stdout

    def log(msg=""):
        if dist is None or dist.is_root:
            print(msg, file=stream, flush=True)

    def say(msg=""):
        if not config.quiet:
            log(msg)

    run = prepare(config, resume_dir, log, say, dist)
    if dist is None or dist.is_root:  # hooks watch and write: under MPI rank 0 alone runs them
        run.hooks.extend(_config_hooks(run))
        run.hooks.extend(hooks)
    try:
        for hook in run.hooks:
            hook.start(run)
        # A diverging run overflows: the NaN/inf check on the loss reports it, not NumPy's warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            for epoch in range(run.start_epoch + 1, config.epochs + 1):
                row = run_epoch(run, epoch)
                if on_epoch_end is not None and on_epoch_end(epoch, row) is False:
                    run.stopped_early = epoch < config.epochs
                    break
                if run.stopper.stopped and epoch < config.epochs:
                    run.stopped_by_patience = True
                    break
    finally:
        run.csv_log.close()
        for hook in run.hooks:
            hook.end(run)
    result = finish(run, started) if dist is None else dist.root_call(finish, run, started)
    for hook in run.hooks:
        hook.report(run, result)
    return result


def _config_hooks(run):
    """The hooks the configuration asks for (imported only then: chapter 11's tools sit above the loop)."""
    hooks = []
    if run.config.monitor:
        from .tools.monitor import Monitor

        hooks.append(Monitor())
    if run.config.overfit is not None:
        from .tools.overfit import OverfitCheck

        hooks.append(OverfitCheck())
    return hooks


def _settle_config(config):
    """(the configuration to run, the folder to resume or None): a resumed run's saved settings apply."""
    config = dataclasses.replace(config) if config is not None else TrainConfig()
    resume_dir = None
    if config.resume is not None:
        resume_dir = pathlib.Path(config.resume)
        if not resume_dir.is_dir():
            raise ConfigError(f"--resume {resume_dir}: no such run folder")
        saved = TrainConfig.load(resume_dir / "config.json")
        epochs = config.epochs if config.epochs is not None else saved.epochs
        keep = {
            "data_dir": config.data_dir or saved.data_dir,
            "quiet": config.quiet,
            "plots": config.plots,
            "monitor": config.monitor,
            "epochs": epochs,
            "resume": str(resume_dir),
            "out": str(resume_dir),
        }
        config = dataclasses.replace(saved, **keep)
    elif config.epochs is None:
        raise ConfigError("epochs must be a positive integer, got None")
    return config.validate(), resume_dir


def _load_run_data(config, log):
    """(splits, fell_back, the training examples the run uses): all of them, the first ``limit``, or with
    ``--overfit N`` the first N only (§11.5)."""
    splits, fell_back = load_data(config.dataset, config.data_dir, log)
    X_train_img, y_train = splits.train
    if config.limit is not None or config.overfit is not None:
        n = config.overfit if config.overfit is not None else config.limit
        X_train_img, y_train = X_train_img[:n], y_train[:n]
    if len(y_train) == 0 or len(splits.val[1]) == 0:
        raise ConfigError(f"{splits.name} leaves no training or validation images")
    return splits, fell_back, (X_train_img, y_train)


def loop_pieces(config, model, steps_per_epoch) -> dict:
    """What every training loop takes from its configuration and model: the optimiser, the schedule, the
    weight decay the loop adds, the ``params``/``grads`` dicts of the layers' own arrays, and whether the
    progress bar is off (not a terminal, or ``quiet``)."""
    return {
        "optimizer": make_optimizer(config),
        "schedule": lr_schedule(config, steps_per_epoch),
        "weight_decay": loop_weight_decay(config),
        "params": {name: p for name, p, _ in model.parameters()},
        "grads": {name: g for name, _, g in model.parameters()},
        "bar_disabled": config.quiet or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()),
    }


def _run_folder(config, resume_dir, files, dist):
    """The run's folder: the resumed one, None without files, or a new one (under MPI made by rank 0)."""
    if resume_dir is not None:
        return resume_dir
    if not files:
        return None
    if dist is None:
        return _new_run_dir(config.out)
    return pathlib.Path(dist.root_call(_new_run_dir, config.out))


def prepare(config: TrainConfig, resume_dir, log=print, say=print, dist=None, *, files=True) -> RunState:
    """Load the data, build the model and optimiser, and start a new run folder or restore ``resume_dir``.
    Under MPI (``dist``) rank 0 alone touches the run folder and ``dist.start`` makes every rank its copy.
    The data is ``ImageData``, or ``language_model.TextData`` for a language-model run.

    With ``files=False`` nothing is written: no run folder (``run_dir`` is None), no ``config.json``, no
    checkpoints. That is the state, as ``train`` would start from it, for tools that only take steps
    (``handgrad lr-find``) and then discard the model; ``run_epoch`` needs a run folder."""
    data, arch = (TextData if config.trains_text else ImageData).load(config, log)
    rng = set_all_seeds(config.seed)
    model = build_model(arch, rng)
    model.reuse_buffers()  # the loop keeps no output past the next step: opt into the layers' buffer reuse
    steps_per_epoch = data.steps(config)
    saved_config = config.to_dict()
    saved_config.update(data.saved_config(), resume=None, out=None)
    base_meta = {
        "arch": arch,
        "dataset": data.name,
        **data.meta(config),
        "config": saved_config,
        "handgrad_version": __version__,
    }
    root = dist is None or dist.is_root
    run_dir = _run_folder(config, resume_dir, files, dist)
    local_rng = rng if dist is None else dist.rank_generator(config.seed)  # dropout, augmentation: per rank
    run = RunState(
        config=config,
        run_dir=run_dir,
        data=data,
        arch=arch,
        model=model,
        rng=rng,
        steps_per_epoch=steps_per_epoch,
        **loop_pieces(config, model, steps_per_epoch),
        augment=_augmenter(config, arch, local_rng) if config.augment else None,
        # Without --patience the stopper only keeps the best epoch: it never runs out.
        stopper=EarlyStopping(config.patience or sys.maxsize, mode=data.mode),
        base_meta=base_meta,
        say=say,
        log=log,
        dist=dist,
    )
    if files:
        _start_files(run, resume_dir, saved_config, root)
    model.train()
    return run


def _start_files(run: RunState, resume_dir, saved_config, root) -> None:
    """The run folder's files: a resumed run restored from ``last.npz`` (and shared with every rank under
    MPI), ``config.json``, ``metrics.csv`` and, for a new run, epoch 0's checkpoints; the run's line."""
    config, dist = run.config, run.dist
    if resume_dir is not None and root:
        _restore(run)
    if dist is not None:
        dist.start(run, resumed=resume_dir is not None)
    if root:
        TrainConfig.from_dict(saved_config).save(run.run_dir / "config.json")
    run.csv_log = CSVLogger(run.run_dir / "metrics.csv") if root else _NoLog()
    for row in run.history:
        run.csv_log.log(row)
    if resume_dir is None:
        # Epoch 0: the initial parameters are the best so far and a valid point to resume from.
        run.stopper.step(run.data.select(*run.data.evaluate(run, "val")), {}, epoch=0)
        _save(run, "best.npz", 0, {})
        _save(run, "last.npz", 0, {}, resumable=True)
    run.say(run.data.describe(run))
    if run.stopper.stopped:  # a resumed run that had already stopped early
        run.stopped_by_patience, run.start_epoch = True, config.epochs


class _NoLog:
    """metrics.csv on a rank other than 0 under MPI: nothing is written."""

    def log(self, row):
        pass

    def close(self):
        pass


def _restore(run: RunState) -> None:
    """Continue ``run.run_dir``: parameters, optimiser state, generator, history and best epoch."""
    run_dir, config = run.run_dir, run.config
    ckpt = load_checkpoint(run_dir / "last.npz")
    meta = ckpt.metadata
    run.data.check_resume(run, meta)
    restore_into(run.model, ckpt, run.optimizer, run.rng)
    start_epoch, run.history = int(meta["epoch"]), list(meta.get("history", []))
    best_epoch = int(meta.get("best_epoch", 0))
    best_val = float(meta.get(run.data.best_key, run.data.worst))
    # Algorithm 7.1's counter j is the number of epochs since the best one.
    run.stopper.load_state_dict(
        {
            "patience": run.stopper.patience,
            "mode": run.data.mode,
            "min_delta": 0.0,
            "best_metric": best_val,
            "best_epoch": best_epoch,
            "bad_epochs": start_epoch - best_epoch,
            "epochs_seen": start_epoch + 1,
        }
    )
    run.start_epoch, run.step = start_epoch, start_epoch * run.steps_per_epoch
    run.saved = {"best.npz": best_epoch, "last.npz": start_epoch}
    # metrics.csv may hold a row written just before an interruption: rewrite it from the checkpoint.
    (run_dir / "metrics.csv").unlink(missing_ok=True)
    old = TrainConfig.load(run_dir / "config.json")
    if old.epochs != config.epochs and config.schedule == "cosine":
        run.say(
            f"note: the cosine schedule now anneals to epoch {config.epochs} (it was set for {old.epochs})"
        )
    run.say(f"resuming {run_dir} after epoch {start_epoch} of {config.epochs}")


def _save(run: RunState, name, epoch, row, resumable=False) -> None:
    """Write ``best.npz`` or ``last.npz`` (with the optimiser and generator state when ``resumable``)."""
    path = run.run_dir / name
    meta = {
        **run.base_meta,
        "epoch": epoch,
        "steps": run.step,
        "metrics": row,
        "history": run.history,
        "best_epoch": run.best_epoch,
        run.data.best_key: run.best_val,  # best_val_accuracy, or best_val_bpc for a language model
    }
    state = (run.optimizer.state_dict(), run.rng.bit_generator.state) if resumable else ()
    if run.dist is not None:  # every rank's dropout/augmentation stream goes in; rank 0 alone writes
        meta.update(run.dist.checkpoint_meta(resumable))
        if not run.dist.is_root:
            run.saved[name] = epoch
            return
    try:
        save_checkpoint(path, run.model, meta, *state)
    except (OSError, CheckpointError) as err:
        raise _save_failed(run, path, err) from None
    run.saved[name] = epoch


def _save_failed(run: RunState, path, err) -> CheckpointError:
    """One line: the file that could not be written, why, what is intact on disk, and how to go on."""
    # An OSError (the checkpoint module's CheckpointWriteError is one) is said here with the epochs on disk.
    head = f"cannot write {path}: {err.strerror or err}" if isinstance(err, OSError) else str(err)
    kept = [f"{name} (epoch {epoch})" for name, epoch in run.saved.items()]
    if kept:
        kept[0] = f"{run.run_dir}/{kept[0]}"
        intact = f"{' and '.join(kept)} {'are' if len(kept) > 1 else 'is'} intact"
    else:
        intact = "no checkpoint was written yet"
    then = (
        f"free space and continue with --resume {run.run_dir}"
        if "last.npz" in run.saved
        else "free space and start the run again with a new --out"
    )
    error = CheckpointError(f"{head}; {intact}; {then}")
    error.path = str(path)
    return error


def run_epoch(run: RunState, epoch: int) -> dict:
    """One epoch: the training steps, then validation and test, metrics.csv's row, the checkpoints and the
    epoch's line. The best epoch is chosen on the validation set alone (the data's metric: accuracy, or bits
    per character); the test set is only monitored."""
    data = run.data
    t0 = time.perf_counter()
    loss_sum, correct, seen = _train_batches(run, epoch, t0)
    train_seconds = time.perf_counter() - t0
    val_loss, val_acc = data.evaluate(run, "val")
    test_loss, test_acc = data.evaluate(run, "test")
    row = {
        "epoch": epoch,
        "train_loss": loss_sum / seen,
        "train_accuracy": correct / seen,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        **data.derived(loss_sum / seen, val_loss, test_loss),
        "lr": run.optimizer.lr,
        "train_seconds": round(train_seconds, 4),
        "seconds": round(time.perf_counter() - t0, 4),
    }
    for hook in run.hooks:
        hook.epoch_metrics(run, epoch, row)
    run.history.append(row)
    run.csv_log.log(row)
    # The best parameters are kept on disk (best.npz), not here.
    run.stopper.step(data.select(val_loss, val_acc), {}, epoch=epoch)
    improved = run.stopper.best_epoch == epoch
    if improved:
        _save(run, "best.npz", epoch, row)
    _save(run, "last.npz", epoch, row, resumable=True)
    run.say(data.epoch_line(run, epoch, {**row, "train_seconds": train_seconds}, seen, improved))
    for hook in run.hooks:
        hook.end_epoch(run, epoch, row)
    return row


def forward_loss(run: RunState, loss_fn, xb, yb):
    """(mean softmax cross-entropy, logits, the logits as (predictions, classes), the targets flat) of one
    batch: an image's class, or every next character of a window of B streams × T characters (B·T
    predictions, the loss the mean over them in nats)."""
    logits = run.model.forward(xb)
    flat, targets = logits.reshape(-1, logits.shape[-1]), yb.reshape(-1)
    return loss_fn.forward(flat, targets), logits, flat, targets


def backward_step(run: RunState, loss_fn, logits_shape) -> None:
    """The rest of a training step after ``forward_loss``: back-propagation, [the all-reduce of every
    rank's gradient under MPI], [clipping of the gradient's norm (§10.11.1)], + λθ where the loop adds
    the weight decay (§7.1.1), the hooks around the optimiser's step (ch. 8)."""
    dlogits = loss_fn.backward().reshape(logits_shape)
    dist, grads, hooks = run.dist, run.grads, run.hooks
    if dist is not None:
        dlogits *= dist.shard_weight  # B_k / B: the shards' gradients then sum to the batch's mean
    run.model.backward(dlogits, need_input_grad=False)
    if dist is not None:
        dist.allreduce_grads(run)  # Σ_k over the ranks: every rank steps with the whole batch's g
    if run.config.clip_grad_norm:  # None or 0: off
        clip_grad_norm(grads, run.config.clip_grad_norm)  # of the loss's gradient, before weight decay
    if run.weight_decay:
        add_l2_grad_(run.params, grads, run.weight_decay)
    if hooks:
        for hook in hooks:
            hook.before_step(run)
    run.optimizer.step(run.params, grads)
    if hooks:
        for hook in hooks:
            hook.after_step(run)


def _train_batches(run: RunState, epoch: int, t0: float):
    """The epoch's training steps over ``run.data.train_batches``; (summed loss, correct predictions,
    predictions made: images, or characters)."""
    optimizer, schedule, step, per_epoch = run.optimizer, run.schedule, run.step, run.steps_per_epoch
    loss_fn = SoftmaxCrossEntropy().reuse_buffers()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = _progress(per_epoch, f"epoch {epoch}/{run.config.epochs}", run.bar_disabled)
    batches = run.data.train_batches(run)
    try:
        for b, (xb, yb) in enumerate(batches, 1):
            if schedule is not None:
                optimizer.lr = schedule(step)
            loss, logits, flat, targets = forward_loss(run, loss_fn, xb, yb)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"training diverged: the loss became {loss} at epoch {epoch}, batch {b} of {per_epoch}; "
                    f"try a lower learning rate (--lr, now {optimizer.lr:g}){run.data.diverged_hint}. "
                    f"The best checkpoint so far (epoch {run.best_epoch}) is {run.run_dir / 'best.npz'}",
                    epoch,
                    b,
                    str(run.run_dir),
                )
            n = len(targets)
            loss_sum += loss * n
            correct += int(np.count_nonzero(flat.argmax(axis=1) == targets))
            seen += n
            backward_step(run, loss_fn, logits.shape)
            step += 1
            if bar is not None:
                bar.update(1)
                if b % 10 == 0 or b == per_epoch:
                    rate = seen / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix_str(
                        f"loss {loss_sum / seen:.4f}, {rate:,.0f} {run.data.unit}/s", refresh=False
                    )
    finally:
        batches.close()  # a text's windows reset the recurrent state here
        run.step = step
        if bar is not None:
            bar.close()
    if run.dist is not None:
        return run.dist.sum_counts(loss_sum, correct, seen)
    return loss_sum, correct, seen


def _augmenter(config, arch, rng):
    """Random shifts, rotations and (with ``augment_elastic``) elastic distortions of a batch (ch. 7 §7.4)
    on the images, whatever layout the model takes. Without the elastic part nothing more is drawn."""
    image_shape = tuple(arch["input_shape"])
    settings = (config.augment_shift, config.augment_degrees, config.augment_elastic)

    def augment(xb):
        return augment_batch(xb.reshape(len(xb), *image_shape), rng, *settings).reshape(xb.shape)

    return augment


def finish(run: RunState, started: float) -> TrainResult:
    """Restore the best parameters (by the data's validation metric, from best.npz), test them, plot,
    summarise."""
    config = run.config
    # The best parameters, read back from disk (which also checks best.npz).
    restore_into(run.model, load_checkpoint(run.run_dir / "best.npz"))
    fields = run.data.final(run)
    seconds = time.perf_counter() - started
    done, best_epoch = len(run.history), run.best_epoch
    if run.stopped_early:
        run.say(f"stopped after epoch {done}; continue with: handgrad train --resume {run.run_dir}")
    if run.stopped_by_patience:
        run.say(
            f"early stopping: no better {run.data.chosen_by} in the {config.patience} epochs after epoch "
            f"{best_epoch}"
        )
    run.log(run.data.summary(run, fields, seconds))
    if run.data.fell_back:
        run.log(
            "NOTE: this was the bundled sample. For full MNIST put its four files in DIR/mnist/ and set "
            "HANDGRAD_DATA=DIR (or pass --data-dir DIR), or run once with network access to download "
            "them."
        )
    return TrainResult(
        run_dir=str(run.run_dir),
        dataset=run.data.name,
        best_epoch=best_epoch,
        epochs=done,
        seconds=seconds,
        history=run.history,
        fell_back=run.data.fell_back,
        stopped_early=run.stopped_early,
        stopped_by_patience=run.stopped_by_patience,
        **fields,
    )


def _write_plots(run, X_test_img, y_test, preds, classes):
    from . import plots

    if not plots.available():
        run.say("note: matplotlib is not installed, so no plots were drawn (pip install 'handgrad[app]')")
        return
    run_dir, arch, dataset = run.run_dir, run.arch, run.data.name
    cm = confusion_matrix(y_test, preds, len(classes))
    acc = float(np.trace(cm) / max(cm.sum(), 1))
    plots.plot_curves(run.history, run_dir / "curves.png", title=f"{describe(arch)} on {dataset}")
    plots.plot_confusion(
        cm, classes, run_dir / "confusion.png", title=f"{dataset} test: accuracy {100 * acc:.2f}%"
    )
    plots.plot_misclassified(X_test_img, y_test, preds, classes, run_dir / "misclassified.png")
    plots.plot_first_layer(
        first_layer_weights(run.model), run_dir / "weights.png", tuple(arch["input_shape"])
    )
