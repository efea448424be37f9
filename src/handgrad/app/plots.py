"""The run's figures as PNG files: learning curves, confusion matrix, misclassified examples, first-layer
weights. Images of any shape are drawn: (H, W) in grey, (C, H, W) with three channels in colour.

Matplotlib is imported only here and only when a figure is drawn, through ``matplotlib.figure.Figure``
and the Agg renderer — no pyplot, no GUI backend, no global state — so the library stays light, plotting
works on a machine without a display, and it is safe from several threads. Without matplotlib each
function returns None (the training loop then prints a note) instead of failing a finished run.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

__all__ = [
    "available",
    "plot_curves",
    "plot_confusion",
    "plot_misclassified",
    "plot_first_layer",
    "plot_monitor",
    "plot_coverage",
    "plot_worst",
]


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
    ax.set_xticks(
        range(k),
        labels=classes,
        rotation=45 if max(map(len, classes)) > 2 else 0,
        ha="right" if max(map(len, classes)) > 2 else "center",
    )
    ax.set_yticks(range(k), labels=classes)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if cm[i, j] > threshold else "black",
            )
    fig.tight_layout()
    return _save(fig, path)


def _mosaic(tiles, cols, pad=2, fill=0.0):
    """Tiles (n, h, w) or RGB tiles (n, h, w, 3) laid out in one image, ``cols`` per row, separated by
    ``pad`` pixels of ``fill``."""
    n, h, w = tiles.shape[:3]
    rows = max(1, math.ceil(n / cols))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, *tiles.shape[3:]), fill, dtype=np.float64)
    for k in range(n):
        r, c = divmod(k, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = (
            tiles[k]
        )
    return out, rows


def _pictures(X, input_shape):
    """Examples (n, *input_shape) as pictures: (n, H, W) grey for (H, W) or one channel, (n, H, W, 3) RGB
    for three channels (channels first in the data, last for drawing); of other channel counts the first."""
    shape = tuple(input_shape)
    X = np.asarray(X, dtype=np.float64).reshape(len(X), *shape)
    if len(shape) == 2:
        return X
    if shape[0] == 3:
        return X.transpose(0, 2, 3, 1)
    return X[:, 0]


def plot_misclassified(images, y_true, y_pred, classes, path, max_images=36, cols=6):
    """A grid of the first misclassified images, each titled 'predicted (true)'.

    ``images`` are (n, H, W) grayscale or (n, C, H, W) channels first (3 channels drawn as RGB), in
    [0, 1]. Drawn as one image with text labels (one axes, not one per image), which keeps it fast.
    """
    images = np.asarray(images)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    wrong = np.flatnonzero(y_pred != y_true)
    shown = wrong[:max_images]
    rows = max(1, math.ceil(len(shown) / cols))
    fig = _figure(1.3 * cols, 1.45 * rows + 0.6)
    if fig is None:
        return None
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98 - 0.5 / fig.get_figheight()))
    ax.axis("off")
    tiles = np.clip(_pictures(images[shown], images.shape[1:]), 0.0, 1.0)
    h, w = tiles.shape[1:3]
    label_h, pad = max(5, round(h / 3)), 2  # pixels of room above each image for its label
    extra = ((0, 0),) * (tiles.ndim - 3)
    mosaic, _ = _mosaic(np.pad(tiles, ((0, 0), (label_h, 0), (0, 0), *extra)), cols, pad=pad, fill=1.0)
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for k, i in enumerate(shown):
        r, c = divmod(k, cols)
        text = f"{classes[y_pred[i]]} ({classes[y_true[i]]})"
        ax.text(
            pad + c * (w + pad) + w / 2,
            pad + r * (h + label_h + pad) + label_h / 2,
            text,
            ha="center",
            va="center",
            fontsize=min(8.0, 8.0 * 16 / len(text)),
            color="crimson",
        )  # long names: smaller
    fig.suptitle(f"misclassified: predicted (true), first {len(shown)} of {len(wrong)}", fontsize=10)
    return _save(fig, path)


def plot_first_layer(W, path, input_shape, max_units=64):
    """The first layer's weights as images: the columns of an MLP's W (D, H), D = the size of
    ``input_shape``, as pictures of that shape, or a convolution's filters W (out, in, kh, kw).

    Each tile is scaled to its own largest |w|. Grayscale inputs (and a convolution's first input channel
    when it has other than 3): red positive, blue negative. Colour inputs (3 channels) are drawn as RGB
    with mid-grey at zero, each channel brighter where its weight is positive and darker where negative."""
    if W is None:
        return None
    W = np.asarray(W, dtype=np.float64)
    shape = tuple(input_shape)
    if W.ndim == 2 and W.shape[0] == math.prod(shape):
        tiles, total, what = _pictures(W.T[:max_units], shape), W.shape[1], "units"
    elif W.ndim == 4:
        filters = W[:max_units]
        tiles = filters.transpose(0, 2, 3, 1) if W.shape[1] == 3 else filters[:, 0]
        total, what = W.shape[0], f"{W.shape[2]}×{W.shape[3]} convolution filters"
    else:
        return None
    fig = _figure(7, 7.4)
    if fig is None:
        return None
    scale = np.abs(tiles).reshape(len(tiles), -1).max(axis=1)
    tiles = tiles / np.where(scale > 0, scale, 1.0).reshape(-1, *([1] * (tiles.ndim - 1)))
    colour = tiles.ndim == 4
    cols = math.ceil(math.sqrt(len(tiles)))
    if colour:
        mosaic, _ = _mosaic(0.5 + 0.5 * tiles, cols, pad=1, fill=1.0)
    else:
        mosaic, _ = _mosaic(tiles, cols, pad=1, fill=0.0)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.92))
    ax.axis("off")
    ax.imshow(mosaic, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    key = "RGB, grey = 0" if colour else "red +, blue −"
    fig.suptitle(f"first-layer weights: {len(tiles)} of {total} {what} ({key})", fontsize=10)
    return _save(fig, path)


def plot_monitor(rows, path, title=None, healthy=1e-2):
    """The training monitor (``handgrad train --monitor``, §11.5) per layer against the epoch: activation
    standard deviation, dead ReLU units, gradient norm and update ratio ‖Δθ‖/‖θ‖ (log scale, with the
    healthy ~1e-2 per step and the warning bounds ×10 and ÷100 marked). ``rows``: ``read_monitor``'s."""
    fig = _figure(11, 7.5)
    if fig is None or not rows:
        return None
    axes = fig.subplots(2, 2).ravel()
    panels = (
        ("act_std", "activation std (validation batch)", False),
        ("dead_fraction", "dead units (fraction)", False),
        ("grad_norm", "gradient norm ‖g‖ (mean per step)", True),
        ("update_ratio", "update ratio ‖Δθ‖/‖θ‖ (mean per step)", True),
    )
    layers = sorted({(r["layer"], r["kind"]) for r in rows})
    for ax, (key, label, log) in zip(axes, panels):
        for layer, kind in layers:
            pts = [(r["epoch"], r[key]) for r in rows if r["layer"] == layer and r[key] is not None]
            if key == "act_std" and kind not in ("Linear", "Conv2D", "ReLU", "LeakyReLU", "Tanh", "Sigmoid"):
                continue
            if pts:
                ax.plot(*zip(*pts), "-o", ms=3, label=f"{layer} {kind}")
        if key == "update_ratio":
            ax.axhline(healthy, color="green", lw=1, ls="--", label=f"healthy ~{healthy:g}")
            for bound in (10 * healthy, healthy / 100):
                ax.axhline(bound, color="crimson", lw=0.8, ls=":")
        if log and ax.lines:
            ax.set_yscale("log")
        ax.set(xlabel="epoch", title=label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_coverage(coverage, accuracy, marks, path, title=None):
    """Accuracy of the answered examples against coverage (§11.1), the targets of ``marks`` (dicts of
    accuracy, coverage, threshold, as ``evaluate`` reports them) drawn as dashed lines and dots."""
    fig = _figure(6.5, 4.5)
    if fig is None or len(coverage) == 0:
        return None
    ax = fig.subplots()
    ax.plot(100 * np.asarray(coverage), 100 * np.asarray(accuracy), "-", lw=1.5, label="answer if confident")
    for m in marks:
        ax.axhline(100 * m["accuracy"], color="grey", lw=0.8, ls="--")
        if m["threshold"] is not None:
            ax.plot(
                100 * m["coverage"],
                100 * m["accuracy"],
                "o",
                ms=5,
                label=f"{100 * m['accuracy']:g}%: coverage {100 * m['coverage']:.1f}% "
                f"(confidence ≥ {m['threshold']:.3f})",
            )
    ax.set(
        xlabel="coverage (% of examples answered)",
        ylabel="accuracy on the answered (%)",
        xlim=(0, 100.5),
        title=title or "accuracy against coverage",
    )
    low = min(100 * float(np.min(accuracy)), 100 * min((m["accuracy"] for m in marks), default=1.0))
    ax.set_ylim(max(0.0, low - 0.5), 100.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def plot_worst(images, mistakes, path, cols=6):
    """The most confident mistakes (``worst_mistakes``' dicts with class names), each titled
    'predicted confidence% (true)' and its index, most confident first (§11.5)."""
    images = np.asarray(images)
    if not mistakes:
        return None
    rows = max(1, math.ceil(len(mistakes) / cols))
    fig = _figure(1.5 * cols, 1.7 * rows + 0.6)
    if fig is None:
        return None
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    tiles = np.clip(_pictures(images[[m["index"] for m in mistakes]], images.shape[1:]), 0.0, 1.0)
    for ax in axes:
        ax.axis("off")
    for ax, tile, m in zip(axes, tiles, mistakes):
        ax.imshow(tile, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        title = f"{m['predicted_class']} {100 * m['confidence']:.1f}% ({m['true_class']})\n#{m['index']}"
        ax.set_title(title, fontsize=7, color="crimson")
    fig.suptitle("most confident mistakes: predicted confidence (true), test index", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
