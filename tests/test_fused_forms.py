"""The faster formulations in the chapter modules agree with the book's forms they replace.

Each test computes a quantity twice — the way the book writes it (the form shown in the docstring) and
the way the hot path computes it — and asserts they agree: exactly where only the memory layout or the
evaluation order of the same operations changes, and to a few float32 ulps where a sum is reassociated.
"""

import numpy as np
import pytest

from handgrad.ch07_regularization import add_l2_grad_
from handgrad.ch08_optimization import SGD, Momentum

# --------------------------------------------------------------------------------------------------
# Chapters 7 and 8: weight decay folded into the optimiser's step
# --------------------------------------------------------------------------------------------------


def _model_like_params(rng, dtype):
    shapes = {"0.W": (7, 5), "0.b": (5,), "2.W": (5, 3), "2.b": (3,)}
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    lambda wd: SGD(0.1, weight_decay=wd),
    lambda wd: Momentum(0.2, beta=0.9, weight_decay=wd),
    lambda wd: Momentum(0.2, beta=0.8, nesterov=True, weight_decay=wd),
], ids=["sgd", "momentum", "nesterov"])
def test_weight_decay_in_the_step_is_add_l2_grad_then_step_bit_for_bit(make, dtype):
    """step(weight_decay=λ) ≡ add_l2_grad_(λ) followed by step(): the same floating-point operations."""
    rng = np.random.default_rng(0)
    fused_params = _model_like_params(rng, dtype)
    book_params = {k: p.copy() for k, p in fused_params.items()}
    fused, book = make(1e-2), make(0.0)
    for _ in range(5):
        grads = {k: rng.standard_normal(p.shape).astype(dtype) for k, p in fused_params.items()}
        before = {k: g.copy() for k, g in grads.items()}
        fused.step(fused_params, grads)
        for k in grads:
            np.testing.assert_array_equal(grads[k], before[k])  # the fused step leaves grads alone
        add_l2_grad_(book_params, grads, 1e-2)
        book.step(book_params, grads)
        for k in fused_params:
            np.testing.assert_array_equal(fused_params[k], book_params[k])
