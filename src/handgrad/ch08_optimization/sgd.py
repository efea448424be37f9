"""Stochastic gradient descent and momentum (book §8.3.1–8.3.3; design report eqs. 22–24).

    SGD (Algorithm 8.1):          θ ← θ − η g                                              (22)
    Momentum (Algorithm 8.2):     v ← βv + g                                               (23)
                                  θ ← θ − η v                                              (24)
    Nesterov (Algorithm 8.3):     v ← βv + g;   θ ← θ − η (βv + g)   (at the look-ahead point, see Momentum)

The book writes momentum as v ← αv − εg, θ ← θ + v; with v_book = −ηv and a constant η the two are the
same trajectory. The form above is PyTorch's ``torch.optim.SGD(momentum=β, dampening=0, nesterov=...)``,
so trajectories match it exactly, and a learning rate changed by a schedule scales the whole step.

Every optimiser has ``step(params, grads)`` that updates the parameter arrays in place. ``params`` and
``grads`` are two dicts with the same keys or two lists of the same length; an entry whose gradient is
None is skipped (a frozen parameter). ``lr`` may be changed between steps (schedules).

Weight decay folded into the step. ``SGD`` and ``Momentum`` take ``weight_decay=λ`` (default 0): the
step then uses g + λθ for every weight — chapter 7's L2 gradient (eq. 21; biases excluded by the
same rule as ``ch07_regularization.is_bias``) — exactly as

    add_l2_grad_(params, grads, λ);  optimizer.step(params, grads)

would, but in one sweep over each parameter and without changing ``grads``. The numbers are those of
``torch.optim.SGD(weight_decay=λ)`` on the weights (tests check both equalities). The sweep matters on a
784×512 layer: the six passes of decay and momentum run while the arrays are still in cache, instead of
two passes now and four after the other parameters have been decayed.
"""

import numpy as np

from .. import ShapeError
from .._checks import check_bool, check_number
from ..ch07_regularization import is_bias

__all__ = ["Optimizer", "SGD", "Momentum"]


