"""Parameter norm penalties: L2 weight decay (book §7.1.1; design report eqs. 20–21).

    Ω(w) = λ/2 Σ_j w_j²                                                                    (20)
    L_total = L_data + Ω(w),   so   ∇_w L_total = ∇_w L_data + λw                         (21)

Only weights are penalised by default: a parameter counts as a bias when its name's last dotted
component is ``b`` or ``bias`` ("0.b", "fc.bias") *or* when it is one-dimensional (a bias of any
name). Penalising biases rarely helps and can cause underfitting (book §7.1).

``params`` is a dict name → array or a list of arrays (list entries have no names, so only the shape
rule applies to them).
"""

import threading

import numpy as np

from .. import ShapeError
from .._checks import check_number

__all__ = ["is_bias", "l2_penalty", "l2_grad", "add_l2_grad_"]

_BIAS_NAMES = {"b", "bias"}


def is_bias(name, param):
    """True when ``param`` is treated as a bias: named b/bias (last dotted component) or at most 1-D."""
    if name is not None and str(name).rsplit(".", 1)[-1] in _BIAS_NAMES:
        return True
    return np.ndim(param) <= 1


def _items(params):
    """(key, name-or-None, array) for a dict or a list/tuple of parameters."""
    if isinstance(params, dict):
        return [(k, k, v) for k, v in params.items()]
    if isinstance(params, (list, tuple)):
        return [(i, None, v) for i, v in enumerate(params)]
    raise TypeError(f"params must be a dict name -> array or a list of arrays, got {type(params).__name__}")


def _penalised(name, param, include_biases):
    return include_biases or not is_bias(name, param)


def l2_penalty(params, lam, include_biases=False):
    """Ω(w) = λ/2 Σ w² over the weights (eq. 20), a Python float; biases count only if ``include_biases``."""
    lam = check_number(lam, "lam", low=0)
    total = 0.0
    for _, name, p in _items(params):
        if _penalised(name, p, include_biases):
            p = np.asarray(p)
            total += float(np.vdot(p, p))
    return 0.5 * lam * total


def l2_grad(params, lam, include_biases=False):
    """∇Ω = λw for each weight (eq. 21), as a dict or list matching ``params``.

    Excluded parameters (biases, unless ``include_biases``) get ``None`` rather than zeros: the
    optimisers skip ``None`` entries, and nothing pretends a gradient was computed. New arrays in each
    weight's dtype.
    """
    lam = check_number(lam, "lam", low=0)
    out = {} if isinstance(params, dict) else [None] * len(params)
    for key, name, p in _items(params):
        p = np.asarray(p)
        out[key] = p * p.dtype.type(lam) if _penalised(name, p, include_biases) else None
    return out


def add_l2_grad_(params, grads, lam, include_biases=False):
    """Add λw into the existing gradient arrays, in place, for weights only (eq. 21; the hot-loop form).

    Afterwards ``grads[k]`` equals ``grads_before[k] + l2_grad(params, lam)[k]`` wherever that is not
    None, and excluded entries are unchanged (a test checks the equality). ``params`` and ``grads`` are
    two dicts with the same keys or two lists of the same length; returns ``grads``.

    Speed: two passes over each weight, λw into a scratch array kept between calls (one per thread,
    as large as the largest weight seen) and then the add in place, so no step allocates a
    weight-sized temporary. Measured on the 784×512 layer this is faster than a chunked loop that
    keeps a small temporary in cache: one call per pass costs less than many.
    """
    lam = check_number(lam, "lam", low=0)
    items = _items(params)
    if isinstance(params, dict) != isinstance(grads, dict):
        raise TypeError("params and grads must both be dicts or both be lists")
    if isinstance(grads, dict) and set(grads) != set(params):
        raise ValueError(
            f"params and grads must have the same keys: missing from grads {sorted(set(params) - set(grads), key=str)}, extra in grads {sorted(set(grads) - set(params), key=str)}"
        )
    if not isinstance(grads, dict) and len(grads) != len(params):
        raise ValueError(f"params has {len(params)} entries but grads has {len(grads)}")
    if lam == 0.0:
        return grads
    for key, name, p in items:
        g = grads[key]
        if g is None or not _penalised(name, p, include_biases):
            continue
        p = np.asarray(p)
        if g.shape != p.shape:
            raise ShapeError(
                f"parameter {key!r} has shape {np.shape(p)} but its gradient has shape {g.shape}"
            )
        lam_w = _scratch_like(p, g.dtype)
        np.multiply(p, g.dtype.type(lam), out=lam_w)  # ∇Ω = λw, eq. 21
        g += lam_w
    return grads


_local = threading.local()


def _scratch_like(p, dtype):
    """A reusable array of p's shape in ``dtype`` (a view of a per-thread flat buffer that only grows)."""
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    flat = buffers.get(dtype)
    if flat is None or flat.size < p.size:
        flat = buffers[dtype] = np.empty(p.size, dtype)
    return flat[: p.size].reshape(p.shape)
