"""Evaluation: loss, accuracy, macro-F1, per-class precision and recall and the confusion matrix.

``evaluate_arrays`` is what the training loop calls after every epoch (large batches, eval mode, no
gradient); ``evaluate`` is ``handgrad evaluate CHECKPOINT``: it rebuilds the model from the checkpoint, loads
the dataset it was trained on (or another one named) and reports on its test split.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from ..ch05_ml_basics import confusion_matrix, f1_score
from ..ch06_feedforward import cross_entropy_from_logits
from .models import eval_batch_size, prepare_inputs

__all__ = ["evaluate_arrays", "per_class_metrics", "EvalResult", "evaluate", "format_report"]

EVAL_BATCH_SIZE = 2000


def evaluate_arrays(model, X, y, batch_size=EVAL_BATCH_SIZE):
    """(mean cross-entropy loss, accuracy, predicted labels) of ``model`` on prepared inputs ``X``.

    Runs in eval mode (restoring the previous mode) in batches of ``batch_size``; the loss is the mean of
    eq. 18 over all examples, accumulated in float64.
    """
    n = len(X)
    if n == 0:
        return float("nan"), float("nan"), np.zeros(0, dtype=np.int64)
    was_training = model.training
    model.eval()
    preds = np.empty(n, dtype=np.int64)
    total = 0.0
    try:
        for start in range(0, n, batch_size):
            xb, yb = X[start:start + batch_size], y[start:start + batch_size]
            logits = model.forward(xb)
            total += cross_entropy_from_logits(logits, yb) * len(yb)
            preds[start:start + len(yb)] = logits.argmax(axis=1)
    finally:
        model.train(was_training)
    return total / n, float(np.mean(preds == y)), preds


def per_class_metrics(cm):
    """Per-class precision, recall and F1 from a confusion matrix (rows true, columns predicted).

    precision_k = C_kk / Σ_i C_ik,  recall_k = C_kk / Σ_j C_kj,  F1 = 2PR / (P + R); 0 where undefined.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1


@dataclasses.dataclass
class EvalResult:
    """What ``evaluate`` measured; ``to_dict()`` is JSON-able."""

    checkpoint: str
    dataset: str
    split: str
    n: int
    loss: float
    accuracy: float
    macro_f1: float
    classes: list
    precision: list
    recall: list
    f1: list
    confusion: list  # rows true class, columns predicted class
    plots: list = dataclasses.field(default_factory=list)

    def to_dict(self):
        return dataclasses.asdict(self)


def format_report(r: EvalResult) -> str:
    """The text ``handgrad evaluate`` prints (a language model's: ``language_model.format_text_report``)."""
    if not isinstance(r, EvalResult):
        from .language_model import format_text_report

        return format_text_report(r)
    lines = [f"{r.checkpoint} on {r.dataset} {r.split} ({r.n:,} images)",
             f"loss {r.loss:.4f}   accuracy {100 * r.accuracy:.2f}%   macro-F1 {r.macro_f1:.4f}", ""]
    width = max(5, *(len(c) for c in r.classes))
    lines.append(f"{'class':>{width}}  precision  recall     f1  support")
    for k, name in enumerate(r.classes):
        support = int(sum(r.confusion[k]))
        lines.append(f"{name:>{width}}  {r.precision[k]:9.4f}  {r.recall[k]:6.4f}  {r.f1[k]:.4f}  {support:7d}")
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted)")
    cw = max(len(str(max(max(row) for row in r.confusion))), 3)
    short = [c[:cw] for c in r.classes]
    lines.append(" " * (width + 1) + " ".join(f"{c:>{cw}}" for c in short))
    for name, row in zip(r.classes, r.confusion):
        lines.append(f"{name:>{width}} " + " ".join(f"{v:>{cw}d}" for v in row))
    for p in r.plots:
        lines.append(f"wrote {p}")
    return "\n".join(lines)


def evaluate(checkpoint, dataset=None, data_dir=None, plots_dir=None, split="test",
             batch_size=None, text=None) -> EvalResult:
    """Evaluate a checkpoint (file or run folder) on a dataset's test split (default: the one it was
    trained on). ``plots_dir`` also writes the confusion matrix and misclassified examples as PNG.
    ``batch_size`` defaults to the model type's (2,000 images for an MLP, 500 for a CNN).

    A character language model is evaluated in bits per character on its own corpus (or ``text``, a file,
    or the text ``dataset``), split as in training: a ``language_model.TextEvalResult``.

    Raises CheckpointError for an unusable checkpoint and DatasetError for a dataset that cannot be
    loaded or does not fit the model (another number of classes or example shape than the model's).
    """
    from ..datasets import DatasetError, load_splits
    from .checkpoint import load_model
    from .models import input_kind

    model, ckpt = load_model(checkpoint)
    arch = ckpt.metadata["arch"]
    if input_kind(arch) == "text":
        from .language_model import evaluate_text

        return evaluate_text(checkpoint, text=text, dataset=dataset, data_dir=data_dir, split=split)
    if text is not None:
        raise DatasetError(f"{ckpt.path} holds an image classifier; --text is for language models")
    name = dataset or ckpt.metadata.get("dataset") or "mnist"
    splits = load_splits(name, data_dir)
    trained_on = ckpt.metadata.get("dataset") or "its own dataset"
    if splits.n_classes != arch["n_classes"]:
        raise DatasetError(f"{name} has {splits.n_classes} classes but the model predicts "
                           f"{arch['n_classes']}; evaluate it on a dataset with as many classes "
                           f"(it was trained on {trained_on})")
    model_shape = tuple(arch["input_shape"])
    if tuple(splits.input_shape) != model_shape:
        raise DatasetError(f"{name} has examples of shape {tuple(splits.input_shape)} but the model takes "
                           f"{model_shape}; evaluate it on a dataset of that shape "
                           f"(it was trained on {trained_on})")
    if split not in ("test", "val", "train"):
        raise ValueError(f"split must be test, val or train, got {split!r}")
    X_img, y = getattr(splits, split)
    loss, acc, preds = evaluate_arrays(model, prepare_inputs(arch, X_img), y, batch_size or eval_batch_size(arch))
    n_classes = arch["n_classes"]
    cm = confusion_matrix(y, preds, n_classes)
    precision, recall, f1 = per_class_metrics(cm)
    result = EvalResult(
        checkpoint=str(ckpt.path), dataset=name, split=split, n=int(len(y)), loss=float(loss), accuracy=float(acc),
        macro_f1=float(f1_score(y, preds, average="macro", n_classes=n_classes)),
        classes=list(splits.classes), precision=precision.tolist(), recall=recall.tolist(), f1=f1.tolist(),
        confusion=cm.tolist())
    if plots_dir is not None:
        from . import plots

        out = pathlib.Path(plots_dir)
        out.mkdir(parents=True, exist_ok=True)
        title = f"{name} {split}: accuracy {100 * acc:.2f}%"
        result.plots = [str(p) for p in (
            plots.plot_confusion(cm, splits.classes, out / "confusion.png", title=title),
            plots.plot_misclassified(X_img, y, preds, splits.classes, out / "misclassified.png"),
        ) if p is not None]
    return result
