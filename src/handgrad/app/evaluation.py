"""Evaluation: loss, accuracy, macro-F1, per-class precision and recall and the confusion matrix.

``evaluate_arrays`` is what the training loop calls after every epoch (large batches, eval mode, no
gradient); ``evaluate`` is ``handgrad evaluate CHECKPOINT``: it rebuilds the model from the checkpoint, loads
the dataset it was trained on (or another one named) and reports on its test split.

Coverage (book §11.1): a model that may abstain answers only when its confidence — the largest softmax
probability — reaches a threshold t; its *coverage* is the fraction of examples it answers, and its accuracy
is measured on those. Lowering t trades accuracy for coverage (at t = 0 it answers everything, with the
plain accuracy). ``evaluate`` reports the largest coverage at which the answered examples are 99% and 99.5%
right (the book's Street View example asks for human-level 98% at 95% coverage), the threshold that gives
it, and draws accuracy against coverage. ``worst_mistakes`` lists the wrong answers given with the highest
confidence, the examples §11.5 suggests looking at first ("visualise the worst mistakes").
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from ..ch05_ml_basics import confusion_matrix, f1_score
from ..ch06_feedforward import cross_entropy_from_logits
from .models import eval_batch_size, prepare_inputs

__all__ = [
    "evaluate_arrays",
    "scores_arrays",
    "per_class_metrics",
    "coverage_curve",
    "coverage_at_threshold",
    "coverage_at_accuracy",
    "worst_mistakes",
    "COVERAGE_TARGETS",
    "EvalResult",
    "evaluate",
    "format_report",
]

EVAL_BATCH_SIZE = 2000
COVERAGE_TARGETS = (0.99, 0.995)  # the accuracies at which evaluate reports the coverage


def evaluate_arrays(model, X, y, batch_size=EVAL_BATCH_SIZE):
    """(mean cross-entropy loss, accuracy, predicted labels) of ``model`` on prepared inputs ``X``.

    Runs in eval mode (restoring the previous mode) in batches of ``batch_size``; the loss is the mean of
    eq. 18 over all examples, accumulated in float64.
    """
    n = len(X)
    if n == 0:
        return float("nan"), float("nan"), np.zeros(0, dtype=np.int64)
    loss, preds, _ = scores_arrays(model, X, y, batch_size)
    return loss, float(np.mean(preds == y)), preds


def scores_arrays(model, X, y, batch_size=EVAL_BATCH_SIZE):
    """(mean cross-entropy loss, predicted labels, confidences) of ``model`` on prepared inputs ``X``: as
    ``evaluate_arrays``, with each prediction's confidence max_k softmax(z)_k = 1 / Σ_k exp(z_k − max z)."""
    n = len(X)
    preds, confidence = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float64)
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for start in range(0, n, batch_size):
            xb, yb = X[start : start + batch_size], y[start : start + batch_size]
            logits = model.forward(xb)
            total += cross_entropy_from_logits(logits, yb) * len(yb)
            z = logits.astype(np.float64)
            z -= z.max(axis=1, keepdims=True)
            preds[start : start + len(yb)] = logits.argmax(axis=1)
            confidence[start : start + len(yb)] = 1.0 / np.exp(z).sum(axis=1)
    finally:
        model.train(was_training)
    return (total / n if n else float("nan")), preds, confidence


def coverage_curve(confidence, correct):
    """(thresholds, coverage, accuracy) at each distinct confidence, highest first (§11.1).

    With threshold t the model answers the examples of confidence ≥ t (ties are answered together):
    coverage(t) = #{i : c_i ≥ t} / n and accuracy(t) = #{i : c_i ≥ t, correct_i} / #{i : c_i ≥ t}.
    The last point is the lowest confidence: coverage 1 and the plain accuracy.
    """
    c = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    if c.shape != ok.shape or c.ndim != 1:
        raise ValueError(
            f"confidence and correct must be vectors of one length, got {c.shape} and {ok.shape}"
        )
    if len(c) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = np.argsort(-c, kind="stable")
    c, ok = c[order], ok[order]
    answered = np.arange(1, len(c) + 1)
    right = np.cumsum(ok)
    last_of_tie = np.flatnonzero(np.append(c[1:] != c[:-1], True))  # where the next confidence is lower
    return c[last_of_tie], answered[last_of_tie] / len(c), right[last_of_tie] / answered[last_of_tie]


def coverage_at_threshold(confidence, correct, threshold):
    """(coverage, accuracy on the answered examples) when answering where confidence ≥ ``threshold``."""
    c, ok = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool)
    answered = c >= threshold
    n = int(np.count_nonzero(answered))
    return n / max(len(c), 1), (float(np.mean(ok[answered])) if n else float("nan"))


