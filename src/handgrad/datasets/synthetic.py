"""Synthetic datasets, generated from a seed and needing no files: digits and coloured shapes.

**Digits** (``synthetic``), an offline stand-in for MNIST. Each class is a seven-segment display digit
drawn as thick blocks in a 20x20 box (a pattern fixed for all seeds, so any two seeds describe the same
ten classes), then jittered per image: a whole-pixel shift of up to 2 pixels each way, stroke brightness
between 0.6 and 1, and Gaussian pixel noise. Labels are balanced (``n // 10`` or one more per class) in a
seeded random order. The result has the MNIST layout: uint8 ``(n, 28, 28)`` white on black, int64 labels.

**Coloured shapes** (``synthetic-color``), a dataset of another shape: :data:`COLOR_CLASSES` are a red
square, a green disc, blue horizontal stripes and a yellow cross on a dark background of random colour,
``(n, 3, 16, 16)`` channels first. Per image the shape's centre moves by up to 3 pixels each way, its
half-size lies between 3.5 and 5.5 pixels, its colour is jittered by up to 0.12 per channel and its
brightness scaled by 0.7 to 1, and Gaussian pixel noise is added; labels are balanced in a seeded order.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_int

#: Segments a-g of a seven-segment display, each (row0, row1, col0, col1) in a 20x20 box.
_SEGMENTS = {
    "a": (0, 3, 3, 17),
    "b": (1, 10, 14, 18),
    "c": (10, 19, 14, 18),
    "d": (17, 20, 3, 17),
    "e": (10, 19, 2, 6),
    "f": (1, 10, 2, 6),
    "g": (8, 12, 3, 17),
}
#: Which segments light up for each digit.
_DIGIT_SEGMENTS = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"]
_MAX_SHIFT = 2
_NOISE = 0.08
#: The digit images' side (MNIST's), and the 20x20 box the segments are drawn in, centred in it.
DIGIT_SIZE, _DIGIT_BOX = 28, 20


def class_patterns():
    """The noiseless class templates, float32 ``(n_digits, size, size)`` in [0, 1], each centred."""
    off = (DIGIT_SIZE - _DIGIT_BOX) // 2
    out = np.zeros((len(_DIGIT_SEGMENTS), DIGIT_SIZE, DIGIT_SIZE), dtype=np.float32)
    for digit, segments in enumerate(_DIGIT_SEGMENTS):
        for s in segments:
            r0, r1, c0, c1 = _SEGMENTS[s]
            out[digit, off + r0 : off + r1, off + c0 : off + c1] = 1.0
    return out


def make_synthetic_digits(n, seed=0):
    """``n`` synthetic digit images and labels, deterministic for ``seed``.

    Parameters
    ----------
    n : int
        Number of images (any size >= 0).
    seed : int or sequence of int
        Seed for :func:`numpy.random.default_rng`; the same seed always gives the same arrays.

    Returns
    -------
    X : uint8 ndarray (n, 28, 28), y : int64 ndarray (n,)
    """
    n = check_int(n, "n", low=0)
    rng = np.random.default_rng(seed)
    patterns = class_patterns()
    size = DIGIT_SIZE
    y = rng.permutation(np.arange(n, dtype=np.int64) % len(patterns))
    pad = _MAX_SHIFT
    padded = np.pad(patterns, ((0, 0), (pad, pad), (pad, pad)))
    dy, dx = rng.integers(-pad, pad + 1, size=(2, n))
    brightness = rng.uniform(0.6, 1.0, size=(n, 1, 1)).astype(np.float32)
    X = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):  # a window into the padded template = a shift with zeros shifted in
        r, c = pad - dy[i], pad - dx[i]
        X[i] = padded[y[i], r : r + size, c : c + size]
    X *= brightness
    X += rng.normal(0.0, _NOISE, size=X.shape).astype(np.float32)
    np.clip(X, 0.0, 1.0, out=X)
    return np.rint(X * 255).astype(np.uint8), y


#: The classes of ``synthetic-color``, index = label, and each one's base colour (RGB in [0, 1]).
COLOR_CLASSES = ("red square", "green disc", "blue stripes", "yellow cross")
_BASE_COLOURS = np.array([[0.9, 0.15, 0.1], [0.1, 0.8, 0.2], [0.15, 0.3, 0.95], [0.9, 0.85, 0.1]])
#: ``synthetic-color``'s example shape: (channels, height, width).
COLOR_SHAPE = (3, 16, 16)
_COLOR_SHIFT, _COLOR_JITTER, _COLOR_NOISE = 3, 0.12, 0.06


def _shape_masks(y, cy, cx, r, size):
    """Boolean (n, size, size): each image's shape of class y[i] centred at (cy, cx) with half-size r."""
    rows = np.arange(size, dtype=np.float64)[None, :, None]
    cols = np.arange(size, dtype=np.float64)[None, None, :]
    dy, dx, r = rows - cy[:, None, None], cols - cx[:, None, None], r[:, None, None]
    inside = (np.abs(dy) <= r) & (np.abs(dx) <= r)
    masks = np.stack(
        [
            inside,  # square
            dy**2 + dx**2 <= r**2,  # disc
            inside & (np.floor(dy).astype(np.int64) % 4 < 2),  # horizontal stripes
            inside & ((np.abs(dy) <= 1.0) | (np.abs(dx) <= 1.0)),  # cross
        ]
    )  # (classes, n, size, size)
    return masks[y, np.arange(len(y))]


def make_synthetic_color(n, seed=0):
    """``n`` coloured-shape images and labels (module docstring), deterministic for ``seed``.

    Returns
    -------
    X : uint8 ndarray (n, 3, 16, 16) channels first, y : int64 ndarray (n,) in 0..3
    """
    n = check_int(n, "n", low=0)
    rng = np.random.default_rng(seed)
    channels, size, _ = COLOR_SHAPE
    y = rng.permutation(np.arange(n, dtype=np.int64) % len(COLOR_CLASSES))
    centre = (size - 1) / 2
    cy, cx = centre + rng.integers(-_COLOR_SHIFT, _COLOR_SHIFT + 1, size=(2, n))
    r = rng.uniform(3.5, 5.5, size=n)
    colour = _BASE_COLOURS[y] + rng.uniform(-_COLOR_JITTER, _COLOR_JITTER, size=(n, channels))
    colour *= rng.uniform(0.7, 1.0, size=(n, 1))
    background = rng.uniform(0.0, 0.3, size=(n, channels))
    mask = _shape_masks(y, cy, cx, r, size)[:, None]  # (n, 1, size, size)
    X = np.where(mask, colour[:, :, None, None], background[:, :, None, None])
    X += rng.normal(0.0, _COLOR_NOISE, size=X.shape)
    np.clip(X, 0.0, 1.0, out=X)
    return np.rint(X * 255).astype(np.uint8), y