class Optimizer:
    """Base of the optimisers: checks the (params, grads) pairing and keeps per-parameter state.

    A subclass lists its scalar hyperparameters in ``hyperparameters`` (saved by ``state_dict``),
    validates them in ``_validate()`` and writes only its update rule ``_update(key, param, grad)``.
    Per-parameter arrays (velocities, moments) come from ``self._slot("velocity", key, param)``:
    created lazily as zeros on the first step, kept under ``self.state[slot][key]`` (key = the dict
    key, or the list index, as a string) and updated in place. ``self._scratch(param)`` gives a
    temporary of the parameter's shape and dtype, one buffer shared by all parameters and reused every
    step, so no step allocates parameter-sized arrays (``self._scratch(param, name)``: another such
    buffer per name). ``self.t`` counts the steps taken. Hyperparameters listed in
    ``optional_hyperparameters`` may be absent from a saved state (one written before they existed);
    ``load_state_dict`` then keeps the constructor's value.
    """

    hyperparameters = ("lr",)

    def __init__(self, lr):
        self.lr = check_number(lr, "lr", low=0, low_open=True)
        self.t = 0
        self.state = {}
        self._scratch_buffers = {}

    # ``lr`` may be set to 0 by a schedule (warmup start, cosine end), never below
    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = check_number(value, "lr", low=0)

    def _validate(self):
        """Check the hyperparameters (after __init__ and load_state_dict); raise ValueError."""

    def __repr__(self):
        args = ", ".join(f"{h}={getattr(self, h)!r}" for h in self.hyperparameters)
        return f"{type(self).__name__}({args})"

    # --- the shared step ----------------------------------------------------------------------------

    def step(self, params, grads):
        """Update every parameter in place from its gradient; entries with gradient None are skipped."""
        for key, p, g in self._pairs(params, grads):
            self._update(key, p, g)
        self.t += 1

    def _update(self, key, param, grad):
        raise NotImplementedError

    @staticmethod
    def _pairs(params, grads):
        if isinstance(params, dict) and isinstance(grads, dict):
            if params.keys() != grads.keys():
                missing = [k for k in params if k not in grads]
                extra = [k for k in grads if k not in params]
                raise ValueError(
                    f"params and grads must have the same keys: missing from grads {missing}, extra in grads {extra}"
                )
            items = [(str(k), params[k], grads[k]) for k in params]
        elif isinstance(params, (list, tuple)) and isinstance(grads, (list, tuple)):
            if len(params) != len(grads):
                raise ValueError(f"params has {len(params)} entries but grads has {len(grads)}")
            items = [(str(i), p, g) for i, (p, g) in enumerate(zip(params, grads))]
        else:
            raise TypeError(
                f"params and grads must be two dicts or two lists, got {type(params).__name__} and {type(grads).__name__}"
            )
        out = []
        for key, p, g in items:
            if g is None:
                continue
            if not isinstance(p, np.ndarray):
                raise TypeError(
                    f"parameter {key!r} must be a NumPy array (updated in place), got {type(p).__name__}"
                )
            g = np.asarray(g)
            if g.shape != p.shape:
                raise ShapeError(
                    f"parameter {key!r} has shape {p.shape} but its gradient has shape {g.shape}"
                )
            out.append((key, p, g))
        return out

    def _slot(self, slot, key, param):
        arrays = self.state.setdefault(slot, {})
        a = arrays.get(key)
        if a is None:
            a = arrays[key] = np.zeros_like(param)
        elif a.shape != param.shape:
            raise ShapeError(
                f"{slot} of parameter {key!r} has shape {a.shape}, the parameter now {param.shape}"
            )
        return a

    def _scratch(self, param, name=None):
        key = param.dtype if name is None else (name, param.dtype)  # a second name, a second buffer
        flat = self._scratch_buffers.get(key)
        if flat is None or flat.size < param.size:
            flat = self._scratch_buffers[key] = np.empty(param.size, param.dtype)
        return flat[: param.size].reshape(param.shape)

    # --- checkpoints ---------------------------------------------------------------------------------

    def state_dict(self):
        """Hyperparameters, step count and state arrays as one flat dict (copies), e.g. for ``np.savez``.

        Keys: each hyperparameter name, ``"t"``, and ``"<slot>.<key>"`` per state array
        (``"velocity.0.W"``).
        """
        d = {h: getattr(self, h) for h in self.hyperparameters}
        d["t"] = self.t
        for slot, arrays in self.state.items():
            for key, a in arrays.items():
                d[f"{slot}.{key}"] = a.copy()
        return d

    def load_state_dict(self, d):
        """Restore what ``state_dict`` returned, so training resumes exactly where it stopped."""
        known = set(self.hyperparameters) | {"t"}
        for k in d:
            if k not in known and "." not in k:
                raise ValueError(
                    f"unknown entry {k!r} in the optimizer state (expected {sorted(known)} or '<slot>.<key>')"
                )
        optional = getattr(self, "optional_hyperparameters", ())
        missing = [h for h in self.hyperparameters if h not in d and h not in optional]
        if missing:
            raise ValueError(f"optimizer state lacks {missing}")
        for h in self.hyperparameters:
            if h not in d:  # an optional one saved by an older version: keep the constructor's value
                continue
            value = d[h]
            setattr(self, h, value.item() if isinstance(value, np.ndarray) else value)
        self._validate()
        self.t = int(d.get("t", 0))
        self.state = {}
        for k, v in d.items():
            if "." in k:
                slot, key = k.split(".", 1)
                self.state.setdefault(slot, {})[key] = np.array(v, copy=True)


