"""Time the two forms of the embedding's backward sum, np.add.at and one np.bincount, and check they agree."""

import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

common.pin_threads()

import numpy as np  # noqa: E402

from handgrad.ch10_sequence.embedding import add_at_rows, bincount_rows  # noqa: E402

if __name__ == "__main__":
    print("\n".join(common.machine_header()))
    rng = np.random.default_rng(0)
    for V, E, M in ((65, 128, 128 * 64), (10_000, 128, 128 * 64), (50, 16, 4096)):
        i = rng.integers(0, V, M)
        dY = rng.standard_normal((M, E)).astype(np.float32)
        np.testing.assert_allclose(add_at_rows(i, dY, V), bincount_rows(i, dY, V), rtol=1e-5, atol=1e-5)
        a = min(timeit.repeat(lambda: add_at_rows(i, dY, V), number=5, repeat=3)) / 5  # noqa: B023
        b = min(timeit.repeat(lambda: bincount_rows(i, dY, V), number=5, repeat=3)) / 5  # noqa: B023
        print(f"V={V:6d} E={E:4d} positions={M:6d}: np.add.at {a * 1e3:7.2f} ms, bincount {b * 1e3:7.2f} ms")
