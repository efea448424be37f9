"""The training configuration: one dataclass whose fields mirror ``handgrad train``'s options.

Defaults are the reference configuration of the design report (§4): an MLP 784-512-10 with ReLU units and
Glorot-uniform weights, mini-batches of 256, momentum SGD (lr 0.2, β 0.9), weight decay λ = 1e-4 on the
weights only, 20 epochs at a constant learning rate.

``TrainConfig`` is saved as ``config.json`` in each run folder and read back by ``--resume``; unknown keys in
that file are ignored, so folders written by a later version with more options still load.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

__all__ = ["ConfigError", "TrainConfig", "DEFAULT_DATASET", "FALLBACK_DATASET", "ACTIVATIONS", "OPTIMIZERS",
           "SCHEDULES", "MODELS"]

DEFAULT_DATASET = "mnist"
FALLBACK_DATASET = "mnist-sample"  # bundled with the package, used when MNIST is not found and not named
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")
OPTIMIZERS = ("sgd", "momentum")
SCHEDULES = ("constant", "cosine")
MODELS = ("mlp",)


class ConfigError(ValueError):
    """A configuration value is out of range or of the wrong kind; the message names the option."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (``handgrad train --help`` lists the same, with defaults).

    ``dataset=None`` means MNIST, falling back to the bundled ``mnist-sample`` (with a notice on how to get
    the full set) when MNIST is neither on disk nor downloadable; naming a dataset never falls back.
    ``out=None`` writes to ``runs/<timestamp>/``. ``resume`` names a run folder to continue: its saved
    configuration is used, and only ``epochs`` (when set), ``data_dir``, ``quiet`` and ``plots`` apply.
    ``limit`` keeps the first N training examples; validation and test sets stay whole.
    """

    dataset: str | None = None
    data_dir: str | None = None
    out: str | None = None
    epochs: int = 20
    batch_size: int = 256
    model: str = "mlp"
    hidden: tuple = (512,)
    activation: str = "relu"
    optimizer: str = "momentum"
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    seed: int = 0
    resume: str | None = None
    limit: int | None = None
    eval_batch_size: int = 2000
    plots: bool = True
    quiet: bool = False

    def __post_init__(self):
        if isinstance(self.hidden, (list, tuple)):
            self.hidden = tuple(self.hidden)

    # ------------------------------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the first bad value; return self."""

        def positive_int(name, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")

        def number(name, low=0.0, strict=False, high=None):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number, got {v!r}")
            if v < low or (strict and v == low) or (high is not None and v >= high):
                bound = f"> {low}" if strict else f">= {low}"
                if high is not None:
                    bound += f" and < {high}"
                raise ConfigError(f"{name} must be {bound}, got {v!r}")

        def choice(name, options):
            v = getattr(self, name)
            if v not in options:
                raise ConfigError(f"{name} must be one of {', '.join(options)}; got {v!r}")

        if self.dataset is not None and (not isinstance(self.dataset, str) or not self.dataset):
            raise ConfigError(f"dataset must be a dataset name, got {self.dataset!r}")
        positive_int("epochs")
        positive_int("batch_size")
        positive_int("eval_batch_size")
        positive_int("limit", allow_none=True)
        choice("model", MODELS)
        if not self.hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ConfigError(f"hidden must be one or more positive layer sizes, got {list(self.hidden)!r}")
        choice("activation", ACTIVATIONS)
        choice("optimizer", OPTIMIZERS)
        number("lr", strict=True)
        number("momentum", high=1.0)
        number("weight_decay")
        choice("schedule", SCHEDULES)
        number("warmup_epochs")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"warmup_epochs ({self.warmup_epochs}) cannot exceed epochs ({self.epochs})")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        if self.nesterov and self.optimizer != "momentum":
            raise ConfigError("nesterov needs the momentum optimizer (--optimizer momentum)")
        return self

    # ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from a dict such as ``config.json``'s, ignoring keys this version does not know."""
        if not isinstance(d, dict):
            raise ConfigError(f"a configuration must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def save(self, path) -> None:
        pathlib.Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path) -> "TrainConfig":
        path = pathlib.Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path} not found: is {path.parent} a run folder written by 'handgrad train'?") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read {path}: {err}") from None
        return cls.from_dict(data)
