"""Model building: architectures as plain JSON-able dicts, and a registry of model types.

An *architecture* is data, so a checkpoint can store it and ``evaluate``/``predict`` can rebuild the
network without the training command line. The MLP of the reference configuration is::

    {"type": "mlp", "input_shape": [28, 28], "hidden": [512], "activation": "relu",
     "init": "glorot_uniform", "n_classes": 10}

with, when asked for, ``"batch_norm": true`` (a ``BatchNorm1D`` between each hidden ``Linear`` and its
activation) and ``"dropout": p`` (a ``Dropout(p)`` after each hidden activation); the keys are left out
when off, so plain MLP architectures (and their checkpoints) are unchanged. The convolutional network is
registered by :mod:`handgrad.app.cnn` (``{"type": "cnn", ...}``).

``build_model(arch, rng)`` turns it into a chapter 6 ``Sequential``. Images arrive everywhere as float32
``(n, 28, 28)``; ``prepare_inputs(arch, X)`` reshapes them once per dataset (not per batch) into what the
first layer takes — ``(n, 784)`` for the MLP (a view, no copy), ``(n, 1, 28, 28)`` for a convolutional
network. Training, evaluation and prediction all go through it, so flattening happens in one place.

Adding a model type (a CNN, say) is one call::

    register_model_type("cnn", build=build_cnn, prepare_inputs=to_nchw,
                        validate=check_cnn_arch, from_config=cnn_arch_from_config, eval_batch_size=500)

(:mod:`handgrad.app.cnn` does exactly this.) ``eval_batch_size`` is how many images evaluation pushes
through at once: 2,000 for the MLP; less for a CNN, whose im2col matrices grow with the batch.

Layer state convention (what a checkpoint saves): every layer's ``params`` dict (trained arrays, with
gradients of the same names in ``grads``) and, when a layer has one, its ``state`` dict — arrays that are
part of the model but not trained by gradient, such as batch normalisation's running mean and variance.
``state`` values must be NumPy arrays whose shapes are fixed at construction; loading copies saved values
into them in place. Names are dotted paths through nested ``Sequential`` layers: "0.W", "3.running_mean".
A layer that draws random numbers (dropout, say) should take the generator handed to ``build_model``: the
training loop saves that generator's state in the checkpoint, so a resumed run repeats the same draws.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from ..ch06_feedforward import INITIALISERS, LeakyReLU, Linear, ReLU, Sequential, Sigmoid, Tanh
from ..ch07_regularization import Dropout
from ..ch08_optimization import BatchNorm1D

__all__ = [
    "ArchitectureError",
    "ModelType",
    "MODEL_TYPES",
    "register_model_type",
    "validate_arch",
    "build_model",
    "prepare_inputs",
    "arch_from_config",
    "eval_batch_size",
    "mlp_arch",
    "named_params",
    "named_state",
    "first_layer_weights",
    "describe",
]

INPUT_SHAPE = (28, 28)


class ArchitectureError(ValueError):
    """An architecture dict is malformed or names a model type this version does not know."""


@dataclasses.dataclass(frozen=True)
class ModelType:
    """How to validate, build and feed one kind of model.

    build(arch, rng) -> Sequential; prepare_inputs(arch, X (n, *input_shape) float32) -> the first layer's
    input; validate(arch) raises ArchitectureError; from_config(config, n_classes, input_shape) -> arch;
    eval_batch_size: images per forward pass when evaluating or predicting many images.
    """

    name: str
    build: Callable
    prepare_inputs: Callable
    validate: Callable | None = None
    from_config: Callable | None = None
    eval_batch_size: int = 2000


MODEL_TYPES: dict[str, ModelType] = {}


def register_model_type(name, *, build, prepare_inputs, validate=None, from_config=None, eval_batch_size=2000):
    """Register (or replace) a model type under ``name``; returns the ModelType."""
    MODEL_TYPES[name] = ModelType(name, build, prepare_inputs, validate, from_config, int(eval_batch_size))
    return MODEL_TYPES[name]


def _model_type(arch) -> ModelType:
    if not isinstance(arch, dict):
        raise ArchitectureError(f"an architecture must be a dict, got {type(arch).__name__}")
    kind = arch.get("type")
    if kind not in MODEL_TYPES:
        known = ", ".join(sorted(MODEL_TYPES))
        raise ArchitectureError(f"unknown model type {kind!r} (this version knows: {known})")
    return MODEL_TYPES[kind]


def validate_arch(arch) -> dict:
    """Check ``arch`` against its type's rules; return it (ArchitectureError when it is wrong)."""
    mt = _model_type(arch)
    if mt.validate is not None:
        mt.validate(arch)
    return arch


