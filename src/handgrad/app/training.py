"""The training loop: the book's pipeline from data to a saved, evaluated model (design report §4).

    seed every RNG → load train / validation / test → build and initialise the model → per epoch:
    shuffle and iterate mini-batches (ch. 5 ``batch_iterator``) → forward → softmax cross-entropy →
    backward → [clip the gradient's norm (ch. 10 ``clip_grad_norm``)] → + λw (ch. 7 ``add_l2_grad_``)
    → optimiser step (ch. 8, learning rate from the schedule
    per step) → evaluate on validation and test → keep the best parameters by validation accuracy.

``train`` runs it in three steps over one ``RunState``: ``prepare`` (a new run, or a resumed one restored
from its ``last.npz``) → ``run_epoch`` as often as the epochs, early stopping or ``on_epoch_end`` allow →
``finish`` (the best parameters back from ``best.npz``, the test metrics, the plots, the summary line).
The optimiser and the schedule come by name from :mod:`handgrad.app.recipes`. A language-model run
(``config.trains_text``) has its own loop over a stream of characters, :mod:`handgrad.app.language_model`.

With ``augment`` each training batch is replaced by a randomly shifted and rotated copy (ch. 7 §7.4,
``augment_batch``) drawn from the run's generator — the same one that shuffles and draws dropout masks —
so a resumed run repeats every draw. With ``patience`` N, training stops early (§7.8, Algorithm 7.1) once
N epochs in a row have not improved the best validation accuracy; the best parameters are restored from
``best.npz`` at the end in any case.

A run folder (``runs/<timestamp>/`` unless ``out`` names one) receives ``config.json``, ``metrics.csv``
(one row per epoch, flushed), ``best.npz`` and ``last.npz`` (see :mod:`handgrad.app.checkpoint`) and the
plots. The columns of ``metrics.csv`` (and of ``TrainResult.history``):

    epoch                          1, 2, …
    train_loss, train_accuracy     means over the epoch's mini-batches, in training mode (dropout on)
    val_loss, val_accuracy         the validation set after the epoch; val_accuracy chooses the best epoch
    test_loss, test_accuracy       the test set after the epoch, for monitoring only: never used to choose
                                   anything (the per-epoch line says "test acc (monitor)")
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
from .checkpoint import CheckpointError, load_checkpoint, restore_into, save_checkpoint
from .config import DEFAULT_DATASET, FALLBACK_DATASET, ConfigError, TrainConfig
from .evaluation import evaluate_arrays
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
    overfit_reached: bool | None = None  # with overfit N: whether 100% training accuracy was reached

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
    """What one run carries from step to step: the model and its optimiser, the data, the generator, the
    history, the best epoch so far (chapter 7's ``EarlyStopping``, on validation accuracy) and the files."""

    config: TrainConfig
    run_dir: pathlib.Path
    dataset: str
    classes: tuple
    fell_back: bool
    arch: dict
    model: object
    optimizer: object
    rng: np.random.Generator
    X_train: np.ndarray  # the images as the model takes them (views, reshaped once)
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_test_img: np.ndarray  # the test images as loaded, for the plots
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
    def best_epoch(self) -> int:
        return 0 if self.stopper.best_epoch is None else self.stopper.best_epoch

    @property
    def best_val(self) -> float:
        return -1.0 if self.stopper.best_metric is None else self.stopper.best_metric


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
    if config.trains_text:
        if dist is not None:
            raise ConfigError("a character language model trains in one process; run it without mpiexec")
        from .language_model import train_text

        return train_text(config, resume_dir, on_epoch_end=on_epoch_end, stdout=stdout, started=started)
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

    With ``files=False`` nothing is written: no run folder (``run_dir`` is None), no ``config.json``, no
    checkpoints. That is the state, as ``train`` would start from it, for tools that only take steps
    (``handgrad lr-find``) and then discard the model; ``run_epoch`` needs a run folder."""
    splits, fell_back, (X_train_img, y_train) = _load_run_data(config, log)
    dataset = splits.name
    X_val_img, y_val = splits.val
    X_test_img, y_test = splits.test
    arch = arch_from_config(config, splits.n_classes, splits.input_shape)  # the shape the data says
    rng = set_all_seeds(config.seed)
    model = build_model(arch, rng)
    model.reuse_buffers()  # the loop keeps no output past the next step: opt into the layers' buffer reuse
    # Reshape once per dataset (views), not once per batch.
    X_train, X_val, X_test = (prepare_inputs(arch, X) for X in (X_train_img, X_val_img, X_test_img))

    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    saved_config = config.to_dict()
    saved_config.update(dataset=dataset, resume=None, out=None)
    base_meta = {
        "arch": arch,
        "dataset": dataset,
        "classes": list(splits.classes),
        "config": saved_config,
        "handgrad_version": __version__,
    }
    root = dist is None or dist.is_root
    run_dir = _run_folder(config, resume_dir, files, dist)
    local_rng = rng if dist is None else dist.rank_generator(config.seed)  # dropout, augmentation: per rank
    # Without --patience the stopper only keeps the best epoch: it never runs out.
    stopper = EarlyStopping(config.patience or sys.maxsize, mode="max")
    run = RunState(
        config=config,
        run_dir=run_dir,
        dataset=dataset,
        classes=tuple(splits.classes),
        fell_back=fell_back,
        arch=arch,
        model=model,
        rng=rng,
        X_train=X_train,
        y_train=y_train,
        X_val=X_val,
        y_val=y_val,
        X_test=X_test,
        y_test=y_test,
        X_test_img=X_test_img,
        steps_per_epoch=steps_per_epoch,
        **loop_pieces(config, model, steps_per_epoch),
        augment=_augmenter(config, arch, local_rng) if config.augment else None,
        stopper=stopper,
        base_meta=base_meta,
        say=say,
        log=log,
        dist=dist,
    )
    if not files:
        model.train()
        return run
    if resume_dir is not None and root:
        _restore(run)
    if dist is not None:
        dist.start(run, resumed=resume_dir is not None)
    if root:
        TrainConfig.from_dict(saved_config).save(run_dir / "config.json")
    run.csv_log = CSVLogger(run_dir / "metrics.csv") if root else _NoLog()
    for row in run.history:
        run.csv_log.log(row)
    if resume_dir is None:
        # Epoch 0: the initial parameters are the best so far and a valid point to resume from.
        _, val_acc, _ = _evaluate(run, X_val, y_val)
        stopper.step(val_acc, {}, epoch=0)
        _save(run, "best.npz", 0, {})
        _save(run, "last.npz", 0, {}, resumable=True)
    say(_describe_run(run))
    if stopper.stopped:  # a resumed run that had already stopped early
        run.stopped_by_patience, run.start_epoch = True, config.epochs
    model.train()
    return run


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
    if ckpt.metadata.get("arch") != run.arch:
        raise CheckpointError(
            f"{run_dir / 'last.npz'} holds a different architecture than {run_dir / 'config.json'}"
        )
    restore_into(run.model, ckpt, run.optimizer, run.rng)
    meta = ckpt.metadata
    start_epoch, run.history = int(meta["epoch"]), list(meta.get("history", []))
    best_epoch, best_val = int(meta.get("best_epoch", 0)), float(meta.get("best_val_accuracy", -1.0))
    if int(meta.get("steps", start_epoch * run.steps_per_epoch)) != start_epoch * run.steps_per_epoch:
        raise CheckpointError(
            f"{run_dir}: the saved step count does not match {len(run.y_train):,} training "
            f"images in batches of {config.batch_size}; was the dataset changed?"
        )
    # Algorithm 7.1's counter j is the number of epochs since the best one.
    run.stopper.load_state_dict(
        {
            "patience": run.stopper.patience,
            "mode": "max",
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


def _describe_run(run: RunState) -> str:
    config = run.config
    return (
        f"{describe(run.arch)} on {run.dataset}: {len(run.y_train):,} train / {len(run.y_val):,} val / "
        f"{len(run.y_test):,} test images, batch {config.batch_size}, {config.optimizer} lr {config.lr:g}"
        + (
            f" β {config.momentum:g}{' nesterov' if config.nesterov else ''}"
            if config.optimizer == "momentum"
            else ""
        )
        + f", weight decay {config.weight_decay:g}, {config.schedule} schedule"
        + (f" (warmup {config.warmup_epochs:g} epochs)" if config.warmup_epochs else "")
        + (
            f", augmentation ±{config.augment_shift} px ±{config.augment_degrees:g}°"
            if config.augment
            else ""
        )
        + (f", patience {config.patience}" if config.patience else "")
        + (f", gradient norm clipped at {config.clip_grad_norm:g}" if config.clip_grad_norm else "")
        + f", {config.epochs} epochs -> {run.run_dir}"
    )


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
        "best_val_accuracy": run.best_val,
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
    """One epoch: the mini-batch steps, then validation and test, metrics.csv's row, the checkpoints and the
    epoch's line. The best epoch is chosen on validation accuracy alone; test accuracy is only monitored."""
    config = run.config
    t0 = time.perf_counter()
    loss_sum, correct, seen = _train_batches(run, epoch, t0)
    train_seconds = time.perf_counter() - t0
    val_loss, val_acc, _ = _evaluate(run, run.X_val, run.y_val)
    test_loss, test_acc, _ = _evaluate(run, run.X_test, run.y_test)
    row = {
        "epoch": epoch,
        "train_loss": loss_sum / seen,
        "train_accuracy": correct / seen,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "lr": run.optimizer.lr,
        "train_seconds": round(train_seconds, 4),
        "seconds": round(time.perf_counter() - t0, 4),
    }
    for hook in run.hooks:
        hook.epoch_metrics(run, epoch, row)
    run.history.append(row)
    run.csv_log.log(row)
    run.stopper.step(val_acc, {}, epoch=epoch)  # the best parameters are kept on disk (best.npz), not here
    improved = run.stopper.best_epoch == epoch
    if improved:
        _save(run, "best.npz", epoch, row)
    _save(run, "last.npz", epoch, row, resumable=True)
    run.say(
        f"epoch {epoch:>{len(str(config.epochs))}}/{config.epochs}  train loss {row['train_loss']:.4f} "
        f"acc {100 * row['train_accuracy']:.2f}%  val loss {val_loss:.4f} acc {100 * val_acc:.2f}%  "
        f"test acc (monitor) {100 * test_acc:.2f}%  lr {run.optimizer.lr:.3g}  {train_seconds:.1f} s "
        f"({seen / train_seconds:,.0f} img/s){'  *' if improved else ''}"
    )
    for hook in run.hooks:
        hook.end_epoch(run, epoch, row)
    return row


def _evaluate(run: RunState, X, y):
    """(loss, accuracy, predictions) of the run's model; under MPI each rank takes a slice (no predictions
    then)."""
    if run.dist is not None:
        return run.dist.evaluate(run.model, X, y, run.config.eval_batch_size)
    return evaluate_arrays(run.model, X, y, run.config.eval_batch_size)


def _train_batches(run: RunState, epoch: int, t0: float):
    """The epoch's mini-batch steps; (summed loss, correct predictions, images seen)."""
    model, optimizer, schedule, params, grads = run.model, run.optimizer, run.schedule, run.params, run.grads
    dist = run.dist
    loss_fn, weight_decay, augment = SoftmaxCrossEntropy().reuse_buffers(), run.weight_decay, run.augment
    clip = run.config.clip_grad_norm  # None or 0: off
    steps_per_epoch, step, hooks = run.steps_per_epoch, run.step, run.hooks
    loss_sum, correct, seen = 0.0, 0, 0
    bar = _progress(steps_per_epoch, f"epoch {epoch}/{run.config.epochs}", run.bar_disabled)
    try:
        batches = (
            batch_iterator(run.X_train, run.y_train, run.config.batch_size, shuffle=True, rng=run.rng)
            if dist is None
            else dist.shards(run.X_train, run.y_train, run.config.batch_size, run.rng)
        )
        for b, (xb, yb) in enumerate(batches, 1):
            if schedule is not None:
                optimizer.lr = schedule(step)
            if augment is not None:
                xb = augment(xb)
            logits = model.forward(xb)
            loss = loss_fn.forward(logits, yb)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"training diverged: the loss became {loss} at epoch {epoch}, batch {b} of "
                    f"{steps_per_epoch}; "
                    f"try a lower learning rate (--lr, now {optimizer.lr:g}). "
                    f"The best checkpoint so far (epoch {run.best_epoch}) is {run.run_dir / 'best.npz'}",
                    epoch,
                    b,
                    str(run.run_dir),
                )
            n = len(yb)
            loss_sum += loss * n
            correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
            seen += n
            dlogits = loss_fn.backward()
            if dist is not None:
                dlogits *= dist.shard_weight  # B_k / B: the shards' gradients then sum to the batch's mean
            model.backward(dlogits, need_input_grad=False)
            if dist is not None:
                dist.allreduce_grads(run)  # Σ_k over the ranks: every rank steps with the whole batch's g
            if clip:
                clip_grad_norm(grads, clip)  # of the loss's gradient, before weight decay (as torch's)
            if weight_decay:
                add_l2_grad_(params, grads, weight_decay)
            if hooks:
                for hook in hooks:
                    hook.before_step(run)
            optimizer.step(params, grads)
            if hooks:
                for hook in hooks:
                    hook.after_step(run)
            step += 1
            if bar is not None:
                bar.update(1)
                if b % 10 == 0 or b == steps_per_epoch:
                    rate = seen / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix_str(f"loss {loss_sum / seen:.4f}, {rate:,.0f} img/s", refresh=False)
    finally:
        run.step = step
        if bar is not None:
            bar.close()
    if dist is not None:
        return dist.sum_counts(loss_sum, correct, seen)
    return loss_sum, correct, seen