class SGD(Optimizer):
    """Plain stochastic gradient descent, θ ← θ − η g (book §8.3.1, Algorithm 8.1; eq. 22).

    With ``weight_decay=λ`` the gradient of a weight is g + λθ (eq. 21, see the module doc).

    >>> w = np.array([1.0]); SGD(lr=0.1).step([w], [np.array([2.0])]); w
    array([0.8])
    """

    hyperparameters = ("lr", "weight_decay")
    optional_hyperparameters = ("weight_decay",)

    def __init__(self, lr, weight_decay=0.0):
        super().__init__(lr)
        self.weight_decay = weight_decay
        self._validate()

    def _validate(self):
        self.weight_decay = check_number(self.weight_decay, "weight_decay", low=0)

    def _decays(self, key, param):
        return self.weight_decay > 0 and not is_bias(key, param)

    def _update(self, key, param, grad):
        step = self._scratch(param)
        if self._decays(key, param):
            np.multiply(param, self.weight_decay, out=step)
            np.add(step, grad, out=step)  # g + λθ  (eq. 21)
            np.multiply(step, self.lr, out=step)
        else:
            np.multiply(grad, self.lr, out=step)  # η g
        np.subtract(param, step, out=param)  # θ ← θ − η g


class Momentum(SGD):
    """SGD with (Polyak or Nesterov) momentum (book §8.3.2–8.3.3, Algorithm 8.2; eqs. 23–24).

        v ← βv + g;   θ ← θ − η v            (nesterov=False)
        v ← βv + g;   θ ← θ − η (βv + g)     (nesterov=True)

    v starts at zero (so the first step is plain SGD, as in PyTorch) and mirrors the parameters:
    ``state["velocity"][key]``, updated in place. 0 ≤ β < 1. With ``weight_decay=λ`` a weight's g is
    g + λθ (eq. 21), computed first as PyTorch does, so the velocity carries the decay too.

    Nesterov momentum as the book writes it (§8.3.3, Algorithm 8.3), with velocity v_b, momentum α and
    learning rate ε, evaluates the gradient at an interim point:

        θ̃ = θ + α v_b;    g = ∇L(θ̃);    v_b ← α v_b − ε g;    θ ← θ + v_b.

    The form above (PyTorch's ``nesterov=True``) is the same algorithm after a change of variables: it
    keeps the look-ahead point φ = θ̃ = θ + α v_b as "the parameters", so the gradient is taken at the
    stored φ and needs no interim copy, and it keeps v = −v_b / η, with α = β and ε = η. One book step
    from (θ, v_b) to (θ', v_b'), with g = ∇L(φ), moves the look-ahead point to

        φ' = θ' + α v_b' = (φ − α v_b) + v_b' + α v_b' = φ + α v_b' − ε g    (θ' = θ + v_b', θ = φ − α v_b)

    and substituting v_b = −η v, v_b' = −η v' gives exactly the update the code makes:

        v' = β v + g,    φ' = φ − η β v' − η g = φ − η (β v' + g).

    Both start from v = v_b = 0, so φ₀ = θ₀; after k steps the book's θ_k is φ_k − α v_b = φ_k + β η v_k
    (a test runs both and compares the iterates). The parameters returned are the look-ahead point; the
    difference β η v vanishes as the velocity does, at convergence.
    """

    hyperparameters = ("lr", "beta", "nesterov", "weight_decay")

    def __init__(self, lr, beta=0.9, nesterov=False, weight_decay=0.0):
        Optimizer.__init__(self, lr)
        self.beta = beta
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self._validate()

    def _validate(self):
        self.beta = check_number(self.beta, "beta", low=0, high=1, high_open=True)
        self.nesterov = check_bool(self.nesterov, "nesterov")
        super()._validate()

    def _update(self, key, param, grad):
        v = self._slot("velocity", key, param)
        step = self._scratch(param)
        if self._decays(key, param):
            g = self._scratch(param, "decayed") if self.nesterov else step  # Nesterov needs g once more
            np.multiply(param, self.weight_decay, out=g)
            grad = np.add(g, grad, out=g)  # g + λθ  (eq. 21)
        np.multiply(v, self.beta, out=v)
        np.add(v, grad, out=v)  # v ← βv + g        (23)
        if self.nesterov:
            np.multiply(v, self.beta, out=step)
            np.add(step, grad, out=step)  # βv + g
            np.multiply(step, self.lr, out=step)
        else:
            np.multiply(v, self.lr, out=step)  # η v
        np.subtract(param, step, out=param)  # θ ← θ − η v      (24)
