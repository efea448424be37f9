"""Chapter 8 — Optimisation for training deep models (design report §3.7).

Split by the book's sections: ``sgd`` (§8.3.1–8.3.3: SGD, momentum, Nesterov; eqs. 22–24),
``schedules`` (§8.3.1 learning-rate decay; eq. 25), ``adaptive`` (§8.5: AdaGrad, RMSProp, Adam/AdamW) and
``batch_norm`` (§8.7.1: BatchNorm1D, BatchNorm2D). Every optimiser subclasses ``Optimizer``.
"""

from .adaptive import AdaGrad, Adam, RMSProp
from .batch_norm import BatchNorm1D, BatchNorm2D
from .schedules import (
    constant_schedule,
    cosine_schedule,
    exponential_schedule,
    make_schedule,
    step_schedule,
    with_warmup,
)
from .sgd import SGD, Momentum, Optimizer

__all__ = [
    "Optimizer",
    "SGD",
    "Momentum",
    "AdaGrad",
    "RMSProp",
    "Adam",
    "BatchNorm1D",
    "BatchNorm2D",
    "cosine_schedule",
    "constant_schedule",
    "step_schedule",
    "exponential_schedule",
    "make_schedule",
    "with_warmup",
]
