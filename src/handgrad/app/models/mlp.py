"""The multilayer perceptron (book ch. 6), registered as ``"mlp"``: the reference model of the design
report (§4.2, eqs. 26–27).

Architecture (the defaults of ``handgrad train``)::

    {"type": "mlp", "input_shape": [28, 28], "hidden": [512], "activation": "relu",
     "init": "glorot_uniform", "n_classes": 10}

with, when asked for, ``"batch_norm": true`` (a ``BatchNorm1D`` between each hidden ``Linear`` and its
activation) and ``"dropout": p`` (a ``Dropout(p)`` after each hidden activation). ``input_shape`` is the
dataset's example shape; the examples are flattened once per dataset, ``(n, *input_shape) -> (n, D)``.

The recipe (``defaults``): the design report's Table 1 — mini-batches of 256, momentum SGD (lr 0.2,
β 0.9), weight decay λ = 1e-4 on the weights only, 20 epochs at a constant learning rate.
"""

from __future__ import annotations

import math

import numpy as np

from ... import ShapeError
from ...ch06_feedforward import Sequential
from ...datasets.registry import get_spec
from .dense import (
    check_dense_head,
    check_input_shape,
    check_keys,
    dense_layers,
    dense_parameter_count,
    regulariser_text,
)
from .registry import ArchitectureError, ModelType, register_model_type

MNIST = get_spec("mnist")

__all__ = ["mlp_arch", "MLP"]

KEYS = ("type", "input_shape", "hidden", "activation", "init", "n_classes")


def mlp_arch(
    hidden=(512,),
    activation="relu",
    n_classes=MNIST.n_classes,
    input_shape=MNIST.input_shape,
    init="glorot_uniform",
    dropout=0.0,
    batch_norm=False,
):
    """The architecture dict of an MLP: input -> [Linear, (BatchNorm1D), activation, (Dropout)] per hidden
    size -> Linear(n_classes). ``dropout``/``batch_norm`` keys appear only when they are on. The shape and
    class count default to MNIST's (the reference data); training takes them from the dataset."""
    arch = {
        "type": "mlp",
        "input_shape": [int(s) for s in input_shape],
        "hidden": [int(h) for h in hidden],
        "activation": activation,
        "init": init,
        "n_classes": int(n_classes),
    }
    if batch_norm:
        arch["batch_norm"] = True
    if dropout:
        arch["dropout"] = float(dropout)
    return arch


def _sizes(arch):
    return [math.prod(arch["input_shape"]), *arch["hidden"], arch["n_classes"]]


def _validate(arch):
    check_keys(arch, KEYS, optional=("dropout", "batch_norm"))
    check_input_shape(arch)
    check_dense_head(arch)
    if not arch["hidden"]:
        raise ArchitectureError("an mlp needs one or more hidden layers, got hidden []")


def _build(arch, rng, dtype=np.float32):
    return Sequential(*dense_layers(_sizes(arch), arch, rng, dtype))


def _flatten(arch, X):
    shape = tuple(arch["input_shape"])
    if X.shape[1:] != shape:
        raise ShapeError(
            f"the model expects inputs of shape (n, {', '.join(map(str, shape))}), got {X.shape}"
        )
    return X.reshape(len(X), -1)  # (n, *input_shape) -> (n, D): a view of a contiguous array


def _from_config(config, input_shape, n_classes):
    return mlp_arch(
        config.hidden,
        config.activation,
        n_classes,
        input_shape,
        dropout=config.dropout,
        batch_norm=config.batch_norm,
    )


def _describe(arch):
    return f"mlp {'-'.join(map(str, _sizes(arch)))} {arch['activation']}" + regulariser_text(arch)


MLP = register_model_type(
    ModelType(
        name="mlp",
        defaults=dict(
            epochs=20,
            batch_size=256,
            hidden=(512,),
            optimizer="momentum",
            lr=0.2,
            weight_decay=1e-4,
            schedule="constant",
            warmup_epochs=0.0,
            dropout=0.0,
            batch_norm=False,
            augment=False,
            channels=(),
            eval_batch_size=2000,
        ),
        build=_build,
        validate=_validate,
        from_config=_from_config,
        describe=_describe,
        prepare_inputs=_flatten,
        count_parameters=lambda arch: dense_parameter_count(_sizes(arch), arch.get("batch_norm", False)),
    )
)
