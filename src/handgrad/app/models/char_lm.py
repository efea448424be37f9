"""Character-level language models (book §10.2, figure 10.3 with a softmax at every step), registered as
``"char-rnn"``, ``"char-lstm"`` and ``"char-gru"``: what ``handgrad train --model rnn|lstm|gru --text FILE``
trains.

The model reads a text as integer character ids and predicts, at every position, the next character::

    ids (N, T) int                                   T = --seq-len characters of N streams
    Embedding(V, E) -> (N, T, E)                     V = the vocabulary's size, E = embedding_dim
    for h in hidden = (256,):
        RNN | LSTM | GRU (d, h), stateful            all hidden states (N, T, h); the state carried on
    TimeDistributed(Linear(h, V)) -> (N, T, V)       logits of the next character at every step

The recurrent layers are ``stateful``: each forward starts from the previous one's final state, so that
consecutive batches of a stream layout (row i of every batch continues row i of the one before) are
truncated back-propagation through time (chapter 10, ``ch10_sequence.recurrent``); the loop resets the
state at the start of every epoch and of every evaluation (``reset_states``).

The recipe (``defaults`` below, the same for the three cells): sequences of 100 characters in batches
of 64, an embedding of 64, one layer of 256 units, Adam (lr 2e-3) with a cosine schedule over 10 epochs,
the gradient's global norm clipped at 5 (§10.11.1), no weight decay or dropout.

The architecture dict, stored in every checkpoint beside the vocabulary (``metadata["vocab"]``)::

    {"type": "char-lstm", "vocab_size": 112, "embedding_dim": 64, "hidden": [256]}
"""

from __future__ import annotations

import numpy as np

from ... import ShapeError
from ..._checks import check_int, check_sizes
from ...ch06_feedforward import Linear, Sequential
from ...ch10_sequence import Embedding, TimeDistributed
from .dense import check_keys
from .registry import ArchitectureError, ModelType, register_model_type
from .rnn import recurrent_layers, recurrent_parameter_count

__all__ = ["char_arch", "reset_states", "TEXT_MODEL_OF", "CHAR_DEFAULTS"]

KEYS = ("type", "vocab_size", "embedding_dim", "hidden")
#: ``--model`` name -> the language-model type it trains with ``--text``.
TEXT_MODEL_OF = {"rnn": "char-rnn", "lstm": "char-lstm", "gru": "char-gru"}
#: The recipe (module docstring).
CHAR_DEFAULTS = dict(
    epochs=10,
    batch_size=64,
    seq_len=100,
    embedding_dim=64,
    hidden=(256,),
    optimizer="adam",
    lr=2e-3,
    weight_decay=0.0,
    schedule="cosine",
    warmup_epochs=0.0,
    clip_grad_norm=5.0,
    dropout=0.0,
    batch_norm=False,
    augment=False,
    channels=(),
    eval_batch_size=64,
)


def char_arch(cell, vocab_size, embedding_dim=64, hidden=(256,)):
    """The architecture dict of a character language model with recurrent ``cell`` (module docstring)."""
    return {
        "type": TEXT_MODEL_OF.get(cell, cell),
        "vocab_size": int(vocab_size),
        "embedding_dim": int(embedding_dim),
        "hidden": [int(h) for h in hidden],
    }


def _cell(arch):
    return arch["type"][len("char-") :]


def _validate(arch):
    check_keys(arch, KEYS)
    check_int(arch["vocab_size"], "vocab_size", low=1, error=ArchitectureError)
    check_int(arch["embedding_dim"], "embedding_dim", low=1, error=ArchitectureError)
    if not isinstance(arch["hidden"], list):
        raise ArchitectureError(f"hidden must be a list of positive layer sizes, got {arch['hidden']!r}")
    check_sizes(arch["hidden"], "hidden", error=ArchitectureError)


def _build(arch, rng, dtype=np.float32):
    V, E, hidden = arch["vocab_size"], arch["embedding_dim"], arch["hidden"]
    return Sequential(
        Embedding(V, E, rng=rng, dtype=dtype),
        *recurrent_layers(_cell(arch), E, hidden, rng, stateful=True, dtype=dtype),
        TimeDistributed(Linear(hidden[-1], V, rng=rng, dtype=dtype)),
    )


def _count(arch):
    """The embedding table V·E, the recurrent layers, and the output layer h·V + V."""
    V, E, hidden = arch["vocab_size"], arch["embedding_dim"], arch["hidden"]
    return V * E + recurrent_parameter_count(_cell(arch), E, hidden) + hidden[-1] * V + V


def _as_ids(arch, X):
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind not in "iu":
        raise ShapeError(
            f"a {arch['type']} reads character ids (N, T) of an integer type, got {X.dtype} {X.shape}"
        )
    return X


def _from_config(config, input_shape, n_classes):
    return char_arch(config.model, n_classes, config.embedding_dim, config.hidden)


def _describe(arch):
    return (
        f"{arch['type']} embedding {arch['vocab_size']}x{arch['embedding_dim']}, "
        f"{_cell(arch)} {'-'.join(map(str, arch['hidden']))}, next-character softmax"
    )


def reset_states(model):
    """Forget the carried state of every stateful layer of ``model`` (the next forward starts from zeros)."""
    for layer in getattr(model, "layers", ()):
        if hasattr(layer, "reset_state"):
            layer.reset_state()
    return model


for _name in TEXT_MODEL_OF.values():
    register_model_type(
        ModelType(
            name=_name,
            defaults=CHAR_DEFAULTS,
            build=_build,
            validate=_validate,
            from_config=_from_config,
            describe=_describe,
            prepare_inputs=_as_ids,
            count_parameters=_count,
            input_kind="text",
        )
    )
