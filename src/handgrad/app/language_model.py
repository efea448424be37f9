"""Character-level language models: training on a stream of text, evaluation in bits per character, sampling.

``handgrad train --model lstm --text FILE`` (or ``--dataset fortunes``) comes here from ``training.train``.
The corpus is split contiguously (90 / 5 / 5%, :mod:`handgrad.datasets.text`), the vocabulary is the
training part's characters, and each part is laid out as B parallel streams (the *stream layout*)::

    ids c_0 c_1 … c_{L−1}  ->  X (B, n) = ids[:B·n].reshape(B, n),  Y = ids[1:B·n + 1].reshape(B, n)

so that row i of X holds a contiguous piece of the text and Y is X shifted by one character: the target
of every position is the next character. An epoch runs over the windows X[:, s:s+T], s = 0, T, 2T, …
(T = ``seq_len``) in order. The recurrent layers are stateful (:mod:`handgrad.app.models.char_lm`):
the state of window k starts window k + 1 of the same rows, and the gradient stops at the window's
start — truncated back-propagation through time. The state is reset at each epoch's start.

The loss is the mean cross-entropy per character (nats); reported as **bits per character**,
bpc = loss / ln 2, for training (the epoch's mean), validation and test (the whole held-out stream in
B_eval streams, state carried across windows). The epoch with the lowest validation bpc is kept
(``best.npz``). ``metrics.csv`` has the image loop's columns, ``*_accuracy`` being next-character
accuracy, plus ``train_bpc``, ``val_bpc`` and ``test_bpc``. Checkpoints hold the vocabulary
(``metadata["vocab"]``) and where the text came from, so ``evaluate`` and ``sample`` need nothing else,
and a resumed run repeats an uninterrupted one bit for bit (the order of the windows is fixed, the
optimiser's and the generator's states are saved).

``sample(checkpoint, length, temperature, prime, seed)`` generates text one character at a time, each
drawn from softmax(logits / temperature) by chapter 3's Gumbel-max sampler (temperature 0: the argmax).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import sys
import time

import numpy as np

from .. import __version__
from ..ch03_probability import sample_categorical
from ..ch05_ml_basics import CSVLogger, set_all_seeds
from ..ch06_feedforward import SoftmaxCrossEntropy, cross_entropy_from_logits
from ..ch07_regularization import EarlyStopping, add_l2_grad_
from ..ch10_sequence import clip_grad_norm
from .checkpoint import CheckpointError, load_checkpoint, load_model, restore_into, save_checkpoint
from .config import ConfigError, TrainConfig
from .models import build_model, char_arch, describe, input_kind, reset_states

__all__ = [
    "train_text",
    "stream_layout",
    "evaluate_stream",
    "TextEvalResult",
    "evaluate_text",
    "format_text_report",
    "sample",
    "sample_text",
    "LN2",
]

LN2 = math.log(2.0)


def stream_layout(ids, streams):
    """(X, Y), each (B, n), B = ``streams``: B contiguous pieces of ``ids`` and their next characters."""
    n = (len(ids) - 1) // streams
    X = ids[: streams * n].reshape(streams, n)
    Y = ids[1 : streams * n + 1].reshape(streams, n)
    return X, Y


def _windows(X, Y, seq_len):
    for s in range(0, X.shape[1], seq_len):
        yield X[:, s : s + seq_len], Y[:, s : s + seq_len]


def evaluate_stream(model, ids, streams, seq_len):
    """(mean cross-entropy in nats per character, next-character accuracy, characters scored) of ``model``
    on the text ``ids``, read as min(streams, len − 1) streams in windows of ``seq_len``, the state carried
    from window to window (reset before and after); eval mode, the previous mode restored."""
    streams = max(1, min(streams, len(ids) - 1))
    X, Y = stream_layout(ids, streams)
    was_training, total, correct = model.training, 0.0, 0
    model.eval()
    reset_states(model)
    try:
        for xb, yb in _windows(X, Y, seq_len):
            logits = model.forward(xb)
            flat, targets = logits.reshape(-1, logits.shape[-1]), yb.reshape(-1)
            total += cross_entropy_from_logits(flat, targets) * len(targets)
            correct += int(np.count_nonzero(flat.argmax(axis=1) == targets))
    finally:
        reset_states(model)
        model.train(was_training)
    return total / Y.size, correct / Y.size, int(Y.size)


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _TextRun:
    config: TrainConfig
    run_dir: pathlib.Path
    name: str
    splits: object
    arch: dict
    model: object
    optimizer: object
    rng: np.random.Generator
    X: np.ndarray
    Y: np.ndarray
    steps_per_epoch: int
    schedule: object
    weight_decay: float
    params: dict
    grads: dict
    stopper: EarlyStopping
    base_meta: dict
    say: object
    log: object
    bar_disabled: bool = True
    history: list = dataclasses.field(default_factory=list)
    step: int = 0
    start_epoch: int = 0
    saved: dict = dataclasses.field(default_factory=dict)
    csv_log: object = None
    stopped_early: bool = False

    @property
    def best_epoch(self):
        return 0 if self.stopper.best_epoch is None else self.stopper.best_epoch

    @property
    def best_val_bpc(self):
        return math.inf if self.stopper.best_metric is None else self.stopper.best_metric


def _load_corpus(config):
    from ..datasets import load_text

    if config.text is not None:
        return load_text(path=config.text)
    return load_text(dataset=config.dataset, data_dir=config.data_dir)


def _prepare(config, resume_dir, log, say):
    from .training import _new_run_dir, loop_pieces  # training imports this module lazily: no cycle

    splits = _load_corpus(config)
    B, T = config.batch_size, config.seq_len
    if len(splits.train) < B * T + 1:
        raise ConfigError(
            f"{splits.name}: its training part ({len(splits.train):,} characters) is too short for "
            f"one batch of {B} sequences of {T} characters (needs {B * T + 1:,}); use a longer "
            "text or a smaller --batch-size or --seq-len"
        )
    arch = char_arch(config.model, len(splits.vocab), config.embedding_dim, config.hidden)
    rng = set_all_seeds(config.seed)
    model = build_model(arch, rng).reuse_buffers()
    X, Y = stream_layout(splits.train, B)
    steps_per_epoch = math.ceil(X.shape[1] / T)
    saved_config = config.to_dict()
    saved_config.update(resume=None, out=None)
    base_meta = {
        "arch": arch,
        "dataset": splits.name,
        "text": config.text,
        "vocab": splits.vocab,
        "classes": list(splits.vocab),
        "config": saved_config,
        "handgrad_version": __version__,
    }
    run_dir = resume_dir if resume_dir is not None else _new_run_dir(config.out)
    run = _TextRun(
        config=config,
        run_dir=run_dir,
        name=splits.name,
        splits=splits,
        arch=arch,
        model=model,
        rng=rng,
        X=X,
        Y=Y,
        steps_per_epoch=steps_per_epoch,
        **loop_pieces(config, model, steps_per_epoch),
        stopper=EarlyStopping(config.patience or sys.maxsize, mode="min"),
        base_meta=base_meta,
        say=say,
        log=log,
    )
    if resume_dir is not None:
        _restore(run)
    TrainConfig.from_dict(saved_config).save(run_dir / "config.json")
    run.csv_log = CSVLogger(run_dir / "metrics.csv")
    for row in run.history:
        run.csv_log.log(row)
    if resume_dir is None:
        val_loss, _, _ = evaluate_stream(model, splits.val, config.eval_batch_size, T)
        run.stopper.step(val_loss / LN2, {}, epoch=0)
        _save(run, "best.npz", 0, {})
        _save(run, "last.npz", 0, {}, resumable=True)
    dropped = f" ({splits.dropped:,} held out outside the vocabulary, left out)" if splits.dropped else ""
    say(
        f"{describe(arch)} on {splits.name}: {len(splits.train):,} train / {len(splits.val):,} val / "
        f"{len(splits.test):,} test characters{dropped}, {B} streams × {T} characters, {config.optimizer} "
        f"lr {config.lr:g}, {config.schedule} schedule"
        + (f", gradient norm clipped at {config.clip_grad_norm:g}" if config.clip_grad_norm else "")
        + f", {config.epochs} epochs -> {run_dir}"
    )
    model.train()
    return run


def _restore(run):
    ckpt = load_checkpoint(run.run_dir / "last.npz")
    if ckpt.metadata.get("arch") != run.arch or ckpt.metadata.get("vocab") != run.splits.vocab:
        raise CheckpointError(
            f"{run.run_dir / 'last.npz'} holds another architecture or vocabulary than "
            f"{run.name} gives; was the text changed?"
        )
    restore_into(run.model, ckpt, run.optimizer, run.rng)
    meta = ckpt.metadata
    start, run.history = int(meta["epoch"]), list(meta.get("history", []))
    best_epoch, best = int(meta.get("best_epoch", 0)), float(meta.get("best_val_bpc", math.inf))
    run.stopper.load_state_dict(
        {
            "patience": run.stopper.patience,
            "mode": "min",
            "min_delta": 0.0,
            "best_metric": best,
            "best_epoch": best_epoch,
            "bad_epochs": start - best_epoch,
            "epochs_seen": start + 1,
        }
    )
    run.start_epoch, run.step = start, start * run.steps_per_epoch
    run.saved = {"best.npz": best_epoch, "last.npz": start}
    (run.run_dir / "metrics.csv").unlink(missing_ok=True)
    run.say(f"resuming {run.run_dir} after epoch {start} of {run.config.epochs}")


def _save(run, name, epoch, row, resumable=False):
    from .training import _save_failed

    meta = {
        **run.base_meta,
        "epoch": epoch,
        "steps": run.step,
        "metrics": row,
        "history": run.history,
        "best_epoch": run.best_epoch,
        "best_val_bpc": run.best_val_bpc,
    }
    state = (run.optimizer.state_dict(), run.rng.bit_generator.state) if resumable else ()
    try:
        save_checkpoint(run.run_dir / name, run.model, meta, *state)
    except (OSError, CheckpointError) as err:
        raise _save_failed(run, run.run_dir / name, err) from None
    run.saved[name] = epoch


def _train_windows(run, epoch):
    """One epoch over the training stream's windows; (summed loss, correct, characters)."""
    from .training import TrainingDiverged, _progress

    model, optimizer, schedule, params, grads = run.model, run.optimizer, run.schedule, run.params, run.grads
    loss_fn, clip, step = SoftmaxCrossEntropy().reuse_buffers(), run.config.clip_grad_norm, run.step
    loss_sum, correct, seen = 0.0, 0, 0
    reset_states(model)
    bar = _progress(run.steps_per_epoch, f"epoch {epoch}/{run.config.epochs}", run.bar_disabled)
    try:
        for b, (xb, yb) in enumerate(_windows(run.X, run.Y, run.config.seq_len), 1):
            if schedule is not None:
                optimizer.lr = schedule(step)
            logits = model.forward(xb)  # (B, T, V)
            flat, targets = logits.reshape(-1, logits.shape[-1]), yb.reshape(-1)
            loss = loss_fn.forward(flat, targets)  # the mean over the B·T characters
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"training diverged: the loss became {loss} at epoch {epoch}, batch {b} of "
                    f"{run.steps_per_epoch}; try a lower learning rate (--lr, now "
                    f"{optimizer.lr:g}) or --clip-grad-norm",
                    epoch,
                    b,
                    str(run.run_dir),
                )
            loss_sum += loss * len(targets)
            correct += int(np.count_nonzero(flat.argmax(axis=1) == targets))
            seen += len(targets)
            model.backward(loss_fn.backward().reshape(logits.shape), need_input_grad=False)
            if clip:
                clip_grad_norm(grads, clip)
            if run.weight_decay:
                add_l2_grad_(params, grads, run.weight_decay)
            optimizer.step(params, grads)
            step += 1
            if bar is not None:
                bar.update(1)
    finally:
        run.step = step
        reset_states(model)
        if bar is not None:
            bar.close()
    return loss_sum, correct, seen


