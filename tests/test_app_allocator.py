"""app/allocator.py: with glibc's thresholds raised, a training step's temporaries stop faulting in pages."""

import subprocess
import sys
import textwrap

import pytest

from handgrad.app import allocator

SCRIPT = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from handgrad.app.allocator import keep_freed_memory
    from handgrad.ch07_regularization import augment_batch

    took = keep_freed_memory() if sys.argv[1] == "on" else None
    X, rng = np.random.default_rng(0).random((128, 28, 28), dtype=np.float32), np.random.default_rng(1)
    for _ in range(5):
        augment_batch(X, rng)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        augment_batch(X, rng)
    print(took, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
    """
)


def faults_per_batch(setting):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, setting], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(not allocator.keep_freed_memory(), reason="the C library is not glibc")
def test_raised_thresholds_stop_the_page_faults_of_repeated_temporaries():
    took, on = faults_per_batch("on")
    _, off = faults_per_batch("off")
    assert took == "True"
    assert off > 200  # glibc's defaults: fresh pages for the batch's arrays on every call
    assert on < 0.1 * off
