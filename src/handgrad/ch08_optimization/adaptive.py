"""Algorithms with adaptive learning rates (book §8.5): AdaGrad, RMSProp and Adam.

Each keeps, per parameter, a running statistic of the squared gradient r and divides the step by its
square root, so that directions with large or frequent gradients take smaller steps (§8.5). In the book's
notation (ε the learning rate, δ a small constant, g the gradient; all operations elementwise):

    AdaGrad  (Algorithm 8.4)   r ← r + g ⊙ g                      Δθ = − ε g / (δ + √r)
    RMSProp  (Algorithm 8.5)   r ← ρ r + (1 − ρ) g ⊙ g            Δθ = − ε g / √(δ + r)
    Adam     (Algorithm 8.7)   t ← t + 1
                               s ← ρ₁ s + (1 − ρ₁) g               r ← ρ₂ r + (1 − ρ₂) g ⊙ g
                               ŝ = s / (1 − ρ₁ᵗ)                   r̂ = r / (1 − ρ₂ᵗ)
                               Δθ = − ε ŝ / (√r̂ + δ)

The code follows PyTorch (``torch.optim.Adagrad``, ``RMSprop``, ``Adam``, ``AdamW``), whose updates it
matches to rounding; the names of the arguments are PyTorch's (lr = ε, alpha = ρ, betas = (ρ₁, ρ₂),
eps = δ). Where the two differ:

- RMSProp: the book puts δ *inside* the square root, 1/√(δ + r); PyTorch adds eps *outside*,
  1/(√r + eps). Only the small-r regime differs (for r ≫ δ both are 1/√r); we use PyTorch's form.
- AdaGrad and Adam: the book already adds δ outside the root, as PyTorch does; only the default
  constant differs (the book suggests δ = 10⁻⁷ for AdaGrad, 10⁻⁸ for Adam; PyTorch's AdaGrad uses 10⁻¹⁰).
  (Adam's paper also gives an equivalent "ε̂" form, ε·√(1 − ρ₂ᵗ)/(1 − ρ₁ᵗ) · s / (√r + ε̂), used by
  TensorFlow; it is *not* the same for a given δ, and we do not use it.)
- Adam's bias correction counts the steps of each parameter (a parameter whose gradient is None is
  not stepped), as PyTorch does: ``state["step"][key]``.

Weight decay for Adam (``weight_decay`` = λ): with ``decoupled=False`` it is an L2 penalty added to the
gradient, g ← g + λθ (``torch.optim.Adam``; §7.1.1); with ``decoupled=True`` it is AdamW's decoupled decay
θ ← θ − ε λ θ, applied before the Adam step and outside the adaptive scaling (``torch.optim.AdamW``;
Loshchilov & Hutter 2019).

All state lives in ``state[slot][key]`` arrays shaped like the parameters (the ``Optimizer`` base class in
``sgd``), updated in place; ``state_dict()``/``load_state_dict()`` save and restore it.
"""

import math

import numpy as np

from .._checks import check_bool, check_number
from .sgd import Optimizer

__all__ = ["AdaGrad", "RMSProp", "Adam"]


class AdaGrad(Optimizer):
    """AdaGrad: scale each coordinate's step by the root of its accumulated squared gradients (§8.5.1).

        r ← r + g ⊙ g;     θ ← θ − lr · g / (√r + eps)          (Algorithm 8.4; torch.optim.Adagrad)

    r starts at zero (``state["sum"][key]``). The effective learning rate only decreases, which suits
    convex problems and sparse gradients but can stop deep-network training too early (§8.5.1).
    """

    hyperparameters = ("lr", "eps")

    def __init__(self, lr=1e-2, eps=1e-10):
        super().__init__(lr)
        self.eps = eps
        self._validate()

    def _validate(self):
        self.eps = check_number(self.eps, "eps", low=0)

    def _update(self, key, param, grad):
        r = self._slot("sum", key, param)
        step = self._scratch(param)
        np.multiply(grad, grad, out=step)
        np.add(r, step, out=r)  # r ← r + g ⊙ g
        np.sqrt(r, out=step)
        np.add(step, self.eps, out=step)  # √r + eps
        np.divide(grad, step, out=step)
        np.multiply(step, self.lr, out=step)  # lr · g / (√r + eps)
        np.subtract(param, step, out=param)