def _run_epoch(run, epoch):
    config, splits = run.config, run.splits
    t0 = time.perf_counter()
    loss_sum, correct, seen = _train_windows(run, epoch)
    train_seconds = time.perf_counter() - t0
    val_loss, val_acc, _ = evaluate_stream(run.model, splits.val, config.eval_batch_size, config.seq_len)
    test_loss, test_acc, _ = evaluate_stream(run.model, splits.test, config.eval_batch_size, config.seq_len)
    train_loss = loss_sum / seen
    row = {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_accuracy": correct / seen,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "train_bpc": train_loss / LN2,
        "val_bpc": val_loss / LN2,
        "test_bpc": test_loss / LN2,
        "lr": run.optimizer.lr,
        "train_seconds": round(train_seconds, 4),
        "seconds": round(time.perf_counter() - t0, 4),
    }
    run.history.append(row)
    run.csv_log.log(row)
    run.stopper.step(row["val_bpc"], {}, epoch=epoch)
    improved = run.stopper.best_epoch == epoch
    if improved:
        _save(run, "best.npz", epoch, row)
    _save(run, "last.npz", epoch, row, resumable=True)
    run.say(
        f"epoch {epoch:>{len(str(config.epochs))}}/{config.epochs}  train {row['train_bpc']:.4f} bpc  "
        f"val {row['val_bpc']:.4f} bpc  test (monitor) {row['test_bpc']:.4f} bpc  lr {run.optimizer.lr:.3g}  "
        f"{train_seconds:.1f} s ({seen / train_seconds:,.0f} char/s){'  *' if improved else ''}"
    )
    return row


