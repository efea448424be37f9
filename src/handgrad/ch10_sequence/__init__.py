"""Chapter 10 of the book, *Sequence Modeling: Recurrent and Recursive Nets*.

Split by the book's sections:

    recurrent   ``Recurrent`` (what every recurrent layer shares) and the simple ``RNN`` of §10.2, with
                back-propagation through time (§10.2.2; eqs. 10.8–10.11, 10.16–10.28) and the state
                carried between batches for truncated BPTT
    gated       ``LSTM`` (§10.10.1, eqs. 10.40–10.44) and ``GRU`` (§10.10.2, eqs. 10.45–10.46)
    wrappers    ``Bidirectional`` (§10.3), ``LastStep`` (sequence to label) and ``TimeDistributed``
                (a layer at every step, sequence to sequence), for stacked (§10.5) and bidirectional RNNs
    embedding   ``Embedding``: a table of vectors looked up by integer indices (words, characters)
    clipping    ``clip_grad_norm``, clipping the gradient's global norm (§10.11.1)

All layers take batch-first sequences (N, T, D) and keep chapter 6's ``params``/``grads``/``forward``/
``backward`` convention, so they compose in ``Sequential``::

    >>> from handgrad.ch06_feedforward import Linear, Sequential
    >>> model = Sequential(LSTM(28, 64, rng=0), LSTM(64, 64, rng=1), LastStep(), Linear(64, 10, rng=2))
    >>> model.forward(np.zeros((5, 28, 28), np.float32)).shape
    (5, 10)
"""

import numpy as np  # noqa: F401  (the example above)

from .clipping import clip_grad_norm
from .embedding import Embedding
from .gated import GRU, LSTM
from .recurrent import RNN, Recurrent
from .wrappers import Bidirectional, LastStep, TimeDistributed

__all__ = [
    "Recurrent",
    "RNN",
    "LSTM",
    "GRU",
    "Bidirectional",
    "LastStep",
    "TimeDistributed",
    "Embedding",
    "clip_grad_norm",
]
