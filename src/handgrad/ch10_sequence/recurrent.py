"""§10.2 Recurrent neural networks and back-propagation through time (eqs. 10.8–10.11, 10.16–10.28).

A recurrent layer applies the same step to every position of a sequence, carrying a hidden state h from
one step to the next. In the book's column form (eqs. 10.8–10.11) the step of the simple RNN is
a⁽ᵗ⁾ = b + W h⁽ᵗ⁻¹⁾ + U x⁽ᵗ⁾, h⁽ᵗ⁾ = tanh(a⁽ᵗ⁾); the code holds a batch of N sequences as rows, so
every product is written the other way round (the row-vector batch form, as chapter 6's Linear):

    A_t = X_t U + H_{t−1} W + b,     H_t = tanh(A_t)        X_t (N, D), H_t (N, H)

This module holds what every recurrent layer shares (``Recurrent``: parameters in this form, input and
state checks, the state carried between batches) and the simple ``RNN``; the gated LSTM and GRU of §10.10
are in ``gated``. Three things make the layers fast without changing the page:

- the input part of every step, X_t U + b for all t, is one product (N·T, D) @ (D, G·H) before the loop,
  and dU = Xᵀ dA, db = Σ dA and dW = Σ_t H_{t−1}ᵀ dA_t are one product each after the backward loop;
  inside the loops run only the recurrent product and the gate arithmetic. The steps are stored
  time-major, (T, N, ·), so that every step reads and writes contiguous rows;
- float32 gradients that decay over hundreds of steps end up as subnormal numbers (below
  ``np.finfo(float32).tiny`` ≈ 1.2e-38), and arithmetic on subnormals is many times slower on CPUs that
  handle them in microcode (many Intel cores; the AMD EPYC these layers were timed on shows no penalty,
  ``benchmarks/rnn_speed.py`` measures it). The backward loops therefore flush entries of the carried
  gradients (dh_next, dc_next) whose magnitude is below the smallest normal number to zero
  (``_flush``), which changes each of them by less than that tiny amount; once a gradient has decayed
  to zero it stays zero, and zeros cost nothing extra. The flush is three passes over (N, H), so it runs
  at every ``flush_every`` = 4th step: a subnormal lives at most 3 steps instead of the dozens it takes
  to decay through the subnormal range, and the cost is a quarter. ``flush_subnormals = False`` on a
  layer (or the class) switches it off;
- the logistic sigmoid is computed as σ(x) = (1 + tanh(x/2)) / 2, one tanh that cannot overflow, equal
  to chapter 4's stable ``sigmoid`` to rounding (a test checks it).

**The state.** ``forward(X, state)`` starts from ``state`` (h_0; ``(h_0, c_0)`` for the LSTM), or from
``layer.initial_state`` when no state is passed, or from zeros when that is None too. After the forward
``layer.final_state`` holds h_T (``(h_T, c_T)``), a copy; after ``backward``, ``layer.state_grad`` holds
dh_0 (``(dh_0, dc_0)``), the gradient of the loss with respect to the initial state, which a caller
stacking layers in time (or checking gradients) passes on. When the loss uses the final state too (an
encoder whose h_T starts a decoder), ``backward(dH, dstate)`` takes its gradient: the carried gradient
of the last step then starts from it instead of zero.

**Truncated back-propagation through time.** A long text is cut into batches of T steps; the state
travels from one batch to the next, the gradient does not (it stops at the cut). With ``stateful=True``
the layer does this itself: each forward starts from the previous forward's final state (a copy, so
nothing links the two batches) and ``reset_state()`` starts afresh, e.g. at each epoch. By hand it is
``layer.initial_state = layer.final_state`` between the batches::

    >>> import numpy as np
    >>> rnn = RNN(3, 4, rng=0, stateful=True)
    >>> text = np.random.default_rng(0).standard_normal((2, 10, 3)).astype(np.float32)
    >>> for chunk in (text[:, :5], text[:, 5:]):   # two batches of T = 5 steps
    ...     H = rnn.forward(chunk)                 # starts from the last chunk's h_T
    ...     _ = rnn.backward(np.ones_like(H))      # the gradient stays inside the chunk
    >>> whole = RNN(3, 4, rng=0).forward(text)
    >>> bool(np.allclose(H, whole[:, 5:], atol=1e-6))
    True
    >>> _ = rnn.reset_state()                      # the next text starts from zeros

Inside chapter 6's ``Sequential`` (whose forward takes one argument) a layer starts from zeros, or from
``initial_state`` / its carried state.
"""