def train_text(config, resume_dir=None, *, on_epoch_end=None, stdout=None, started=None):
    """Train a character language model as ``config`` says (``config.trains_text``); a TrainResult whose
    ``test_loss`` is in nats per character and ``test_bits_per_char`` in bits."""
    from .training import TrainResult

    started = time.perf_counter() if started is None else started
    stream = stdout or sys.stdout
    if config.monitor:
        config.require_images("--monitor")
    if config.overfit is not None:
        config.require_images("--overfit")

    def log(msg=""):
        print(msg, file=stream, flush=True)

    def say(msg=""):
        if not config.quiet:
            log(msg)

    run = _prepare(config, resume_dir, log, say)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            for epoch in range(run.start_epoch + 1, config.epochs + 1):
                row = _run_epoch(run, epoch)
                if on_epoch_end is not None and on_epoch_end(epoch, row) is False:
                    run.stopped_early = epoch < config.epochs
                    break
                if run.stopper.stopped:
                    break
    finally:
        run.csv_log.close()
    restore_into(run.model, load_checkpoint(run.run_dir / "best.npz"))
    test_loss, test_acc, _ = evaluate_stream(
        run.model, run.splits.test, config.eval_batch_size, config.seq_len
    )
    if config.plots and run.history:
        from . import plots

        if plots.available():
            plots.plot_curves(
                run.history, run.run_dir / "curves.png", title=f"{describe(run.arch)} on {run.name}"
            )
    seconds = time.perf_counter() - started
    if run.stopped_early:
        run.say(
            f"stopped after epoch {len(run.history)}; continue with: handgrad train --resume {run.run_dir}"
        )
    run.log(
        f"best epoch {run.best_epoch}/{len(run.history)}: test {test_loss / LN2:.4f} bits per character "
        f"(val {run.best_val_bpc:.4f}), next-character accuracy {100 * test_acc:.2f}% on {run.name}; "
        f"{seconds:.1f} s; saved in {run.run_dir}"
    )
    return TrainResult(
        run_dir=str(run.run_dir),
        dataset=run.name,
        best_epoch=run.best_epoch,
        best_val_accuracy=float("nan"),
        test_accuracy=test_acc,
        test_loss=test_loss,
        test_macro_f1=float("nan"),
        epochs=len(run.history),
        seconds=seconds,
        history=run.history,
        stopped_early=run.stopped_early,
        stopped_by_patience=run.stopper.stopped,
        test_bits_per_char=test_loss / LN2,
    )