def coverage_at_accuracy(confidence, correct, target):
    """(largest coverage, its threshold) at which the answered examples are at least ``target`` right;
    (0.0, None) when even the most confident examples alone fall short (§11.1)."""
    thresholds, coverage, accuracy = coverage_curve(confidence, correct)
    meets = np.flatnonzero(accuracy >= target - 1e-12)
    if len(meets) == 0:
        return 0.0, None
    k = meets[-1]  # coverage grows along the curve
    return float(coverage[k]), float(thresholds[k])


def worst_mistakes(confidence, y_true, y_pred, k):
    """The ``k`` wrong predictions of highest confidence, most confident first: dicts of index, true,
    predicted and confidence (§11.5: the examples the model is most sure about and wrong on)."""
    c, y_true, y_pred = np.asarray(confidence), np.asarray(y_true), np.asarray(y_pred)
    wrong = np.flatnonzero(y_true != y_pred)
    top = wrong[np.argsort(-c[wrong], kind="stable")[:k]]
    return [
        {"index": int(i), "true": int(y_true[i]), "predicted": int(y_pred[i]), "confidence": float(c[i])}
        for i in top
    ]


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
    coverage: list = dataclasses.field(default_factory=list)  # dicts: accuracy, coverage, threshold (§11.1)
    worst: list = dataclasses.field(default_factory=list)  # worst_mistakes' dicts, with class names

    def to_dict(self):
        return dataclasses.asdict(self)


def format_report(r: EvalResult) -> str:
    """The text ``handgrad evaluate`` prints (a language model's: ``language_model.format_text_report``)."""
    if not isinstance(r, EvalResult):
        from .language_model import format_text_report

        return format_text_report(r)
    lines = [
        f"{r.checkpoint} on {r.dataset} {r.split} ({r.n:,} images)",
        f"loss {r.loss:.4f}   accuracy {100 * r.accuracy:.2f}%   macro-F1 {r.macro_f1:.4f}",
    ]
    for c in r.coverage:
        target = f"{100 * c['accuracy']:g}%"
        if c["threshold"] is None:
            lines.append(
                f"coverage at {target} accuracy: 0% (even the most confident answers are less accurate)"
            )
        else:
            lines.append(
                f"coverage at {target} accuracy: {100 * c['coverage']:.2f}% of the images answered "
                f"(abstaining below confidence {c['threshold']:.4f})"
            )
    lines.append("")
    width = max(5, *(len(c) for c in r.classes))
    lines.append(f"{'class':>{width}}  precision  recall     f1  support")
    for k, name in enumerate(r.classes):
        support = int(sum(r.confusion[k]))
        lines.append(
            f"{name:>{width}}  {r.precision[k]:9.4f}  {r.recall[k]:6.4f}  {r.f1[k]:.4f}  {support:7d}"
        )
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted)")
    cw = max(len(str(max(max(row) for row in r.confusion))), 3)
    short = [c[:cw] for c in r.classes]
    lines.append(" " * (width + 1) + " ".join(f"{c:>{cw}}" for c in short))
    for name, row in zip(r.classes, r.confusion):
        lines.append(f"{name:>{width}} " + " ".join(f"{v:>{cw}d}" for v in row))
    if r.worst:
        lines += ["", f"the {len(r.worst)} most confident mistakes"]
        cw = max(9, *(len(w["true_class"]) for w in r.worst), *(len(w["predicted_class"]) for w in r.worst))
        lines.append(f"{'index':>7}  {'true':>{cw}}  {'predicted':>{cw}}  confidence")
        for w in r.worst:
            lines.append(
                f"{w['index']:>7}  {w['true_class']:>{cw}}  {w['predicted_class']:>{cw}}  "
                f"{100 * w['confidence']:9.2f}%"
            )
    for p in r.plots:
        lines.append(f"wrote {p}")
    return "\n".join(lines)