class RMSProp(Optimizer):
    """RMSProp: AdaGrad with an exponentially decaying average of squared gradients (§8.5.2).

        r ← α r + (1 − α) g ⊙ g;     θ ← θ − lr · g / (√r + eps)     (torch.optim.RMSprop)

    The book's Algorithm 8.5 writes the step as − lr · g / √(eps + r), δ inside the root; we follow
    PyTorch (module docstring). r starts at zero (``state["square_avg"][key]``); 0 ≤ α ≤ 1.
    """

    hyperparameters = ("lr", "alpha", "eps")

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8):
        super().__init__(lr)
        self.alpha, self.eps = alpha, eps
        self._validate()

    def _validate(self):
        self.alpha = check_number(self.alpha, "alpha", low=0, high=1)
        self.eps = check_number(self.eps, "eps", low=0)

    def _update(self, key, param, grad):
        r = self._slot("square_avg", key, param)
        step = self._scratch(param)
        np.multiply(grad, grad, out=step)
        np.multiply(step, 1.0 - self.alpha, out=step)
        np.multiply(r, self.alpha, out=r)
        np.add(r, step, out=r)  # r ← α r + (1 − α) g ⊙ g
        np.sqrt(r, out=step)
        np.add(step, self.eps, out=step)  # √r + eps
        np.divide(grad, step, out=step)
        np.multiply(step, self.lr, out=step)
        np.subtract(param, step, out=param)  # θ ← θ − lr · g / (√r + eps)


class Adam(Optimizer):
    """Adam: bias-corrected moving averages of the gradient and its square (§8.5.3, Algorithm 8.7).

        g ← g + λ θ                                   (only when decoupled=False and λ > 0: L2, as Adam)
        θ ← θ − lr λ θ                                (only when decoupled=True: AdamW's decay)
        s ← β₁ s + (1 − β₁) g;     r ← β₂ r + (1 − β₂) g ⊙ g
        θ ← θ − lr · ŝ / (√r̂ + eps),   ŝ = s / (1 − β₁ᵗ),  r̂ = r / (1 − β₂ᵗ)

    computed as PyTorch does: θ ← θ − (lr / (1 − β₁ᵗ)) · s / (√r / √(1 − β₂ᵗ) + eps). t is the step count
    of the parameter (``state["step"][key]``); s and r start at zero (``state["exp_avg"]``,
    ``state["exp_avg_sq"]``). 0 ≤ β₁, β₂ < 1; eps ≥ 0; λ = ``weight_decay`` ≥ 0.
    """

    hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay", "decoupled")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
        super().__init__(lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay, self.decoupled = eps, weight_decay, decoupled
        self._validate()

    @property
    def betas(self):
        return (self.beta1, self.beta2)

    def __repr__(self):
        return (
            f"Adam(lr={self.lr!r}, betas={self.betas!r}, eps={self.eps!r}, "
            f"weight_decay={self.weight_decay!r}, decoupled={self.decoupled!r})"
        )

    def _validate(self):
        self.beta1 = check_number(self.beta1, "beta1", low=0, high=1, high_open=True)
        self.beta2 = check_number(self.beta2, "beta2", low=0, high=1, high_open=True)
        self.eps = check_number(self.eps, "eps", low=0)
        self.weight_decay = check_number(self.weight_decay, "weight_decay", low=0)
        self.decoupled = check_bool(self.decoupled, "decoupled")

    def _update(self, key, param, grad):
        steps = self.state.setdefault("step", {})
        t = int(steps.get(key, 0)) + 1  # this parameter's step count
        steps[key] = np.array(t)
        s = self._slot("exp_avg", key, param)
        r = self._slot("exp_avg_sq", key, param)
        tmp = self._scratch(param)
        if self.weight_decay and self.decoupled:
            np.multiply(param, 1.0 - self.lr * self.weight_decay, out=param)  # θ ← θ − lr λ θ (AdamW)
        elif self.weight_decay:
            g = self._scratch(param, "decayed")  # a second buffer: tmp holds the first
            np.multiply(param, self.weight_decay, out=g)
            np.add(g, grad, out=g)  # g ← g + λ θ (L2 penalty, Adam)
            grad = g
        np.multiply(grad, 1.0 - self.beta1, out=tmp)
        np.multiply(s, self.beta1, out=s)
        np.add(s, tmp, out=s)  # s ← β₁ s + (1 − β₁) g
        np.multiply(grad, grad, out=tmp)
        np.multiply(tmp, 1.0 - self.beta2, out=tmp)
        np.multiply(r, self.beta2, out=r)
        np.add(r, tmp, out=r)  # r ← β₂ r + (1 − β₂) g ⊙ g
        bias1, bias2 = 1.0 - self.beta1**t, 1.0 - self.beta2**t
        np.sqrt(r, out=tmp)
        np.divide(tmp, math.sqrt(bias2), out=tmp)
        np.add(tmp, self.eps, out=tmp)  # √r̂ + eps
        np.divide(s, tmp, out=tmp)
        np.multiply(tmp, self.lr / bias1, out=tmp)  # lr ŝ / (√r̂ + eps)
        np.subtract(param, tmp, out=param)