def build_model(arch, rng=None) -> Sequential:
    """A freshly initialised network for ``arch``; ``rng`` (a Generator or seed) draws its weights."""
    validate_arch(arch)
    return _model_type(arch).build(arch, np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng)


def prepare_inputs(arch, X) -> np.ndarray:
    """Images (n, *input_shape) -> the first layer's input layout (a view where possible), float32."""
    X = np.asarray(X)
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    return _model_type(arch).prepare_inputs(arch, X)


def eval_batch_size(arch) -> int:
    """How many images evaluation of this architecture pushes through at once (its type's setting)."""
    return _model_type(arch).eval_batch_size


def arch_from_config(config, n_classes, input_shape=INPUT_SHAPE) -> dict:
    """The architecture a TrainConfig asks for (``config.model`` names the type)."""
    arch = {"type": config.model}
    mt = _model_type(arch)
    if mt.from_config is None:
        raise ArchitectureError(f"model type {config.model!r} cannot be built from a training configuration")
    return validate_arch(mt.from_config(config, n_classes, tuple(input_shape)))


# ----------------------------------------------------------------------------------------------------
# The multilayer perceptron (book ch. 6)
# ----------------------------------------------------------------------------------------------------

ACTIVATION_LAYERS = {
    "relu": ReLU,
    "leaky_relu": lambda: LeakyReLU(0.01),
    "sigmoid": Sigmoid,
    "tanh": Tanh,
}


def mlp_arch(hidden=(512,), activation="relu", n_classes=10, input_shape=INPUT_SHAPE, init="glorot_uniform",
             dropout=0.0, batch_norm=False):
    """The architecture dict of an MLP: input -> [Linear, (BatchNorm1D), activation, (Dropout)] per hidden
    size -> Linear(n_classes). ``dropout``/``batch_norm`` keys appear only when they are on."""
    arch = {"type": "mlp", "input_shape": [int(s) for s in input_shape], "hidden": [int(h) for h in hidden],
            "activation": activation, "init": init, "n_classes": int(n_classes)}
    if batch_norm:
        arch["batch_norm"] = True
    if dropout:
        arch["dropout"] = float(dropout)
    return arch


def check_regularisers(arch):
    """The optional ``dropout`` (a probability in [0, 1)) and ``batch_norm`` (a bool) of an architecture."""
    p = arch.get("dropout", 0.0)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
        raise ArchitectureError(f"dropout must be a probability in [0, 1), got {p!r}")
    if not isinstance(arch.get("batch_norm", False), bool):
        raise ArchitectureError(f"batch_norm must be true or false, got {arch['batch_norm']!r}")


def dense_layers(sizes, arch, rng):
    """Linear layers through ``sizes`` (d_in, h_1, …, n_classes), each hidden one followed by
    [BatchNorm1D] activation [Dropout] as ``arch`` asks; the last Linear gives the logits."""
    layers = []
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(d_in, d_out, init=arch["init"], rng=rng))
        if i < len(sizes) - 2:
            if arch.get("batch_norm"):
                layers.append(BatchNorm1D(d_out))
            layers.append(ACTIVATION_LAYERS[arch["activation"]]())
            if arch.get("dropout"):
                layers.append(Dropout(arch["dropout"], rng=rng))
    return layers


