"""What the model families share: the dense head (book ch. 6) with its optional batch normalisation
(§8.7.1) and dropout (§7.12), and the checks and words for the keys it reads.

A dense head maps ``sizes = (d_in, h_1, …, n_classes)`` through Linear layers, each hidden one followed by
``[BatchNorm1D] activation [Dropout]``; the last Linear gives the logits. The ``dropout`` and
``batch_norm`` keys of an architecture are optional (left out when off, so plain MLP checkpoints keep
their form).
"""

from __future__ import annotations

import itertools

import numpy as np

from ..._checks import check_bool, check_choice, check_int, check_number, check_sizes
from ...ch06_feedforward import INITIALISERS, LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from ...ch07_regularization import Dropout
from ...ch08_optimization import BatchNorm1D
from .registry import ArchitectureError

__all__ = [
    "ACTIVATION_LAYERS",
    "dense_layers",
    "dense_parameter_count",
    "check_keys",
    "check_dense_head",
    "check_regularisers",
    "check_input_shape",
    "regulariser_text",
]

ACTIVATION_LAYERS = {
    "relu": ReLU,
    "leaky_relu": lambda: LeakyReLU(0.01),
    "sigmoid": Sigmoid,
    "tanh": Tanh,
}


def dense_layers(sizes, arch, rng, dtype=np.float32):
    """Linear layers through ``sizes`` (d_in, h_1, …, n_classes), each hidden one followed by
    [BatchNorm1D] activation [Dropout] as ``arch`` asks; the last Linear gives the logits. The parameters
    have ``dtype`` (the same random draws in either precision)."""
    layers = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(Linear(d_in, d_out, init=arch["init"], rng=rng, dtype=dtype))
        if i < len(sizes) - 2:
            if arch.get("batch_norm"):
                layers.append(BatchNorm1D(d_out, dtype=dtype))
            layers.append(ACTIVATION_LAYERS[arch["activation"]]())
            if arch.get("dropout"):
                layers.append(Dropout(arch["dropout"], rng=rng))
    return layers


def dense_parameter_count(sizes, batch_norm):
    """Numbers held by ``dense_layers(sizes, ...)``: W and b per Linear, and per hidden BatchNorm1D its
    γ, β, running mean and running variance (4 per unit)."""
    count = sum(d_in * d_out + d_out for d_in, d_out in itertools.pairwise(sizes))
    return count + (4 * sum(sizes[1:-1]) if batch_norm else 0)


def check_keys(arch, required, optional=()):
    """ArchitectureError naming missing or unknown keys of an architecture dict."""
    missing, unknown = set(required) - set(arch), set(arch) - set(required) - set(optional)
    if missing:
        raise ArchitectureError(f"{arch.get('type')} architecture lacks {sorted(missing)}")
    if unknown:
        raise ArchitectureError(f"{arch.get('type')} architecture has unknown keys {sorted(unknown)}")


def check_input_shape(arch, ndim=None):
    """``input_shape``: a list of positive sizes (of ``ndim`` entries when given)."""
    shape = arch["input_shape"]
    check_sizes(shape, "input_shape", error=ArchitectureError)
    if not isinstance(shape, list) or (ndim is not None and len(shape) != ndim):
        want = f"{ndim} " if ndim else ""
        raise ArchitectureError(f"input_shape must be a list of {want}positive sizes, got {shape!r}")


def check_regularisers(arch):
    """The optional ``dropout`` (a probability in [0, 1)) and ``batch_norm`` (a bool) of an architecture."""
    check_number(arch.get("dropout", 0.0), "dropout", low=0, high=1, high_open=True, error=ArchitectureError)
    check_bool(arch.get("batch_norm", False), "batch_norm", error=ArchitectureError)


def check_dense_head(arch):
    """The keys ``dense_layers`` reads besides the regularisers: ``hidden`` (a list of sizes; may be empty),
    ``activation``, ``init`` and ``n_classes`` (the size of the last layer)."""
    if not isinstance(arch["hidden"], list):
        raise ArchitectureError(f"hidden must be a list of positive layer sizes, got {arch['hidden']!r}")
    check_sizes(arch["hidden"], "hidden", allow_empty=True, error=ArchitectureError)
    check_choice(arch["activation"], "activation", sorted(ACTIVATION_LAYERS), error=ArchitectureError)
    check_choice(arch["init"], "init", sorted(INITIALISERS), error=ArchitectureError)
    check_int(arch["n_classes"], "n_classes", low=2, error=ArchitectureError)
    check_regularisers(arch)


def regulariser_text(arch):
    """' + batch norm, dropout 0.25' (or '') for ``describe``."""
    parts = ["batch norm"] if arch.get("batch_norm") else []
    if arch.get("dropout"):
        parts.append(f"dropout {arch['dropout']:g}")
    return f" + {', '.join(parts)}" if parts else ""
