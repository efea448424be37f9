"""Synthetic digits: an offline stand-in for MNIST that needs no files.

Each class is a seven-segment display digit drawn as thick blocks in a 20x20 box (a pattern fixed for all
seeds, so any two seeds describe the same ten classes), then jittered per image: a whole-pixel shift of up
to 3 pixels each way, stroke brightness between 0.6 and 1, and Gaussian pixel noise. Labels are balanced
(``n // 10`` or one more per class) in a seeded random order. The result has the MNIST layout: uint8
``(n, 28, 28)`` white on black, int64 labels.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_int

#: Segments a-g of a seven-segment display, each (row0, row1, col0, col1) in a 20x20 box.
_SEGMENTS = {
    "a": (0, 3, 3, 17), "b": (1, 10, 14, 18), "c": (10, 19, 14, 18), "d": (17, 20, 3, 17),
    "e": (10, 19, 2, 6), "f": (1, 10, 2, 6), "g": (8, 12, 3, 17),
}
#: Which segments light up for each digit.
_DIGIT_SEGMENTS = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"]
_MAX_SHIFT = 2
_NOISE = 0.08


def class_patterns():
    """The ten noiseless class templates, float32 ``(10, 28, 28)`` in [0, 1], each centred in 28x28."""
    out = np.zeros((10, 28, 28), dtype=np.float32)
    for digit, segments in enumerate(_DIGIT_SEGMENTS):
        for s in segments:
            r0, r1, c0, c1 = _SEGMENTS[s]
            out[digit, 4 + r0:4 + r1, 4 + c0:4 + c1] = 1.0
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
    y = rng.permutation(np.arange(n, dtype=np.int64) % 10)
    patterns = class_patterns()
    pad = _MAX_SHIFT
    padded = np.pad(patterns, ((0, 0), (pad, pad), (pad, pad)))
    dy, dx = rng.integers(-pad, pad + 1, size=(2, n))
    brightness = rng.uniform(0.6, 1.0, size=(n, 1, 1)).astype(np.float32)
    X = np.empty((n, 28, 28), dtype=np.float32)
    for i in range(n):  # a window into the padded template = a shift with zeros shifted in
        r, c = pad - dy[i], pad - dx[i]
        X[i] = padded[y[i], r:r + 28, c:c + 28]
    X *= brightness
    X += rng.normal(0.0, _NOISE, size=X.shape).astype(np.float32)
    np.clip(X, 0.0, 1.0, out=X)
    return np.rint(X * 255).astype(np.uint8), y
