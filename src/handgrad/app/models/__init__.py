"""The application's models: a registry of model types (:mod:`.registry`) and one module per model family.

    from handgrad.app.models import build_model, mlp_arch
    model = build_model(mlp_arch(hidden=[512]), rng=0)   # a chapter 6 Sequential

Families: :mod:`.mlp` (the multilayer perceptron, ``"mlp"``) and :mod:`.cnn` (the convolutional network,
``"cnn"``), built from the shared dense head of :mod:`.dense`; :mod:`.rnn` (recurrent image classifiers
reading rows, ``"rnn"``, ``"lstm"``, ``"gru"``) and :mod:`.char_lm` (character language models,
``"char-rnn"``, ``"char-lstm"``, ``"char-gru"``), built from chapter 10's layers. A new family is a module
here that ends with ``register_model_type(ModelType(...))``, imported below.
"""

# Each family registers its model type on import, in the order every listing shows: the reference MLP
# first, then the CNN, the recurrent classifiers and the language models.
from . import mlp  # noqa: F401

# isort: split
from . import cnn  # noqa: F401

# isort: split
from . import rnn  # noqa: F401

# isort: split
from . import char_lm  # noqa: F401
from .char_lm import TEXT_MODEL_OF, char_arch, reset_states
from .cnn import CNN_EVAL_BATCH_SIZE, build_cnn, cnn_arch
from .mlp import mlp_arch
from .registry import (
    MODEL_TYPES,
    ArchitectureError,
    ModelType,
    arch_from_config,
    build_model,
    count_parameters,
    describe,
    eval_batch_size,
    first_layer_weights,
    get_model_type,
    input_kind,
    named_params,
    named_state,
    prepare_inputs,
    register_model_type,
    validate_arch,
)
from .rnn import rnn_arch

__all__ = [
    "MODEL_TYPES",
    "ArchitectureError",
    "ModelType",
    "arch_from_config",
    "build_model",
    "count_parameters",
    "describe",
    "eval_batch_size",
    "first_layer_weights",
    "get_model_type",
    "named_params",
    "named_state",
    "prepare_inputs",
    "register_model_type",
    "validate_arch",
    "mlp_arch",
    "cnn_arch",
    "build_cnn",
    "CNN_EVAL_BATCH_SIZE",
    "input_kind",
    "rnn_arch",
    "char_arch",
    "reset_states",
    "TEXT_MODEL_OF",
]
