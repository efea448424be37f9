"""The training configuration: one dataclass whose fields mirror ``handgrad train``'s options.

Defaults depend on the model (``MODEL_DEFAULTS``). For ``model="mlp"`` they are the reference configuration
of the design report (§4): an MLP 784-512-10 with ReLU units and Glorot-uniform weights, mini-batches of 256,
momentum SGD (lr 0.2, β 0.9), weight decay λ = 1e-4 on the weights only, 20 epochs at a constant learning
rate, no dropout, batch normalisation or augmentation. For ``model="cnn"`` they are the CNN recipe of
:mod:`handgrad.app.models.cnn` (Adam, a cosine schedule with warmup, batch normalisation, dropout,
augmentation).
For ``rnn``, ``lstm`` and ``gru`` they are the sequential-MNIST recipes of :mod:`handgrad.app.models.rnn`,
and with ``text`` (or a ``dataset`` of kind "text") the language-model recipe of
:mod:`handgrad.app.models.char_lm` (``model_type`` names the type built: ``char-lstm`` for ``lstm``).
``clip_grad_norm`` (None or 0: off) clips the gradient's global norm between the backward pass and the
optimiser's step (§10.11.1); off, the step is exactly what it was without the option.

The model-dependent fields (``MODEL_DEFAULTS[model]``'s keys) default to None, which ``__post_init__``
replaces by the chosen model's value; any value given explicitly is kept. So ``TrainConfig(model="cnn")`` is
the CNN recipe and ``TrainConfig(model="cnn", epochs=3)`` the same recipe for 3 epochs — exactly as
``handgrad train --model cnn [--epochs 3]``. (``dataclasses.replace(config, model=...)`` keeps the values
already filled in; build a new TrainConfig to switch recipes.) With ``resume`` set, ``epochs=None`` stays
None: it means "the run's own".

``TrainConfig`` is saved as ``config.json`` in each run folder and read back by ``--resume``; unknown keys in
that file are ignored, so folders written by a later version with more options still load.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

from .._checks import check_bool, check_choice, check_int, check_number, check_sizes
from .models import MODEL_TYPES, TEXT_MODEL_OF
from .recipes import OPTIMIZER_RECIPES, SCHEDULE_RECIPES

__all__ = [
    "ConfigError",
    "TrainConfig",
    "DEFAULT_DATASET",
    "FALLBACK_DATASET",
    "ACTIVATIONS",
    "OPTIMIZERS",
    "SCHEDULES",
    "MODELS",
    "MODEL_DEFAULTS",
]

DEFAULT_DATASET = "mnist"
FALLBACK_DATASET = "mnist-sample"  # bundled with the package, used when MNIST is not found and not named
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")
OPTIMIZERS = tuple(OPTIMIZER_RECIPES)  # sgd, momentum, adam, adamw, rmsprop, adagrad (see recipes.py)
SCHEDULES = tuple(SCHEDULE_RECIPES)  # constant, cosine, step, exponential
# --model's choices: the model types that read images; rnn, lstm and gru with --text (or a text dataset)
# train the character language model of the same cell (TEXT_MODEL_OF), whose defaults then apply.
MODELS = tuple(name for name, model_type in MODEL_TYPES.items() if model_type.input_kind == "images")

# The model-dependent settings, each model type's recipe (handgrad.app.models.<name> documents it and the
# measurements behind it). None in a TrainConfig means "this model's value from here".
MODEL_DEFAULTS = {name: model_type.defaults for name, model_type in MODEL_TYPES.items()}


class ConfigError(ValueError):
    """A configuration value is out of range or of the wrong kind; the message names the option."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (``handgrad train --help`` lists the same, with defaults).

    ``dataset=None`` means MNIST, falling back to the bundled ``mnist-sample`` (with a notice on how to get
    the full set) when MNIST is neither on disk nor downloadable; naming a dataset never falls back.
    ``out=None`` writes to ``runs/<timestamp>/``. ``resume`` names a run folder to continue: its saved
    configuration is used, and only ``epochs`` (when set), ``data_dir``, ``quiet`` and ``plots`` apply.
    ``limit`` keeps the first N training examples (a language model: the first N characters of its
    training text); validation and test sets stay whole. ``overfit`` N does the same for the "fit a tiny
    dataset" check of §11.5 and, unless they are given, switches augmentation and dropout off; the run
    then reports whether it fitted them (:mod:`handgrad.app.tools.overfit`).
    ``monitor`` logs per-layer activations, gradients and update ratios (``monitor.csv``).
    """

    dataset: str | None = None
    data_dir: str | None = None
    out: str | None = None
    epochs: int | None = None  # None: the model's default (MODEL_DEFAULTS), or with resume the run's own
    batch_size: int | None = None
    model: str = "mlp"
    hidden: tuple | None = None  # the MLP's hidden layers; the CNN's dense layers after the convolutions
    channels: tuple | None = None  # the CNN's convolution blocks (output channels of each); () for the MLP
    activation: str = "relu"
    dropout: float | None = None  # drop probability after each hidden dense layer (CNN: also before it)
    batch_norm: bool | None = None  # batch normalisation before each hidden activation
    augment: bool | None = None  # random shifts and rotations of each training batch (book §7.4)
    augment_shift: int = 2  # pixels, each direction
    augment_degrees: float = 10.0
    augment_elastic: float = (
        0.0  # Simard et al.'s elastic distortion: its strength α in pixels (σ = 4); 0 off
    )
    optimizer: str | None = None
    lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float | None = None
    schedule: str | None = None
    warmup_epochs: float | None = None
    lr_step_epochs: float | None = None  # step schedule: decay every this many epochs (None: a third of them)
    lr_batch: int | None = None  # linear scaling rule: lr is the rate for batches of this size (Goyal et al.)
    lr_gamma: float | None = (
        None  # decay factor: per step of the step schedule (0.1), per epoch (0.9) for exponential
    )
    patience: int | None = None  # early stopping after this many epochs without a better val accuracy
    seed: int = 0
    resume: str | None = None
    limit: int | None = None  # the first N training examples (characters of a text)
    overfit: int | None = None  # train on the first N examples (characters) only, no augmentation or dropout
    monitor: bool = False  # per-layer statistics into monitor.csv (handgrad.app.tools.monitor, §11.5)
    eval_batch_size: int | None = None
    clip_grad_norm: float | None = None  # clip the gradient's global norm (§10.11.1); None or 0: off
    text: str | None = None  # a UTF-8 text file: train a character language model (--model rnn|lstm|gru)
    seq_len: int | None = None  # language models: characters per sequence (truncated BPTT length)
    embedding_dim: int | None = None  # language models: the size of each character's embedding
    plots: bool = True
    quiet: bool = False

    def __post_init__(self):
        if self.overfit is not None:  # fit a tiny dataset: no regulariser that would hide a failure to fit
            self.augment = False if self.augment is None else self.augment
            self.dropout = 0.0 if self.dropout is None else self.dropout
        defaults = MODEL_DEFAULTS.get(self.model_type, MODEL_DEFAULTS["mlp"])
        for name, value in defaults.items():
            if getattr(self, name) is None and not (name == "epochs" and self.resume is not None):
                setattr(self, name, value)
        for name in ("hidden", "channels"):
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))

    @property
    def trains_text(self) -> bool:
        """Whether this run trains a language model: ``text`` is set or ``dataset`` names a text corpus."""
        if self.text is not None:
            return True
        from ..datasets.registry import REGISTRY

        spec = REGISTRY.get(self.dataset) if isinstance(self.dataset, str) else None
        return spec is not None and spec.kind == "text"

    @property
    def model_type(self) -> str:
        """The registered model type this run builds: ``model``, or for a text run the language model of
        its cell (``lstm`` -> ``char-lstm``)."""
        return TEXT_MODEL_OF.get(self.model, self.model) if self.trains_text else self.model

    # ------------------------------------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first bad value; return self."""
        err = {"error": ConfigError}
        if self.dataset is not None and (not isinstance(self.dataset, str) or not self.dataset):
            raise ConfigError(f"dataset must be a dataset name, got {self.dataset!r}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            check_int(getattr(self, name), name, low=1, **err)
        for name in ("limit", "patience", "overfit"):  # None: all the training images; no early stopping
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, low=1, **err)
        if self.limit is not None and self.overfit is not None:
            raise ConfigError(
                "overfit already limits the training set: give --overfit N or --limit N, not both"
            )
        check_bool(self.monitor, "monitor", **err)
        check_choice(self.model, "model", MODELS, **err)
        check_sizes(self.hidden, "hidden", allow_empty=self.model == "cnn", **err)
        check_sizes(self.channels, "channels", allow_empty=self.model != "cnn", **err)
        if self.model != "cnn" and self.channels:
            raise ConfigError("channels (convolution blocks) need --model cnn")
        check_choice(self.activation, "activation", ACTIVATIONS, **err)
        check_choice(self.optimizer, "optimizer", OPTIMIZERS, **err)
        check_number(self.lr, "lr", low=0, low_open=True, **err)
        check_number(self.momentum, "momentum", low=0, high=1, high_open=True, **err)
        check_number(self.weight_decay, "weight_decay", low=0, **err)
        check_number(self.dropout, "dropout", low=0, high=1, high_open=True, **err)
        check_bool(self.batch_norm, "batch_norm", **err)
        check_bool(self.augment, "augment", **err)
        check_int(self.augment_shift, "augment_shift", low=0, high=8, **err)
        check_number(self.augment_degrees, "augment_degrees", low=0, high=180, **err)
        check_number(self.augment_elastic, "augment_elastic", low=0, high=100, **err)
        check_choice(self.schedule, "schedule", SCHEDULES, **err)
        check_number(self.warmup_epochs, "warmup_epochs", low=0, **err)
        if self.lr_step_epochs is not None:
            check_number(self.lr_step_epochs, "lr_step_epochs", low=0, low_open=True, **err)
        if self.lr_batch is not None:
            check_int(self.lr_batch, "lr_batch", low=1, **err)
        if self.lr_gamma is not None:
            check_number(self.lr_gamma, "lr_gamma", low=0, high=1, low_open=True, **err)
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup_epochs ({self.warmup_epochs}) cannot exceed epochs ({self.epochs})")
        check_int(self.seed, "seed", low=0, **err)
        if self.seed >= 2**32:
            raise ConfigError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        check_bool(self.nesterov, "nesterov", **err)
        if self.nesterov and self.optimizer != "momentum":
            raise ConfigError("nesterov needs the momentum optimizer (--optimizer momentum)")
        if self.clip_grad_norm is not None:
            check_number(self.clip_grad_norm, "clip_grad_norm", low=0, **err)
        if self.trains_text:
            self._validate_text()
        return self

    def _validate_text(self):
        """The settings of a language-model run (``trains_text``)."""
        err = {"error": ConfigError}
        if self.model not in TEXT_MODEL_OF:
            raise ConfigError(
                f"a text trains a character language model: choose --model "
                f"{', '.join(TEXT_MODEL_OF)} (got {self.model})"
            )
        if self.text is not None and self.dataset is not None:
            raise ConfigError(
                f"give either --text FILE or --dataset NAME, not both (got --text {self.text} "
                f"and --dataset {self.dataset})"
            )
        if self.text is not None and (not isinstance(self.text, str) or not self.text):
            raise ConfigError(f"text must be the path of a text file, got {self.text!r}")
        check_int(self.seq_len, "seq_len", low=1, **err)
        check_int(self.embedding_dim, "embedding_dim", low=1, **err)
        check_sizes(self.hidden, "hidden", **err)
        if self.augment or self.batch_norm or self.dropout or self.channels:
            raise ConfigError("a language model takes no --augment, --batch-norm, --dropout or --channels")

    # ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a dict such as ``config.json``'s, ignoring keys this version does not know."""
        if not isinstance(d, dict):
            raise ConfigError(f"a configuration must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def save(self, path) -> None:
        pathlib.Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path) -> TrainConfig:
        path = pathlib.Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"{path} not found: is {path.parent} a run folder written by 'handgrad train'?"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read {path}: {err}") from None
        return cls.from_dict(data)
