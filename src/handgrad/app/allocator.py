"""Keep freed memory in the process for the next training step (glibc's ``mallopt``), where there is glibc.

A NumPy training step allocates and frees the same temporaries every time: im2col matrices, activations,
gradients, the augmented batch — arrays of hundreds of kilobytes to tens of megabytes. glibc's ``malloc``
serves blocks above its mmap threshold (128 KiB at first, raised as such blocks are freed) with fresh
``mmap`` pages and trims the top of its heap when more than ``M_TRIM_THRESHOLD`` is free, so each step's
arrays arrive as new pages that the kernel must fault in and zero: about 1,760 page faults per step of the
CNN recipe and 2,300 per augmented batch of 128 images, counted with ``getrusage``
(``tests/test_app_allocator.py`` counts the latter). Raising both thresholds makes ``malloc`` keep and
reuse those blocks: about 5 faults per CNN step and none per batch, and the augmentation of a batch fell
from 5–7 ms to 1.1–1.5 ms in two timings on the 2-core machine of the README. (PyTorch's CPU performance
guide makes the same point with jemalloc or tcmalloc.) The price is that memory freed below the peak is
not returned to the system while the process lives.

``keep_freed_memory()`` is called once by the command line (``handgrad.cli.main``); a program that calls
``handgrad.app.train`` itself may call it too. It does nothing, and returns False, where the C library is
not glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit): bigger blocks
TRIM_THRESHOLD = 1024 * 1024 * 1024  # are still mapped and unmapped; keep up to 1 GiB free at the top


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds as the module docstring says; True when glibc took both."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
