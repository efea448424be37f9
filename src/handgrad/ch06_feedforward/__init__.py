"""Chapter 6 — Deep feedforward networks: layers, output units, cross entropy and back-propagation.

Book §6.1 (learning XOR with an affine layer and a ReLU), §6.2.2 (softmax output units and the
cross-entropy cost), §6.3 (hidden units), §6.5 (back-propagation); design report §3.5, eqs. 13–19.

Split by the book's sections:

    layers       the ``Layer`` convention, Glorot/He initialisers, ``Linear`` (§6.1, §8.4; eqs. 13–16)
    activations  ReLU, LeakyReLU, Sigmoid, Tanh (§6.3; eq. 17)
    losses       cross entropy from logits, its gradient, the fused ``SoftmaxCrossEntropy`` (§6.2.2;
                 eqs. 18–19)
    network      ``Sequential`` and back-propagation through it (§6.5)

Everything is importable from here: ``from handgrad.ch06_feedforward import Linear, ReLU, Sequential``.
The layer convention and the buffer rules are described in :mod:`handgrad.ch06_feedforward.layers`.
"""

from .activations import LeakyReLU, ReLU, Sigmoid, Tanh
from .layers import INITIALISERS, Layer, Linear, glorot_uniform, he_normal, initialiser
from .losses import SoftmaxCrossEntropy, cross_entropy_from_logits, cross_entropy_grad
from .network import Sequential

__all__ = [
    "INITIALISERS",
    "initialiser",
    "Layer",
    "Linear",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "glorot_uniform",
    "he_normal",
    "cross_entropy_from_logits",
    "cross_entropy_grad",
    "SoftmaxCrossEntropy",
    "Sequential",
]
