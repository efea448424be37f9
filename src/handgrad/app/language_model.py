"""Character-level language models: their data in the training loop, evaluation in bits per character,
sampling.

``handgrad train --model lstm --text FILE`` (or ``--dataset fortunes``) runs :mod:`handgrad.app.training`'s
loop with a ``TextData`` as the run's data. The corpus is split contiguously (90 / 5 / 5%,
:mod:`handgrad.datasets.text`), the vocabulary is the training part's characters, and each part is laid out
as B parallel streams (the *stream layout*)::

    ids c_0 c_1 … c_{L−1}  ->  X (B, n) = ids[:B·n].reshape(B, n),  Y = ids[1:B·n + 1].reshape(B, n)

so that row i of X holds a contiguous piece of the text and Y is X shifted by one character: the target
of every position is the next character. An epoch runs over the windows X[:, s:s+T], s = 0, T, 2T, …
(T = ``seq_len``) in order. The recurrent layers are stateful (:mod:`handgrad.app.models.char_lm`):
the state of window k starts window k + 1 of the same rows, and the gradient stops at the window's
start — truncated back-propagation through time (§10.2.2). The state is reset at each epoch's start.
``--limit N`` (and ``--overfit N``) train on the first N characters of the training part only.

The loss is the mean cross-entropy per character (nats); reported as **bits per character**,
bpc = loss / ln 2, for training (the epoch's mean), validation and test (the whole held-out stream in
B_eval streams, state carried across windows). The epoch with the lowest validation bpc is kept
(``best.npz``; its metadata's ``best_val_bpc``). ``metrics.csv`` has the image loop's columns,
``*_accuracy`` being next-character accuracy, plus ``train_bpc``, ``val_bpc`` and ``test_bpc``. Checkpoints
hold the vocabulary (``metadata["vocab"]``) and where the text came from, so ``evaluate`` and ``sample`` need
nothing else, and a resumed run repeats an uninterrupted one bit for bit (the order of the windows is
fixed, the optimiser's and the generator's states are saved).

``sample(checkpoint, length, temperature, prime, seed)`` generates text one character at a time, each
drawn from softmax(logits / temperature) by chapter 3's Gumbel-max sampler (temperature 0: the argmax).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..ch03_probability import sample_categorical
from ..ch06_feedforward import cross_entropy_from_logits
from .checkpoint import CheckpointError, check_saved_steps, load_model
from .config import ConfigError
from .models import char_arch, describe, input_kind, reset_states

__all__ = [
    "TextData",
    "load_corpus",
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
# Training: the data of a language-model run (training.RunState.data)
# ----------------------------------------------------------------------------------------------------


def load_corpus(config):
    """The ``TextSplits`` (:mod:`handgrad.datasets.text`) of the file ``config.text`` or the corpus
    ``config.dataset``."""
    from ..datasets import load_text

    if config.text is not None:
        return load_text(path=config.text)
    return load_text(dataset=config.dataset, data_dir=config.data_dir)


def training_ids(config, splits):
    """The training characters a run reads: the training part, or its first ``overfit`` / ``limit``
    characters. ConfigError when they do not fill one batch of ``batch_size`` streams × ``seq_len``."""
    n = config.overfit if config.overfit is not None else config.limit
    ids = splits.train if n is None else splits.train[:n]
    B, T = config.batch_size, config.seq_len
    if len(ids) < B * T + 1:
        flag = "--overfit" if config.overfit is not None else "--limit"
        what = (
            f"its training part ({len(ids):,} characters) is"
            if len(ids) == len(splits.train)
            else f"the first {len(ids):,} characters of its training part ({flag} {n}) are"
        )
        raise ConfigError(
            f"{splits.name}: {what} too short for one batch of {B} sequences of {T} characters "
            f"(needs {B * T + 1:,}); use a longer text or a smaller --batch-size or --seq-len"
        )
    return ids


@dataclasses.dataclass
class TextData:
    """A character language model's data in a run (``training.RunState.data``, the counterpart of
    ``training.ImageData``): the corpus, the training characters laid out as ``batch_size`` streams (module
    docstring), their windows in order for training, bits per character for the evaluation; the epoch
    with the lowest validation bpc is the best."""

    splits: object  # TextSplits
    train: np.ndarray  # the training characters read: all, or the first --limit / --overfit N
    X: np.ndarray  # (B, n): the stream layout of ``train``
    Y: np.ndarray
    text: str | None  # the file, or None for a registered corpus

    unit = "char"  # what the per-epoch line counts per second
    mode, worst = "min", math.inf  # the best epoch has the lowest validation bits per character
    best_key = "best_val_bpc"  # the checkpoint's metadata key of the best epoch's metric
    chosen_by = "validation bits per character"
    diverged_hint = " or --clip-grad-norm"
    fell_back = False

    @classmethod
    def load(cls, config, log):
        """(the data, the architecture its vocabulary gives)."""
        splits = load_corpus(config)
        ids = training_ids(config, splits)
        arch = char_arch(config.model, len(splits.vocab), config.embedding_dim, config.hidden)
        X, Y = stream_layout(ids, config.batch_size)
        return cls(splits, ids, X, Y, config.text), arch

    @property
    def name(self) -> str:
        return self.splits.name

    def steps(self, config) -> int:
        return math.ceil(self.X.shape[1] / config.seq_len)

    def saved_config(self) -> dict:
        return {}

    def meta(self, config) -> dict:
        vocab = self.splits.vocab
        return {"text": self.text, "vocab": vocab, "classes": list(vocab)}

    def train_batches(self, run):
        """The windows X[:, s:s+T] in order: the state of one starts the next (truncated back-propagation
        through time, §10.2.2), reset at the epoch's start and when the epoch ends or stops."""
        reset_states(run.model)
        try:
            yield from _windows(self.X, self.Y, run.config.seq_len)
        finally:
            reset_states(run.model)

    def evaluate(self, run, split):
        """(loss in nats per character, next-character accuracy) on "val" or "test" (``evaluate_stream``)."""
        ids = self.splits.val if split == "val" else self.splits.test
        loss, acc, _ = evaluate_stream(run.model, ids, run.config.eval_batch_size, run.config.seq_len)
        return loss, acc

    def select(self, val_loss, val_acc) -> float:
        return val_loss / LN2

    def derived(self, train_loss, val_loss, test_loss) -> dict:
        return {"train_bpc": train_loss / LN2, "val_bpc": val_loss / LN2, "test_bpc": test_loss / LN2}

    def fit(self, run) -> dict:
        """The overfitting check's columns: next-character accuracy and bpc on the training characters, read
        as training reads them (``batch_size`` streams, windows of ``seq_len``, the state carried), eval
        mode."""
        loss, acc, _ = evaluate_stream(run.model, self.train, run.config.batch_size, run.config.seq_len)
        return {"overfit_accuracy": acc, "overfit_bpc": loss / LN2}

    def monitor_batch(self, run, n):
        """The monitor's fixed validation batch: the first window of the validation text as evaluation
        reads it (min(eval_batch_size, len − 1) streams, ``seq_len`` characters); ``n`` is not used."""
        streams = max(1, min(run.config.eval_batch_size, len(self.splits.val) - 1))
        return stream_layout(self.splits.val, streams)[0][:, : run.config.seq_len]

    def check_resume(self, run, meta):
        """CheckpointError unless ``last.npz``'s metadata fits this text and architecture."""
        if meta.get("arch") != run.arch or meta.get("vocab") != self.splits.vocab:
            raise CheckpointError(
                f"{run.run_dir / 'last.npz'} holds another architecture or vocabulary than "
                f"{self.name} gives; was the text changed?"
            )
        data = f"{len(self.train):,} training characters in {run.config.batch_size} streams"
        check_saved_steps(run.run_dir, meta, run.steps_per_epoch, f"{data}; was the text changed?")

    def describe(self, run) -> str:
        config, splits = run.config, self.splits
        dropped = f" ({splits.dropped:,} held out outside the vocabulary, left out)" if splits.dropped else ""
        return (
            f"{describe(run.arch)} on {self.name}: {len(self.train):,} train / {len(splits.val):,} val / "
            f"{len(splits.test):,} test characters{dropped}, {config.batch_size} streams × {config.seq_len} "
            f"characters, {config.optimizer} lr {config.lr:g}, {config.schedule} schedule"
            + (f", gradient norm clipped at {config.clip_grad_norm:g}" if config.clip_grad_norm else "")
            + f", {config.epochs} epochs -> {run.run_dir}"
        )

    def epoch_line(self, run, epoch, row, seen, improved) -> str:
        config, secs = run.config, row["train_seconds"]
        return (
            f"epoch {epoch:>{len(str(config.epochs))}}/{config.epochs}  train {row['train_bpc']:.4f} bpc  "
            f"val {row['val_bpc']:.4f} bpc  test (monitor) {row['test_bpc']:.4f} bpc  "
            f"lr {run.optimizer.lr:.3g}  {secs:.1f} s ({seen / secs:,.0f} char/s){'  *' if improved else ''}"
        )

    def final(self, run) -> dict:
        """The TrainResult fields of the best parameters (in the model): the test loss (nats per character),
        bits per character and next-character accuracy; the learning curves drawn."""
        config = run.config
        test_loss, test_acc, _ = evaluate_stream(
            run.model, self.splits.test, config.eval_batch_size, config.seq_len
        )
        if config.plots and run.history:
            from . import plots

            if plots.available():
                title = f"{describe(run.arch)} on {self.name}"
                plots.plot_curves(run.history, run.run_dir / "curves.png", title=title)
        return {
            "best_val_accuracy": float("nan"),
            "test_accuracy": test_acc,
            "test_loss": test_loss,
            "test_macro_f1": float("nan"),
            "test_bits_per_char": test_loss / LN2,
            "best_val_bits_per_char": run.best_val,
        }

    def summary(self, run, fields, seconds) -> str:
        return (
            f"best epoch {run.best_epoch}/{len(run.history)}: test {fields['test_bits_per_char']:.4f} "
            f"bits per character (val {run.best_val:.4f}), next-character accuracy "
            f"{100 * fields['test_accuracy']:.2f}% on {self.name}; {seconds:.1f} s; saved in {run.run_dir}"
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