def check_dense_layers(arch):
    """The keys ``dense_layers`` reads besides the regularisers: ``hidden``, ``activation``, ``init`` and
    ``n_classes`` (the size of the last layer)."""
    if not _positive_ints(arch["hidden"]):
        raise ArchitectureError(f"hidden must be a list of positive layer sizes, got {arch['hidden']!r}")
    if arch["activation"] not in ACTIVATION_LAYERS:
        raise ArchitectureError(f"activation must be one of {sorted(ACTIVATION_LAYERS)}, got {arch['activation']!r}")
    if arch["init"] not in INITIALISERS:
        raise ArchitectureError(f"init must be {' or '.join(sorted(INITIALISERS))}, got {arch['init']!r}")
    n = arch["n_classes"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ArchitectureError(f"n_classes must be an integer >= 2, got {n!r}")


def _positive_ints(value):
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)


def _validate_mlp(arch):
    expected = {"type", "input_shape", "hidden", "activation", "init", "n_classes"}
    missing = expected - set(arch)
    if missing:
        raise ArchitectureError(f"mlp architecture lacks {sorted(missing)}")
    unknown = set(arch) - expected - {"dropout", "batch_norm"}
    if unknown:
        raise ArchitectureError(f"mlp architecture has unknown keys {sorted(unknown)}")
    check_regularisers(arch)
    if not _positive_ints(arch["input_shape"]) or not arch["input_shape"]:
        raise ArchitectureError(f"input_shape must be a list of positive sizes, got {arch['input_shape']!r}")
    check_dense_layers(arch)


def _build_mlp(arch, rng):
    sizes = [math.prod(arch["input_shape"]), *arch["hidden"], arch["n_classes"]]
    return Sequential(*dense_layers(sizes, arch, rng))


def _mlp_inputs(arch, X):
    shape = tuple(arch["input_shape"])
    if X.shape[1:] != shape:
        from .. import ShapeError

        raise ShapeError(f"the model expects images of shape (n, {', '.join(map(str, shape))}), got {X.shape}")
    return X.reshape(len(X), -1)  # (n, 28, 28) -> (n, 784): a view of a contiguous array


def _mlp_from_config(config, n_classes, input_shape):
    return mlp_arch(config.hidden, config.activation, n_classes, input_shape, dropout=config.dropout,
                    batch_norm=config.batch_norm)


register_model_type("mlp", build=_build_mlp, prepare_inputs=_mlp_inputs, validate=_validate_mlp,
                    from_config=_mlp_from_config)


# ----------------------------------------------------------------------------------------------------
# Named arrays (what a checkpoint holds)
# ----------------------------------------------------------------------------------------------------


def named_params(model) -> dict:
    """Dotted name -> the model's own parameter array ("0.W", "0.b", "2.W", ...)."""
    return {name: p for name, p, _ in model.parameters()}


def named_state(model, prefix="") -> dict:
    """Dotted name -> every non-trained state array of the layers (the ``state`` convention above)."""
    out = {}
    for i, layer in enumerate(getattr(model, "layers", ())):
        name = f"{prefix}{i}"
        if hasattr(layer, "layers"):
            out.update(named_state(layer, name + "."))
        for key, value in (getattr(layer, "state", None) or {}).items():
            out[f"{name}.{key}"] = value
    return out


def first_layer_weights(model):
    """The first parameterised layer's weight array (for plotting), or None."""
    for _, p, _ in model.parameters():
        if p.ndim >= 2:
            return p
    return None


def describe(arch) -> str:
    """A short human description, e.g. 'mlp 784-512-10 relu'."""
    if arch.get("type") == "mlp":
        sizes = [math.prod(arch["input_shape"]), *arch["hidden"], arch["n_classes"]]
        return f"mlp {'-'.join(map(str, sizes))} {arch['activation']}" + regulariser_text(arch)
    if arch.get("type") == "cnn":
        dense = "-".join(map(str, [*arch["hidden"], arch["n_classes"]]))
        k = arch["kernel_size"]
        return (f"cnn conv{k}x{k} {'-'.join(map(str, arch['channels']))} (each + max-pool 2), dense {dense} "
                f"{arch['activation']}" + regulariser_text(arch))
    return str(arch.get("type"))


def regulariser_text(arch):
    parts = (["batch norm"] if arch.get("batch_norm") else []) + ([f"dropout {arch['dropout']:g}"] if arch.get("dropout") else [])
    return f" + {', '.join(parts)}" if parts else ""


from . import cnn as _cnn  # noqa: E402,F401  (registers the "cnn" model type; it builds on the helpers above)
