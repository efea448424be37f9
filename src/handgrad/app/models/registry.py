"""The model registry: a model type is a name, its recipe's defaults, and how to check, build, describe and
feed its architecture.

An *architecture* is a plain JSON-able dict whose ``"type"`` names a registered model type, so a
checkpoint can store it and ``evaluate``/``predict`` rebuild the network without the training command
line. Each model family lives in a module of its own (:mod:`.mlp`, :mod:`.cnn`) that ends with one
``register_model_type(ModelType(...))``; adding a model type is one new module plus that call (and its
import in ``models/__init__.py``).

Layer state convention (what a checkpoint saves): every layer's ``params`` dict (trained arrays, with
gradients of the same names in ``grads``) and, when a layer has one, its ``state`` dict — arrays that are
part of the model but not trained by gradient, such as batch normalisation's running mean and variance.
``state`` values must be NumPy arrays whose shapes are fixed at construction; loading copies saved values
into them in place. Names are dotted paths through nested ``Sequential`` layers: "0.W", "3.running_mean".
A layer that draws random numbers (dropout, say) takes the generator handed to ``build_model``: the
training loop saves that generator's state in the checkpoint, so a resumed run repeats the same draws.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

__all__ = [
    "ArchitectureError",
    "ModelType",
    "MODEL_TYPES",
    "register_model_type",
    "get_model_type",
    "validate_arch",
    "build_model",
    "prepare_inputs",
    "arch_from_config",
    "eval_batch_size",
    "describe",
    "count_parameters",
    "named_params",
    "named_state",
    "first_layer_weights",
    "input_kind",
]


class ArchitectureError(ValueError):
    """An architecture dict is malformed or names a model type this version does not know."""


@dataclasses.dataclass(frozen=True)
class ModelType:
    """One kind of model, as the registry knows it.

    name            the architecture's ``"type"`` and ``handgrad train --model``'s value
    defaults        the recipe: ``TrainConfig`` field -> value for the fields left unset
    build           (arch, rng: np.random.Generator, dtype=np.float32) -> a chapter 6 ``Sequential``
                    whose parameters have ``dtype`` (float64 for gradient checks, §11.5); ``build_model``
                    passes ``dtype`` only when it is not float32, so a builder of (arch, rng) still trains
    validate        (arch) -> None, or ArchitectureError naming the bad key
    from_config     (config, input_shape, n_classes) -> arch
    describe        (arch) -> a short text such as "mlp 784-512-10 relu"
    prepare_inputs  (arch, X float32 (n, *input_shape)) -> the first layer's input layout (a view if it can)
    count_parameters (arch) -> how many numbers the model's params and state hold, computed from the
                    architecture alone (a checkpoint is checked against it before anything is allocated)
    input_kind      what the model reads: "images" (n, *input_shape), or "text" for the character
                    language models (integer ids (N, T); :mod:`.char_lm`)
    eval_batch_size examples per forward pass when evaluating or predicting many: the recipe's (a property)
    """

    name: str
    defaults: dict
    build: Callable
    validate: Callable
    from_config: Callable
    describe: Callable
    prepare_inputs: Callable
    count_parameters: Callable
    input_kind: str = "images"

    @property
    def eval_batch_size(self) -> int:
        """The recipe's ``eval_batch_size`` (``defaults``), 2000 where it names none."""
        return int(self.defaults.get("eval_batch_size") or 2000)


MODEL_TYPES: dict[str, ModelType] = {}


def register_model_type(model_type: ModelType) -> ModelType:
    """Add (or replace) ``model_type`` under its name; returns it."""
    if not isinstance(model_type, ModelType):
        raise TypeError(f"register_model_type expects a ModelType, got {type(model_type).__name__}")
    MODEL_TYPES[model_type.name] = model_type
    return model_type


def get_model_type(name) -> ModelType:
    """The registered ModelType called ``name``; ArchitectureError naming the known ones otherwise."""
    if name not in MODEL_TYPES:
        raise ArchitectureError(
            f"unknown model type {name!r} (this version knows: {', '.join(sorted(MODEL_TYPES))})"
        )
    return MODEL_TYPES[name]


def _model_type(arch) -> ModelType:
    if not isinstance(arch, dict):
        raise ArchitectureError(f"an architecture must be a dict, got {type(arch).__name__}")
    return get_model_type(arch.get("type"))


def validate_arch(arch) -> dict:
    """Check ``arch`` against its type's rules; return it (ArchitectureError when it is wrong)."""
    _model_type(arch).validate(arch)
    return arch


def build_model(arch, rng=None, dtype=np.float32):
    """A freshly initialised network for ``arch``; ``rng`` (a Generator or seed) draws its weights, in
    ``dtype`` (float32 for training; float64 for ``handgrad gradcheck``, whose finite differences need it)."""
    validate_arch(arch)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    build = _model_type(arch).build
    return build(arch, rng) if dtype == np.float32 else build(arch, rng, dtype=dtype)


def prepare_inputs(arch, X) -> np.ndarray:
    """Examples (n, *input_shape) -> the first layer's input layout (a view where possible), float32."""
    X = np.asarray(X)
    model_type = _model_type(arch)
    if model_type.input_kind == "images" and X.dtype != np.float32:  # text models read integer ids
        X = X.astype(np.float32)
    return model_type.prepare_inputs(arch, X)


def input_kind(arch) -> str:
    """What the model of ``arch`` reads: "images" (n, *input_shape), or "text" (character ids (N, T))."""
    return _model_type(arch).input_kind


def eval_batch_size(arch) -> int:
    """How many examples evaluation of this architecture pushes through at once (its type's setting)."""
    return _model_type(arch).eval_batch_size


def describe(arch) -> str:
    """A short human description, e.g. 'mlp 784-512-10 relu'."""
    return _model_type(arch).describe(arch)


def count_parameters(arch) -> int:
    """The number of array elements (params and state) a model of ``arch`` holds, without building it."""
    validate_arch(arch)
    return int(_model_type(arch).count_parameters(arch))


def arch_from_config(config, n_classes, input_shape) -> dict:
    """The architecture a TrainConfig asks for (``config.model`` names the type)."""
    mt = get_model_type(config.model)
    return validate_arch(mt.from_config(config, tuple(input_shape), int(n_classes)))


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
