"""``handgrad gradcheck``: the back-propagated gradients of a configured model against central differences
(book §11.5, "compare symbolic derivatives to numerical derivatives"; §4.3 / design report eq. 12).

The model ``handgrad train`` would build from the same options is built in float64 (the same random
initialisation, in double precision: float32 cannot resolve a step of 1e-6), with dropout left out so
the loss is a deterministic function of the parameters; batch normalisation stays in training mode, which
is deterministic for a fixed batch. The parameters that start at zero (the biases, batch norm's β) are
set to small random values, N(0, 0.1²): with zero biases MNIST's blank background gives pre-activations of
exactly 0, at the kink of every ReLU, where the loss has no derivative for the finite differences to
estimate (they would measure the mean of the left and right derivatives). On ``examples`` real
training images the loss L(θ) is the mean softmax cross-entropy; back-propagation gives ∇L once, and
for each parameter array chapter 4's ``numerical_gradient`` estimates the derivative of L with respect
to a random subset of its entries (all of them when it has at most ``entries``; the entry with the
largest back-propagated derivative is always among them, so the error is measured against a gradient of
real size):

    ∂L/∂θ_i ≈ (L(θ + ε e_i) − L(θ − ε e_i)) / (2ε),  ε = 1e-6.

The error of a parameter array is scale-free, over the checked entries S:

    relative error = max_{i∈S} |g_i − ĝ_i| / max(max_{i∈S} |g_i|, max_{i∈S} |ĝ_i|, 10⁻³ G)

with g the back-propagated and ĝ the numerical derivative, and G the largest |g| of the whole model. The
floor 10⁻³ G keeps the finite differences' own noise (about 1e-16·|L|/ε ≈ 2e-10 here) from counting as an
error where the exact derivative is 0 — a convolution's or dense layer's bias followed by batch
normalisation, which cancels it (§8.7.1), is such a parameter. A correct backward pass gives about 1e-8 or
less (the truncation error O(ε²) and rounding ~1e-16/ε); a wrong one gives something of order 1. The check
fails above ``TOLERANCE`` = 1e-5, which leaves room for the rare finite difference that straddles a kink
of ReLU or max-pooling and is still orders of magnitude below any real bug.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ...ch04_numerical import numerical_gradient
from ...ch06_feedforward import SoftmaxCrossEntropy
from ..config import ConfigError, TrainConfig
from ..models import (
    arch_from_config,
    build_model,
    char_arch,
    describe,
    input_kind,
    prepare_inputs,
    reset_states,
)

__all__ = ["TOLERANCE", "GradcheckResult", "gradcheck", "format_gradcheck", "relative_error"]

TOLERANCE = 1e-5
EPS = 1e-6


def relative_error(analytic, numeric, floor=1e-12) -> float:
    """max |g − ĝ| / max(max |g|, max |ĝ|, floor) (module docstring)."""
    a, b = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0), floor, 1e-12)
    return float(np.max(np.abs(a - b), initial=0.0) / scale)


@dataclasses.dataclass
class GradcheckResult:
    """Per parameter array: (name, shape, entries checked, relative error); ``passed`` below tolerance."""

    model: str
    dataset: str
    examples: int
    tolerance: float
    params: list  # dicts: name, shape, checked, size, error
    seconds: float

    @property
    def max_error(self) -> float:
        return max((p["error"] for p in self.params), default=0.0)

    @property
    def passed(self) -> bool:
        return self.max_error <= self.tolerance

    def to_dict(self):
        return {**dataclasses.asdict(self), "max_error": self.max_error, "passed": self.passed}


def _entry_view(param, flat_index):
    """A one-element view of ``param`` at ``flat_index``: perturbing it perturbs the parameter in place."""
    index = np.unravel_index(flat_index, param.shape)
    return param[tuple(slice(i, i + 1) for i in index)]


def gradcheck(
    config: TrainConfig | None = None, examples=4, entries=12, tolerance=TOLERANCE, log=print
) -> GradcheckResult:
    """Compare back-propagation with central differences for the model ``config`` describes (module doc).

    ``examples`` training images of the configured dataset (MNIST, or the bundled sample when it is not
    found) are the batch — for a language model, ``examples`` sequences of 8 characters of its training
    text, the loss the mean over every next-character prediction; ``entries`` is how many entries of
    each parameter array are checked at most.
    Raises ConfigError for bad settings (before any work).
    """
    config = dataclasses.replace(config) if config is not None else TrainConfig()
    config.validate()
    for name, value, low in (("examples", examples, 1), ("entries", entries, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise ConfigError(f"tolerance must be a number in (0, 1), got {tolerance!r}")
    started = time.perf_counter()
    text = input_kind({"type": config.model_type}) == "text"
    # Dropout would make L(θ) random: the check runs without it (batch norm in training mode is fine).
    config.dropout = 0.0
    arch, X, y, dataset = (_text_batch if text else _image_batch)(config, examples, log)
    model = build_model(arch, np.random.default_rng(config.seed), dtype=np.float64)
    model.train()
    pick = np.random.default_rng(config.seed + 1)  # its own generator: the biases, the checked entries
    for _, param, _ in model.parameters():
        if not param.any():  # off the kinks (module docstring)
            param[...] = 0.1 * pick.standard_normal(param.shape)
    loss_fn = SoftmaxCrossEntropy()

    def loss(_=None):  # logits (N, C), or (N, T, V) for a language model: the mean over every prediction
        reset_states(model)  # a language model's layers carry their state: each evaluation starts afresh
        logits = model.forward(X)
        shape.append(logits.shape)
        return loss_fn.forward(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    shape = []
    loss()
    model.backward(loss_fn.backward().reshape(shape[-1]))
    analytic = {name: g.copy() for name, _, g in model.parameters()}
    floor = 1e-3 * max(float(np.max(np.abs(g), initial=0.0)) for g in analytic.values())
    rows = []
    for name, param, _ in model.parameters():
        g = analytic[name].reshape(-1)
        if param.size <= entries:
            chosen = np.arange(param.size)
        else:
            largest = int(np.argmax(np.abs(g)))
            others = np.delete(np.arange(param.size), largest)
            chosen = np.concatenate([[largest], pick.choice(others, entries - 1, replace=False)])
        numeric = np.array([numerical_gradient(loss, _entry_view(param, i), eps=EPS).item() for i in chosen])
        rows.append(
            {
                "name": name,
                "shape": list(param.shape),
                "checked": len(chosen),
                "size": int(param.size),
                "error": relative_error(g[chosen], numeric, floor),
            }
        )
    return GradcheckResult(
        model=describe(arch),
        dataset=dataset,
        examples=len(X),
        tolerance=float(tolerance),
        params=rows,
        seconds=time.perf_counter() - started,
    )


def _image_batch(config, examples, log):
    """(arch, the first ``examples`` training images as the model takes them, float64, labels, dataset)."""
    from ..training import load_data

    splits, fell_back = load_data(config.dataset, config.data_dir, log=lambda _msg: None)
    if fell_back:
        log("note: MNIST was not found, so the check runs on the bundled mnist-sample")
    X_img, y = splits.train
    arch = arch_from_config(config, splits.n_classes, splits.input_shape)
    return arch, prepare_inputs(arch, X_img[:examples]).astype(np.float64), y[:examples], splits.name


def _text_batch(config, examples, log):
    """A language model's batch: ``examples`` sequences of 8 characters of the training text and the
    characters that follow each (arch, ids (N, 8), next ids (N, 8), corpus name)."""
    from ..language_model import load_corpus, stream_layout

    splits = load_corpus(config)
    X, Y = stream_layout(splits.train, examples)
    arch = char_arch(config.model, len(splits.vocab), config.embedding_dim, config.hidden)
    return arch, X[:, :8], Y[:, :8], splits.name


def format_gradcheck(r: GradcheckResult) -> str:
    """The table ``handgrad gradcheck`` prints, then one verdict line."""
    width = max(9, *(len(p["name"]) for p in r.params))
    sw = max(5, *(len("x".join(map(str, p["shape"]))) for p in r.params))
    nw = max(len(str(p["size"])) for p in r.params)
    lines = [
        f"gradient check of {r.model} (float64, dropout off) on {r.examples} {r.dataset} training "
        f"images: back-propagation against central differences (eps {EPS:g})",
        f"{'parameter':<{width}}  {'shape':<{sw}}  {'checked':<{nw + 8}}  max rel. error",
    ]
    for p in r.params:
        shape = "x".join(map(str, p["shape"]))
        flag = "  FAIL" if p["error"] > r.tolerance else ""
        lines.append(
            f"{p['name']:<{width}}  {shape:<{sw}}  {p['checked']:>4} of {p['size']:<{nw}}  "
            f"{p['error']:.2e}{flag}"
        )
    verdict = "passed" if r.passed else "FAILED"
    lines.append(
        f"gradient check {verdict}: largest relative error {r.max_error:.2e} "
        f"({'within' if r.passed else 'above'} the tolerance {r.tolerance:g}); {r.seconds:.1f} s"
    )
    return "\n".join(lines)