# ----------------------------------------------------------------------------------------------------
# Evaluation and sampling
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class TextEvalResult:
    """What ``handgrad evaluate`` measures for a language model; ``to_dict()`` is JSON-able."""

    checkpoint: str
    dataset: str
    split: str
    n: int  # characters scored
    loss: float  # nats per character
    bits_per_char: float
    accuracy: float  # next-character accuracy
    dropped: int  # held-out characters outside the vocabulary, left out

    def to_dict(self):
        return dataclasses.asdict(self)


def _language_model(checkpoint):
    model, ckpt = load_model(checkpoint)
    if input_kind(ckpt.metadata["arch"]) != "text" or not isinstance(ckpt.metadata.get("vocab"), str):
        raise CheckpointError(
            f"{ckpt.path} holds an image classifier ({describe(ckpt.metadata['arch'])}), not a "
            "language model; train one with handgrad train --model lstm --text FILE"
        )
    if len(ckpt.metadata["vocab"]) != ckpt.metadata["arch"]["vocab_size"]:
        raise CheckpointError(
            f"{ckpt.path}: its vocabulary of {len(ckpt.metadata['vocab'])} characters does not "
            f"match the model's {ckpt.metadata['arch']['vocab_size']} outputs"
        )
    return model, ckpt


def evaluate_text(checkpoint, text=None, dataset=None, data_dir=None, split="test"):
    """Bits per character of a language model on a split of its corpus (default: the one it was trained on,
    split as in training, with the checkpoint's vocabulary) or of ``text`` / ``dataset``."""
    from ..datasets import load_text

    model, ckpt = _language_model(checkpoint)
    meta, config = ckpt.metadata, ckpt.metadata.get("config", {})
    if text is None and dataset is None:
        text, dataset = meta.get("text"), None if meta.get("text") else meta.get("dataset")
    splits = (
        load_text(path=text, vocab=meta["vocab"])
        if text is not None
        else load_text(dataset=dataset, data_dir=data_dir, vocab=meta["vocab"])
    )
    if split not in ("test", "val", "train"):
        raise ValueError(f"split must be test, val or train, got {split!r}")
    loss, acc, n = evaluate_stream(
        model,
        getattr(splits, split),
        int(config.get("eval_batch_size") or 64),
        int(config.get("seq_len") or 100),
    )
    return TextEvalResult(
        checkpoint=str(ckpt.path),
        dataset=splits.name,
        split=split,
        n=n,
        loss=float(loss),
        bits_per_char=float(loss / LN2),
        accuracy=float(acc),
        dropped=splits.dropped,
    )


