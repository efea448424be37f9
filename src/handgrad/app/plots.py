"""The run's figures as PNG files: learning curves, confusion matrix, misclassified digits, first-layer
weights.

Matplotlib is imported only here and only when a figure is drawn, through ``matplotlib.figure.Figure``
and the Agg renderer — no pyplot, no GUI backend, no global state — so the library stays light, plotting
works on a machine without a display, and it is safe from several threads. Without matplotlib each
function returns None (the training loop then prints a note) instead of failing a finished run.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

__all__ = ["available", "plot_curves", "plot_confusion", "plot_misclassified", "plot_first_layer"]


def _figure(width, height):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _save(fig, path):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_curves(history, path, title=None):
    """Loss (left) and accuracy (right) per epoch for train, validation and test."""
    fig = _figure(10, 4)
    if fig is None or not history:
        return None
    epochs = [h["epoch"] for h in history]
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split, style in (("train", "-o"), ("val", "-s"), ("test", "-^")):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], style, ms=3, label=split)
        ax_acc.plot(epochs, [100 * h[f"{split}_accuracy"] for h in history], style, ms=3, label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    best = max(history, key=lambda h: h["val_accuracy"])
    ax_acc.axvline(best["epoch"], color="grey", lw=0.8, ls="--", label=f"best val (epoch {best['epoch']})")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(cm, classes, path, title=None):
    """The confusion matrix (rows true, columns predicted) as a heat map with the counts written in."""
    fig = _figure(7, 6)
    if fig is None:
        return None
    cm = np.asarray(cm)
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax)
    k = len(classes)
    ax.set_xticks(range(k), labels=classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right" if max(map(len, classes)) > 2 else "center")
    ax.set_yticks(range(k), labels=classes)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > threshold else "black")
    fig.tight_layout()
    return _save(fig, path)


def plot_misclassified(images, y_true, y_pred, classes, path, max_images=36):
    """A grid of the first misclassified images with 'predicted (true)' above each."""
    fig = _figure(8, 8.6)
    if fig is None:
        return None
    wrong = np.flatnonzero(np.asarray(y_pred) != np.asarray(y_true))[:max_images]
    cols = 6
    rows = max(1, math.ceil(len(wrong) / cols))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, wrong):
        ax.imshow(np.asarray(images[i]).reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{classes[y_pred[i]]} ({classes[y_true[i]]})", fontsize=8, color="crimson")
    total = int(np.sum(np.asarray(y_pred) != np.asarray(y_true)))
    fig.suptitle(f"misclassified: predicted (true) — first {len(wrong)} of {total}")
    fig.tight_layout()
    return _save(fig, path)


def plot_first_layer(W, path, input_shape=(28, 28), max_units=64):
    """The first layer's weights as images: the columns of an MLP's W (784, H) as 28×28 pictures, or a
    convolution's filters W (out, in, kh, kw) (first input channel)."""
    fig = _figure(8, 8.4)
    if fig is None or W is None:
        return None
    W = np.asarray(W, dtype=np.float64)
    if W.ndim == 2 and W.shape[0] == math.prod(input_shape):
        tiles = W.T[:max_units].reshape(-1, *input_shape)
    elif W.ndim == 4:
        tiles = W[:max_units, 0]
    else:
        return None
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, tile in zip(axes, tiles):
        lim = np.abs(tile).max() or 1.0
        ax.imshow(tile, cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.suptitle(f"first-layer weights ({len(tiles)} of {W.shape[-1] if W.ndim == 2 else W.shape[0]} units; red +, blue −)")
    fig.tight_layout()
    return _save(fig, path)
