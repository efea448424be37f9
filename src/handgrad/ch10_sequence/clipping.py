"""§10.11.1 Clipping gradients: rescale the whole gradient when its norm is too large.

Recurrent networks have cliffs in their cost function (§10.7, figure 10.17): a step on the cliff's face
has a huge gradient and would throw the parameters far away. Clipping the norm of the gradient
(eq. 10.48–10.49) keeps the step's direction and bounds its length:

    if ‖g‖ > v:   g ← g v / ‖g‖

over all parameters together (the global norm ‖g‖ = √(Σ_k ‖g_k‖²)), as ``torch.nn.utils.clip_grad_norm_``
does, including its small constant: the factor is v / (‖g‖ + 10⁻⁶).
"""

import math

import numpy as np

from .._checks import check_number

__all__ = ["clip_grad_norm"]


def clip_grad_norm(grads, max_norm):
    """Scale the gradient arrays (a dict or a list; None entries skipped) in place so that their global L2
    norm is at most ``max_norm``; return the norm before clipping (book §10.11.1, eq. 10.48).

    The factor is max_norm / (‖g‖ + 1e-6), applied only when it is below 1 (as PyTorch's
    ``clip_grad_norm_``).

    >>> g = {"W": np.array([3.0, 4.0])}
    >>> clip_grad_norm(g, 1.0), g["W"].round(6).tolist()
    (5.0, [0.6, 0.8])
    """
    max_norm = check_number(max_norm, "max_norm", low=0, low_open=True)
    arrays = list(grads.values()) if isinstance(grads, dict) else list(grads)
    arrays = [g for g in arrays if g is not None]
    for g in arrays:
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
            raise TypeError(f"clip_grad_norm expects float arrays (scaled in place), got {type(g).__name__}")
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in arrays))  # √(Σ_k ‖g_k‖²)
    factor = max_norm / (total + 1e-6)
    if factor < 1.0:
        for g in arrays:
            g *= g.dtype.type(factor)
    return total