def format_text_report(r: TextEvalResult) -> str:
    dropped = f"; {r.dropped:,} outside the vocabulary left out" if r.dropped else ""
    return (
        f"{r.checkpoint} on {r.dataset} {r.split} ({r.n:,} characters scored{dropped})\n"
        f"{r.bits_per_char:.4f} bits per character   loss {r.loss:.4f} nats   "
        f"next-character accuracy {100 * r.accuracy:.2f}%"
    )


def sample_text(model, vocab, length, temperature=1.0, prime="\n", rng=None):
    """``prime`` followed by ``length`` characters generated by ``model``: each drawn from
    softmax(logits / temperature) by Gumbel-max (ch. 3 ``sample_categorical``), or the argmax at 0."""
    from ..datasets import encode

    ids = encode(prime, vocab, what="--prime")
    rng = rng if rng is not None else np.random.default_rng()
    was_training = model.training
    model.eval()
    reset_states(model)
    out = []
    try:
        logits = model.forward(ids[None, :])[0, -1]  # the prime read in one pass; the state is carried
        step = np.zeros((1, 1), np.int64)
        for _ in range(length):
            if temperature == 0:
                k = int(np.argmax(logits))
            else:
                k = sample_categorical(logits.astype(np.float64) / temperature, rng=rng)
            out.append(vocab[k])
            step[0, 0] = k
            logits = model.forward(step)[0, -1]
    finally:
        reset_states(model)
        model.train(was_training)
    return prime + "".join(out)


def sample(checkpoint, length=500, temperature=1.0, prime=None, seed=None):
    """``handgrad sample``: text from the language model in ``checkpoint`` (module docstring).

    ``prime`` defaults to a newline (the first character of the vocabulary when it has none). ConfigError
    for a negative length or temperature and for a prime with a character outside the vocabulary;
    CheckpointError for a checkpoint that is not a language model.
    """
    from ..datasets import DatasetError

    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ConfigError(f"--length must be a non-negative number of characters, got {length!r}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ConfigError(
            f"--temperature must be a number >= 0 (0: always the likeliest character), got {temperature!r}"
        )
    model, ckpt = _language_model(checkpoint)
    vocab = ckpt.metadata["vocab"]
    if prime is None:
        prime = "\n" if "\n" in vocab else vocab[0]
    if prime == "":
        raise ConfigError("--prime must hold at least one character")
    try:
        return sample_text(model, vocab, length, temperature, prime, np.random.default_rng(seed))
    except DatasetError as err:
        raise ConfigError(str(err)) from None
