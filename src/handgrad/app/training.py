"""The training loop: the book's pipeline from data to a saved, evaluated model (design report §4).

    seed every RNG → load train / validation / test → build and initialise the model → per epoch:
    shuffle and iterate mini-batches (ch. 5 ``batch_iterator``) → forward → softmax cross-entropy →
    backward → + λw (ch. 7 ``add_l2_grad_``) → optimiser step (ch. 8, learning rate from the schedule
    per step) → evaluate on validation and test → keep the best parameters by validation accuracy.

With ``augment`` each training batch is replaced by a randomly shifted and rotated copy (ch. 7 §7.4,
``augment_batch``) drawn from the run's generator — the same one that shuffles and draws dropout masks —
so a resumed run repeats every draw. With ``patience`` N, training stops early (§7.8, Algorithm 7.1) once
N epochs in a row have not improved the best validation accuracy; the best parameters are restored from
``best.npz`` at the end in any case.

A run folder (``runs/<timestamp>/`` unless ``out`` names one) receives ``config.json``, ``metrics.csv``
(one row per epoch, flushed), ``best.npz`` and ``last.npz`` (see :mod:`handgrad.app.checkpoint`) and the
plots. ``last.npz`` holds everything needed to continue — parameters, optimiser state, the generator's
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
import pathlib
import sys
import time

import numpy as np

from .. import __version__
from ..ch05_ml_basics import CSVLogger, batch_iterator, confusion_matrix, f1_score, set_all_seeds
from ..ch06_feedforward import SoftmaxCrossEntropy
from ..ch07_regularization import add_l2_grad_, augment_batch
from ..ch08_optimization import SGD, AdaGrad, Adam, Momentum, RMSProp, cosine_schedule, exponential_schedule, step_schedule
from .checkpoint import CheckpointError, load_checkpoint, restore_into, save_checkpoint
from .config import DEFAULT_DATASET, FALLBACK_DATASET, ConfigError, TrainConfig
from .evaluation import evaluate_arrays
from .models import arch_from_config, build_model, describe, first_layer_weights, prepare_inputs

__all__ = ["train", "TrainResult", "TrainingDiverged", "load_data", "make_optimizer", "lr_schedule",
           "FALLBACK_NOTICE"]

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

    def to_dict(self):
        return dataclasses.asdict(self)

    def __getitem__(self, key):  # result["test_accuracy"] works as for a dict
        return getattr(self, key)


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


def make_optimizer(config: TrainConfig):
    """The optimiser ``config.optimizer`` names (ch. 8). Weight decay is an L2 penalty on the weights
    (biases and batch-norm parameters exempt): ``sgd`` and ``momentum`` fold its gradient λθ into their
    step (``weight_decay=``, bit-for-bit the same as ``add_l2_grad_`` then ``step``, in one sweep over
    each parameter); for the adaptive ones the loop adds it to the gradients; ``adamw``'s decoupled decay
    θ ← θ − lr λ θ is the optimiser's own and, as in torch.optim.AdamW, applies to every parameter."""
    name, lr = config.optimizer, config.lr
    if name == "sgd":
        return SGD(lr, weight_decay=config.weight_decay)
    if name == "momentum":
        return Momentum(lr, beta=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay)
    if name == "adam":
        return Adam(lr)
    if name == "adamw":
        return Adam(lr, weight_decay=config.weight_decay, decoupled=True)
    if name == "rmsprop":
        return RMSProp(lr)
    return AdaGrad(lr)


def lr_schedule(config: TrainConfig, steps_per_epoch: int):
    """The learning rate per step t = 0, 1, …, or None when it stays ``config.lr`` throughout.

    Linear warmup over ``warmup_epochs`` (η t / T_w), then, counting steps from the end of the warmup:
    constant; cosine-annealed to 0 at the end; ``step``: multiplied by ``lr_gamma`` (default 0.1) every
    ``lr_step_epochs`` epochs (default a third of the epochs); ``exponential``: multiplied by ``lr_gamma``
    (default 0.9) per epoch, smoothly (γ^(1/steps_per_epoch) per step).
    """
    total = config.epochs * steps_per_epoch
    warmup = min(int(round(config.warmup_epochs * steps_per_epoch)), total - 1)
    lr = config.lr
    if config.schedule == "cosine":
        return lambda t: cosine_schedule(t, total, lr, 0.0, warmup)
    if config.schedule == "step":
        every = max(1, int(round((config.lr_step_epochs or config.epochs / 3) * steps_per_epoch)))
        gamma = config.lr_gamma if config.lr_gamma is not None else 0.1
        after = lambda t: step_schedule(t, lr, every, gamma)  # noqa: E731
    elif config.schedule == "exponential":
        gamma = (config.lr_gamma if config.lr_gamma is not None else 0.9) ** (1.0 / steps_per_epoch)
        after = lambda t: exponential_schedule(t, lr, gamma)  # noqa: E731
    elif warmup > 0:
        after = lambda t: lr  # noqa: E731
    else:
        return None
    return lambda t: lr * t / warmup if t < warmup else after(t - warmup)