import numpy as np

from .. import ShapeError
from .._checks import check_bool, check_choice, check_int
from ..ch02_linear_algebra import as_float_array
from ..ch04_numerical import float_dtype
from ..ch06_feedforward import Layer

__all__ = ["Recurrent", "RNN"]


def _sigmoid_(x):
    """σ(x) = (1 + tanh(x/2)) / 2 in place, for a float array x (σ of ch04 without a temporary)."""
    np.multiply(x, 0.5, out=x)
    np.tanh(x, out=x)
    np.multiply(x, 0.5, out=x)
    np.add(x, 0.5, out=x)
    return x


class Recurrent(Layer):
    """What every recurrent layer shares: parameters U, W, b in the row-vector form, checks and the state.

    A layer with G gates has U (D, G·H), W (H, G·H), b (G·H,), the gates stacked along the columns in
    PyTorch's order, so that ``U = weight_ih.T``, ``W = weight_hh.T`` and ``b = bias_ih + bias_hh`` of
    ``torch.nn.RNN/LSTM/GRU``. Each entry is drawn as PyTorch draws it, U(−k, k) with k = 1/√H, and b as
    PyTorch's sum of two such biases. Subclasses write ``_forward(X_tm, state) -> H_tm`` and
    ``_backward(dH_tm, dstate_T) -> dA_tm`` on time-major arrays (T, N, ·); this class turns the
    batch-first input (N, T, D) around, checks shapes, does the products after the loop and keeps the state.
    """

    gates = 1
    flush_subnormals = True  # in the backward loops, at every flush_every-th step (module docstring)
    flush_every = 4

    def __init__(self, input_size, hidden_size, rng=None, dtype=np.float32, stateful=False):
        super().__init__()
        self.input_size = check_int(input_size, "input_size", low=1)
        self.hidden_size = check_int(hidden_size, "hidden_size", low=1)
        self.stateful = check_bool(stateful, "stateful")
        dtype = float_dtype(dtype)
        rng = np.random.default_rng(rng)
        D, H, GH = self.input_size, self.hidden_size, self.gates * self.hidden_size
        k = 1.0 / np.sqrt(H)
        self.params["U"] = rng.uniform(-k, k, (D, GH)).astype(dtype)
        self.params["W"] = rng.uniform(-k, k, (H, GH)).astype(dtype)
        self.params["b"] = (rng.uniform(-k, k, GH) + rng.uniform(-k, k, GH)).astype(dtype)
        self._zero_grads()
        self.initial_state = None  # used by forward when no state is passed (see module doc)
        self.final_state = None
        self.state_grad = None
        self._cache = None

    def _zero_grads(self):
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}

    def __repr__(self):
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size})"

    def reset_state(self):
        """Forget the carried state: the next forward starts from zeros."""
        self.initial_state = None
        return self

    # --- the batch-first boundary ---------------------------------------------------------------------

    def _check_input(self, X):
        X = as_float_array(X, self.params["U"].dtype.type)
        if X.ndim != 3 or X.shape[2] != self.input_size:
            raise ShapeError(f"{self!r} expects input (N, T, {self.input_size}), got {X.shape}")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ShapeError(f"{self!r} expects at least one sequence of at least one step, got {X.shape}")
        return X

    def _check_state(self, h, N, dtype, name="h0"):
        h = np.asarray(h)
        if h.shape != (N, self.hidden_size):
            raise ShapeError(
                f"{self!r}: {name} must have shape (N, H) = {(N, self.hidden_size)} "
                f"for input of {N} sequences, got {h.shape}"
            )
        return h.astype(dtype, copy=False)

    def _as_state(self, state, N, dtype, name="h0"):
        """A state passed in (h0, or a gradient for h_T) checked and as an array of ``dtype``."""
        return self._check_state(state, N, dtype, name)

    def _zero_state(self, N, dtype):
        return np.zeros((N, self.hidden_size), dtype)

    def _initial(self, state, N, dtype):
        """The state a forward starts from: ``state``, else ``initial_state``, else zeros."""
        if state is None:
            state = self.initial_state
        return self._zero_state(N, dtype) if state is None else self._as_state(state, N, dtype)

    def forward(self, X, state=None):
        """All hidden states H (N, T, H) of the sequences X (N, T, D), from ``state`` (module doc)."""
        X = self._check_input(X)
        N, T, _ = X.shape
        dtype = np.result_type(X, self.params["U"])
        state = self._initial(state, N, dtype)
        X_tm = self._buffer("X_tm", (T, N, self.input_size), dtype)
        X_tm[...] = X.transpose(1, 0, 2)  # time-major: step t is the contiguous block X_tm[t]
        H_tm = self._forward(X_tm, state)  # (T + 1, N, H): H_tm[0] = h0, H_tm[t] = h_t
        out = self._output("H", (N, T, self.hidden_size), dtype)
        out[...] = H_tm[1:].transpose(1, 0, 2)
        self.final_state = self._final()
        if self.stateful:
            self.initial_state = self.final_state
        return out

    def backward(self, dH, dstate=None):
        """BPTT: dX (N, T, D) from dH (N, T, H); parameter gradients in place; ``state_grad`` set.

        ``dstate`` is the gradient with respect to ``final_state`` when the loss uses it too (an encoder
        whose h_T starts a decoder): it is where the carried gradient starts, dh_next at t = T (for the
        LSTM a pair, dh_next and dc_next). None: zero.
        """
        X_tm = self._cached(self._cache)[0]
        T, N, D = X_tm.shape
        dH = self._check_dY(dH, (N, T, self.hidden_size))
        dtype = np.result_type(dH, X_tm)
        if dstate is None:
            start = self._zero_state(N, dtype)
        else:  # copies: the loop updates the carried gradients in place
            start = self._as_state(dstate, N, dtype, "dstate")
            start = tuple(s.copy() for s in start) if isinstance(start, tuple) else start.copy()
        dA = self._backward(dH.transpose(1, 0, 2), start)  # (T, N, G·H), the gradient at the pre-activations
        dA2 = dA.reshape(T * N, -1)
        np.matmul(X_tm.reshape(T * N, D).T, dA2, out=self.grads["U"])  # dU = Xᵀ dA: (D, T·N) @ (T·N, G·H)
        np.matmul(self._ones(T * N, dA.dtype), dA2, out=self.grads["b"])  # db = Σ_t Σ_i dA_t,i = 1ᵀ dA
        if not self.input_grad:
            return None
        dX = self._output("dX", (N, T, D), dA.dtype)
        dX.transpose(1, 0, 2)[...] = (dA2 @ self.params["U"].T).reshape(T, N, D)  # dX_t = dA_t Uᵀ
        return dX

    def _flush(self, g, scratch, t):
        """g with every entry of magnitude below the smallest normal number set to zero, in place, at every
        ``flush_every``-th step t (module docstring)."""
        if self.flush_subnormals and t % self.flush_every == 0:
            np.abs(g, out=scratch)
            np.copyto(g, 0, where=scratch < np.finfo(g.dtype).tiny)
        return g

    def _input_part(self, X_tm, G_tm, U=None, b=None):
        """G_tm ← X_t U + b for every step in one product (T·N, D) @ (D, G·H) (before the loop)."""
        T, N, D = X_tm.shape
        U = self.params["U"] if U is None else U
        np.matmul(X_tm.reshape(T * N, D), U, out=G_tm.reshape(T * N, -1))
        G_tm += self.params["b"] if b is None else b
        return G_tm

    def _final(self):
        return self._cache[1][-1].copy()