def evaluate(
    checkpoint, dataset=None, data_dir=None, plots_dir=None, split="test", batch_size=None, worst=0, text=None
) -> EvalResult:
    """Evaluate a checkpoint (file or run folder) on a dataset's test split (default: the one it was
    trained on), with the coverage at ``COVERAGE_TARGETS`` and the ``worst`` most confident mistakes.
    ``plots_dir`` also writes the confusion matrix, misclassified examples, accuracy against coverage
    (coverage.png) and, with ``worst``, the worst mistakes (worst.png) as PNG.
    ``batch_size`` defaults to the model type's (2,000 images for an MLP, 500 for a CNN).

    A character language model is evaluated in bits per character on its own corpus (or ``text``, a file,
    or the text ``dataset``), split as in training: a ``language_model.TextEvalResult``.

    Raises CheckpointError for an unusable checkpoint and DatasetError for a dataset that cannot be
    loaded or does not fit the model (another number of classes or example shape than the model's).
    """
    from ..datasets import DatasetError
    from .checkpoint import load_model
    from .config import ConfigError
    from .models import input_kind

    if isinstance(worst, bool) or not isinstance(worst, int) or worst < 0:
        raise ConfigError(f"worst must be a number of examples (0 or more), got {worst!r}")
    model, ckpt = load_model(checkpoint)
    arch = ckpt.metadata["arch"]
    if input_kind(arch) == "text":
        from .language_model import evaluate_text

        return evaluate_text(checkpoint, text=text, dataset=dataset, data_dir=data_dir, split=split)
    if text is not None:
        raise DatasetError(f"{ckpt.path} holds an image classifier; --text is for language models")
    name = dataset or ckpt.metadata.get("dataset") or "mnist"
    splits = _matching_splits(name, data_dir, arch, ckpt.metadata.get("dataset") or "its own dataset")
    if split not in ("test", "val", "train"):
        raise ValueError(f"split must be test, val or train, got {split!r}")
    X_img, y = getattr(splits, split)
    loss, preds, confidence = scores_arrays(
        model, prepare_inputs(arch, X_img), y, batch_size or eval_batch_size(arch)
    )
    result = _metrics(str(ckpt.path), name, split, splits.classes, y, preds, confidence, loss, worst)
    if plots_dir is not None:
        result.plots = _draw(pathlib.Path(plots_dir), result, X_img, y, preds, confidence)
    return result


def _matching_splits(name, data_dir, arch, trained_on):
    """The dataset ``name``'s splits; DatasetError when its classes or example shape are not the model's."""
    from ..datasets import DatasetError, load_splits

    splits = load_splits(name, data_dir)
    if splits.n_classes != arch["n_classes"]:
        raise DatasetError(
            f"{name} has {splits.n_classes} classes but the model predicts "
            f"{arch['n_classes']}; evaluate it on a dataset with as many classes "
            f"(it was trained on {trained_on})"
        )
    model_shape = tuple(arch["input_shape"])
    if tuple(splits.input_shape) != model_shape:
        raise DatasetError(
            f"{name} has examples of shape {tuple(splits.input_shape)} but the model takes "
            f"{model_shape}; evaluate it on a dataset of that shape "
            f"(it was trained on {trained_on})"
        )
    return splits


def _metrics(checkpoint, name, split, classes, y, preds, confidence, loss, worst) -> EvalResult:
    """The EvalResult of predictions ``preds`` with their ``confidence`` on labels ``y``."""
    acc = float(np.mean(preds == y)) if len(y) else float("nan")
    correct = preds == y
    coverage = []
    for target in COVERAGE_TARGETS:
        cov, threshold = coverage_at_accuracy(confidence, correct, target)
        coverage.append({"accuracy": target, "coverage": cov, "threshold": threshold})
    mistakes = worst_mistakes(confidence, y, preds, worst)
    for w in mistakes:
        w.update(true_class=str(classes[w["true"]]), predicted_class=str(classes[w["predicted"]]))
    n_classes = len(classes)
    cm = confusion_matrix(y, preds, n_classes)
    precision, recall, f1 = per_class_metrics(cm)
    return EvalResult(
        checkpoint=checkpoint,
        dataset=name,
        split=split,
        n=len(y),
        loss=float(loss),
        accuracy=float(acc),
        macro_f1=float(f1_score(y, preds, average="macro", n_classes=n_classes)),
        classes=list(classes),
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        confusion=cm.tolist(),
        coverage=coverage,
        worst=mistakes,
    )


def _draw(out, result, X_img, y, preds, confidence):
    """The evaluation's PNG files in ``out``: confusion matrix, misclassified examples, accuracy against
    coverage and, when asked for, the worst mistakes; their paths."""
    from . import plots

    out.mkdir(parents=True, exist_ok=True)
    name, split, classes = result.dataset, result.split, result.classes
    cm = np.asarray(result.confusion)
    title = f"{name} {split}: accuracy {100 * result.accuracy:.2f}%"
    _, cov_curve, acc_curve = coverage_curve(confidence, preds == y)
    drawn = [
        plots.plot_confusion(cm, classes, out / "confusion.png", title=title),
        plots.plot_misclassified(X_img, y, preds, classes, out / "misclassified.png"),
        plots.plot_coverage(
            cov_curve,
            acc_curve,
            result.coverage,
            out / "coverage.png",
            title=f"{name} {split}: accuracy against coverage",
        ),
    ]
    if result.worst:
        drawn.append(plots.plot_worst(X_img, result.worst, out / "worst.png"))
    return [str(p) for p in drawn if p is not None]