def _new_run_dir(out):
    if out is not None:
        path = pathlib.Path(out)
        if (path / "last.npz").exists() or (path / "config.json").exists():
            raise ConfigError(f"{path} already holds a run; continue it with --resume {path} or choose another --out")
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
# The loop
# ----------------------------------------------------------------------------------------------------


def train(config: TrainConfig | None = None, *, on_epoch_end=None, stdout=None) -> TrainResult:
    """Train a model as ``config`` says (defaults: the reference configuration) and return a TrainResult.

    ``on_epoch_end(epoch, row)`` is called after each epoch's checkpoints are written; returning False
    stops the run there, as an interruption would (``resume`` continues it). Progress goes to ``stdout``
    (default ``sys.stdout``) and the progress bar to stderr when it is a terminal and not ``quiet``.

    Raises ConfigError (bad settings or run folder), DatasetError (data not loadable), CheckpointError
    (``resume`` of a folder with a damaged checkpoint) and TrainingDiverged (NaN/inf loss; ``best.npz``
    holds the best parameters so far).
    """
    started = time.perf_counter()
    config = dataclasses.replace(config) if config is not None else TrainConfig()
    stream = stdout or sys.stdout

    def log(msg=""):
        print(msg, file=stream, flush=True)

    def say(msg=""):
        if not config.quiet:
            log(msg)

    resume_dir = None
    if config.resume is not None:
        resume_dir = pathlib.Path(config.resume)
        if not resume_dir.is_dir():
            raise ConfigError(f"--resume {resume_dir}: no such run folder")
        saved = TrainConfig.load(resume_dir / "config.json")
        keep = {"data_dir": config.data_dir or saved.data_dir, "quiet": config.quiet, "plots": config.plots,
                "epochs": config.epochs or saved.epochs, "resume": str(resume_dir), "out": str(resume_dir)}
        config = dataclasses.replace(saved, **keep)
    elif config.epochs is None:
        raise ConfigError("epochs must be a positive integer, got None")
    config.validate()

    splits, fell_back = load_data(config.dataset, config.data_dir, log)
    dataset = splits.name
    X_train_img, y_train = splits.train
    if config.limit is not None:
        X_train_img, y_train = X_train_img[:config.limit], y_train[:config.limit]
    X_val_img, y_val = splits.val
    X_test_img, y_test = splits.test
    if len(y_train) == 0 or len(y_val) == 0:
        raise ConfigError(f"{dataset} leaves no training or validation images")

    arch = arch_from_config(config, splits.n_classes, splits.input_shape)  # the shape the data says
    rng = set_all_seeds(config.seed)
    model = build_model(arch, rng)
    model.reuse_buffers()  # the loop keeps no output past the next step: opt into the layers' buffer reuse
    # Reshape once per dataset (views), not once per batch.
    X_train, X_val, X_test = (prepare_inputs(arch, X) for X in (X_train_img, X_val_img, X_test_img))

    optimizer = make_optimizer(config)
    loss_fn = SoftmaxCrossEntropy()
    params = {name: p for name, p, _ in model.parameters()}
    grads = {name: g for name, _, g in model.parameters()}  # the layers' own arrays, overwritten in place
    # λθ added by the loop only where the optimiser does not decay by itself (see make_optimizer)
    weight_decay = 0.0 if config.optimizer in ("adamw", "sgd", "momentum") else float(config.weight_decay)
    image_shape = tuple(arch["input_shape"])
    augment = None
    if config.augment:
        def augment(xb):  # on the images, whatever layout the model takes
            images = xb.reshape(len(xb), *image_shape)
            return augment_batch(images, rng, config.augment_shift, config.augment_degrees).reshape(xb.shape)
    n_train, batch_size = len(y_train), config.batch_size
    steps_per_epoch = math.ceil(n_train / batch_size)
    schedule = lr_schedule(config, steps_per_epoch)

    saved_config = config.to_dict()
    saved_config.update(dataset=dataset, resume=None, out=None)
    base_meta = {"arch": arch, "dataset": dataset, "classes": list(splits.classes), "config": saved_config,
                 "handgrad_version": __version__}

    history, best_epoch, best_val, start_epoch = [], 0, -1.0, 0
    if resume_dir is not None:
        run_dir = resume_dir
        ckpt = load_checkpoint(run_dir / "last.npz")
        if ckpt.metadata.get("arch") != arch:
            raise CheckpointError(f"{run_dir / 'last.npz'} holds a different architecture than {run_dir / 'config.json'}")
        restore_into(model, ckpt)
        if ckpt.optimizer_state is not None:
            optimizer.load_state_dict(ckpt.optimizer_state)
        if ckpt.rng_state is not None:
            rng.bit_generator.state = ckpt.rng_state
        meta = ckpt.metadata
        start_epoch, history = int(meta["epoch"]), list(meta.get("history", []))
        best_epoch, best_val = int(meta.get("best_epoch", 0)), float(meta.get("best_val_accuracy", -1.0))
        if int(meta.get("steps", start_epoch * steps_per_epoch)) != start_epoch * steps_per_epoch:
            raise CheckpointError(f"{run_dir}: the saved step count does not match {n_train:,} training images "
                                  f"in batches of {batch_size}; was the dataset changed?")
        # metrics.csv may hold a row written just before an interruption: rewrite it from the checkpoint.
        (run_dir / "metrics.csv").unlink(missing_ok=True)
        old = TrainConfig.load(run_dir / "config.json")
        if old.epochs != config.epochs and config.schedule == "cosine":
            say(f"note: the cosine schedule now anneals to epoch {config.epochs} (it was set for {old.epochs})")
        say(f"resuming {run_dir} after epoch {start_epoch} of {config.epochs}")
    else:
        run_dir = _new_run_dir(config.out)
    config_to_save = TrainConfig.from_dict(saved_config)
    config_to_save.save(run_dir / "config.json")
    csv_log = CSVLogger(run_dir / "metrics.csv")
    for row in history:
        csv_log.log(row)

    def checkpoint_meta(epoch, row, steps):
        return {**base_meta, "epoch": epoch, "steps": steps, "metrics": row, "history": history,
                "best_epoch": best_epoch, "best_val_accuracy": best_val}

    if resume_dir is None:
        # Epoch 0: the initial parameters are the best so far and a valid point to resume from.
        _, best_val, _ = evaluate_arrays(model, X_val, y_val, config.eval_batch_size)
        save_checkpoint(run_dir / "best.npz", model, checkpoint_meta(0, {}, 0))
        save_checkpoint(run_dir / "last.npz", model, checkpoint_meta(0, {}, 0), optimizer.state_dict(),
                        rng.bit_generator.state)

    say(f"{describe(arch)} on {dataset}: {n_train:,} train / {len(y_val):,} val / {len(y_test):,} test images, "
        f"batch {batch_size}, {config.optimizer} lr {config.lr:g}"
        + (f" β {config.momentum:g}{' nesterov' if config.nesterov else ''}" if config.optimizer == "momentum" else "")
        + f", weight decay {config.weight_decay:g}, {config.schedule} schedule"
        + (f" (warmup {config.warmup_epochs:g} epochs)" if config.warmup_epochs else "")
        + (f", augmentation ±{config.augment_shift} px ±{config.augment_degrees:g}°" if config.augment else "")
        + (f", patience {config.patience}" if config.patience else "")
        + f", {config.epochs} epochs -> {run_dir}")

    bar_disabled = config.quiet or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    step = start_epoch * steps_per_epoch
    stopped_early = stopped_by_patience = False
    if config.patience and len(history) - best_epoch >= config.patience:  # a resumed run that had stopped
        stopped_by_patience, start_epoch = True, config.epochs
    model.train()
    # A diverging run overflows: the NaN/inf check on the loss reports it, not NumPy's warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        for epoch in range(start_epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            bar = _progress(steps_per_epoch, f"epoch {epoch}/{config.epochs}", bar_disabled)
            try:
                batches = batch_iterator(X_train, y_train, batch_size, shuffle=True, rng=rng)
                for b, (xb, yb) in enumerate(batches, 1):
                    if schedule is not None:
                        optimizer.lr = schedule(step)
                    if augment is not None:
                        xb = augment(xb)
                    logits = model.forward(xb)
                    loss = loss_fn.forward(logits, yb)
                    if not math.isfinite(loss):
                        raise TrainingDiverged(
                            f"training diverged: the loss became {loss} at epoch {epoch}, batch {b} of {steps_per_epoch}; "
                            f"try a lower learning rate (--lr, now {optimizer.lr:g}). "
                            f"The best checkpoint so far (epoch {best_epoch}) is {run_dir / 'best.npz'}",
                            epoch, b, str(run_dir))
                    n = len(yb)
                    loss_sum += loss * n
                    correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
                    seen += n
                    model.backward(loss_fn.backward(), need_input_grad=False)
                    if weight_decay:
                        add_l2_grad_(params, grads, weight_decay)
                    optimizer.step(params, grads)
                    step += 1
                    if bar is not None:
                        bar.update(1)
                        if b % 10 == 0 or b == steps_per_epoch:
                            rate = seen / max(time.perf_counter() - t0, 1e-9)
                            bar.set_postfix_str(f"loss {loss_sum / seen:.4f}, {rate:,.0f} img/s", refresh=False)
            finally:
                if bar is not None:
                    bar.close()
            train_seconds = time.perf_counter() - t0
            val_loss, val_acc, _ = evaluate_arrays(model, X_val, y_val, config.eval_batch_size)
            test_loss, test_acc, _ = evaluate_arrays(model, X_test, y_test, config.eval_batch_size)
            row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                   "val_loss": val_loss, "val_accuracy": val_acc, "test_loss": test_loss, "test_accuracy": test_acc,
                   "lr": optimizer.lr, "train_seconds": round(train_seconds, 4),
                   "seconds": round(time.perf_counter() - t0, 4)}
            history.append(row)
            csv_log.log(row)
            improved = val_acc > best_val
            if improved:
                best_epoch, best_val = epoch, val_acc
                save_checkpoint(run_dir / "best.npz", model, checkpoint_meta(epoch, row, step))
            save_checkpoint(run_dir / "last.npz", model, checkpoint_meta(epoch, row, step), optimizer.state_dict(),
                            rng.bit_generator.state)
            say(f"epoch {epoch:>{len(str(config.epochs))}}/{config.epochs}  train loss {row['train_loss']:.4f} "
                f"acc {100 * row['train_accuracy']:.2f}%  val loss {val_loss:.4f} acc {100 * val_acc:.2f}%  "
                f"test acc {100 * test_acc:.2f}%  lr {optimizer.lr:.3g}  {train_seconds:.1f} s "
                f"({seen / train_seconds:,.0f} img/s){'  *' if improved else ''}")
            if on_epoch_end is not None and on_epoch_end(epoch, row) is False:
                stopped_early = epoch < config.epochs
                break
            if config.patience and epoch - best_epoch >= config.patience and epoch < config.epochs:
                stopped_by_patience = True
                break
    csv_log.close()

    # The best parameters by validation accuracy, read back from disk (which also checks best.npz).
    best = load_checkpoint(run_dir / "best.npz")
    restore_into(model, best)
    test_loss, test_acc, preds = evaluate_arrays(model, X_test, y_test, config.eval_batch_size)
    n_classes = splits.n_classes
    macro_f1 = float(f1_score(y_test, preds, average="macro", n_classes=n_classes))

    if config.plots and history:
        _write_plots(run_dir, history, model, arch, X_test_img, y_test, preds, splits.classes, dataset, say)

    seconds = time.perf_counter() - started
    done = len(history)
    if stopped_early:
        say(f"stopped after epoch {done}; continue with: handgrad train --resume {run_dir}")
    if stopped_by_patience:
        say(f"early stopping: no better validation accuracy in the {config.patience} epochs after epoch {best_epoch}")
    log(f"best epoch {best_epoch}/{done}: test accuracy {100 * test_acc:.2f}%, macro-F1 {macro_f1:.4f} "
        f"(val {100 * max(best_val, 0):.2f}%) on {dataset}; {_fmt_seconds(seconds)}; saved in {run_dir}")
    if fell_back:
        log("NOTE: this was the bundled sample. For full MNIST put its four files in DIR/mnist/ and set "
            "HANDGRAD_DATA=DIR (or pass --data-dir DIR), or run once with network access to download them.")
    return TrainResult(run_dir=str(run_dir), dataset=dataset, best_epoch=best_epoch, best_val_accuracy=best_val,
                       test_accuracy=test_acc, test_loss=test_loss, test_macro_f1=macro_f1, epochs=done,
                       seconds=seconds, history=history, fell_back=fell_back, stopped_early=stopped_early,
                       stopped_by_patience=stopped_by_patience)


def _write_plots(run_dir, history, model, arch, X_test_img, y_test, preds, classes, dataset, say):
    from . import plots

    if not plots.available():
        say("note: matplotlib is not installed, so no plots were drawn (pip install 'handgrad[app]')")
        return
    cm = confusion_matrix(y_test, preds, len(classes))
    acc = float(np.trace(cm) / max(cm.sum(), 1))
    plots.plot_curves(history, run_dir / "curves.png", title=f"{describe(arch)} on {dataset}")
    plots.plot_confusion(cm, classes, run_dir / "confusion.png", title=f"{dataset} test: accuracy {100 * acc:.2f}%")
    plots.plot_misclassified(X_test_img, y_test, preds, classes, run_dir / "misclassified.png")
    plots.plot_first_layer(first_layer_weights(model), run_dir / "weights.png", tuple(arch["input_shape"]))