def _augmenter(config, arch, rng):
    """Random shifts and rotations of a batch (ch. 7 §7.4) on the images, whatever layout the model takes."""
    image_shape = tuple(arch["input_shape"])

    def augment(xb):
        images = xb.reshape(len(xb), *image_shape)
        return augment_batch(images, rng, config.augment_shift, config.augment_degrees).reshape(xb.shape)

    return augment


def finish(run: RunState, started: float) -> TrainResult:
    """Restore the best parameters (by validation accuracy, from best.npz), test them, plot, summarise."""
    config, model = run.config, run.model
    # The best parameters by validation accuracy, read back from disk (which also checks best.npz).
    restore_into(model, load_checkpoint(run.run_dir / "best.npz"))
    test_loss, test_acc, preds = evaluate_arrays(model, run.X_test, run.y_test, config.eval_batch_size)
    macro_f1 = float(f1_score(run.y_test, preds, average="macro", n_classes=len(run.classes)))

    if config.plots and run.history:
        _write_plots(
            run.run_dir,
            run.history,
            model,
            run.arch,
            run.X_test_img,
            run.y_test,
            preds,
            run.classes,
            run.dataset,
            run.say,
        )

    seconds = time.perf_counter() - started
    done, best_epoch, best_val = len(run.history), run.best_epoch, run.best_val
    if run.stopped_early:
        run.say(f"stopped after epoch {done}; continue with: handgrad train --resume {run.run_dir}")
    if run.stopped_by_patience:
        run.say(
            f"early stopping: no better validation accuracy in the {config.patience} epochs after epoch "
            f"{best_epoch}"
        )
    run.log(
        f"best epoch {best_epoch}/{done}: test accuracy {100 * test_acc:.2f}%, macro-F1 {macro_f1:.4f} "
        f"(val {100 * max(best_val, 0):.2f}%) on {run.dataset}; {_fmt_seconds(seconds)}; "
        f"saved in {run.run_dir}"
    )
    if run.fell_back:
        run.log(
            "NOTE: this was the bundled sample. For full MNIST put its four files in DIR/mnist/ and set "
            "HANDGRAD_DATA=DIR (or pass --data-dir DIR), or run once with network access to download "
            "them."
        )
    return TrainResult(
        run_dir=str(run.run_dir),
        dataset=run.dataset,
        best_epoch=best_epoch,
        best_val_accuracy=best_val,
        test_accuracy=test_acc,
        test_loss=test_loss,
        test_macro_f1=macro_f1,
        epochs=done,
        seconds=seconds,
        history=run.history,
        fell_back=run.fell_back,
        stopped_early=run.stopped_early,
        stopped_by_patience=run.stopped_by_patience,
    )


def _write_plots(run_dir, history, model, arch, X_test_img, y_test, preds, classes, dataset, say):
    from . import plots

    if not plots.available():
        say("note: matplotlib is not installed, so no plots were drawn (pip install 'handgrad[app]')")
        return
    cm = confusion_matrix(y_test, preds, len(classes))
    acc = float(np.trace(cm) / max(cm.sum(), 1))
    plots.plot_curves(history, run_dir / "curves.png", title=f"{describe(arch)} on {dataset}")
    plots.plot_confusion(
        cm, classes, run_dir / "confusion.png", title=f"{dataset} test: accuracy {100 * acc:.2f}%"
    )
    plots.plot_misclassified(X_test_img, y_test, preds, classes, run_dir / "misclassified.png")
    plots.plot_first_layer(first_layer_weights(model), run_dir / "weights.png", tuple(arch["input_shape"]))