class RNN(Recurrent):
    """The simple recurrent network of §10.2 (book eqs. 10.8–10.11), batch-first, as ``torch.nn.RNN``.

    Forward, for t = 1 … T, in the row-vector batch form (eqs. 10.8–10.9; f = tanh or ReLU):

        A_t = X_t U + H_{t−1} W + b,     H_t = f(A_t)

    The output layer of eqs. 10.10–10.11 (o = c + V h, ŷ = softmax(o)) is a separate layer here:
    ``TimeDistributed(Linear(H, K))`` for a label per step, ``LastStep()`` then ``Linear`` for one per
    sequence. Back-propagation through time (§10.2.2, eqs. 10.16–10.28), with the loss reaching H_t both
    from the output above (dH_t, the upstream gradient) and from the next step (dh_next), for t = T … 1:

        dh     = dH_t + dh_next                              (eqs. 10.18–10.21; dh_next = 0 at t = T)
        dA_t   = dh ⊙ f′(A_t)   (tanh: 1 − H_t ⊙ H_t;  ReLU: [H_t > 0])          (eq. 10.22, diag(1 − h²))
        dh_next = dA_t Wᵀ                                     (eq. 10.21, carried to step t − 1)
        dX_t   = dA_t Uᵀ

    and after the loop, summing over the steps as the shared parameters require (eqs. 10.22–10.28):

        db = Σ_t 1ᵀ dA_t,     dW = Σ_t H_{t−1}ᵀ dA_t,     dU = Σ_t X_tᵀ dA_t,

    each one product over all T·N rows. ``state_grad`` is the final dh_next, dL/dh_0.

    Shapes: X (N, T, D) -> H (N, T, H); h0, h_T (N, H); U (D, H), W (H, H), b (H,)

    >>> RNN(3, 5, rng=0).forward(np.ones((2, 4, 3), np.float32)).shape
    (2, 4, 5)
    """

    def __init__(
        self, input_size, hidden_size, nonlinearity="tanh", rng=None, dtype=np.float32, stateful=False
    ):
        self.nonlinearity = check_choice(nonlinearity, "nonlinearity", ("tanh", "relu"))
        super().__init__(input_size, hidden_size, rng=rng, dtype=dtype, stateful=stateful)

    def __repr__(self):
        extra = "" if self.nonlinearity == "tanh" else ", nonlinearity='relu'"
        return f"RNN({self.input_size}, {self.hidden_size}{extra})"

    def _forward(self, X_tm, h0):
        T, N, _ = X_tm.shape
        W, dtype = self.params["W"], X_tm.dtype
        H_tm = self._buffer("H_tm", (T + 1, N, self.hidden_size), dtype)
        H_tm[0] = h0
        A = self._input_part(X_tm, H_tm[1:])  # H_tm[t] ← X_t U + b, then the step turns it into h_t
        recurrent = self._buffer("HW", (N, self.hidden_size), dtype)
        for t in range(T):
            np.matmul(H_tm[t], W, out=recurrent)  # H_{t−1} W: (N, H) @ (H, H)
            a = np.add(A[t], recurrent, out=A[t])  # A_t = X_t U + H_{t−1} W + b
            if self.nonlinearity == "tanh":
                np.tanh(a, out=a)  # H_t = tanh(A_t), written over A_t
            else:
                np.maximum(a, 0, out=a)
        self._cache = (X_tm, H_tm)
        return H_tm

    def _backward(self, dH, dh_next):
        X_tm, H_tm = self._cache
        T, N, _ = X_tm.shape
        W, dtype = self.params["W"], np.result_type(dH, X_tm)
        dA = self._buffer("dA", (T, N, self.hidden_size), dtype)
        scratch = self._buffer("scratch", (N, self.hidden_size), dtype)
        for t in range(T - 1, -1, -1):
            dh = np.add(dH[t], dh_next, out=dA[t])  # dh = dH_t + dh_next
            h = H_tm[t + 1]
            if self.nonlinearity == "tanh":
                np.multiply(h, h, out=scratch)
                np.subtract(1, scratch, out=scratch)  # 1 − H_t ⊙ H_t = tanh′(A_t)
                np.multiply(dh, scratch, out=dh)  # dA_t = dh ⊙ (1 − H_t ⊙ H_t)
            else:
                np.multiply(dh, h > 0, out=dh)  # dA_t = dh ⊙ [A_t > 0]
            np.matmul(dA[t], W.T, out=dh_next)  # dh_next = dA_t Wᵀ: (N, H) @ (H, H)
            self._flush(dh_next, scratch, t)
        H_prev = H_tm[:-1].reshape(T * N, -1)
        np.matmul(H_prev.T, dA.reshape(T * N, -1), out=self.grads["W"])  # dW = Σ_t H_{t−1}ᵀ dA_t
        self.state_grad = dh_next
        return dA
