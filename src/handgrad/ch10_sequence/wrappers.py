"""Layers around recurrent layers: bidirectional RNNs (§10.3), stacking (§10.5) and output layers.

- ``Bidirectional(forward_layer, backward_layer)`` runs one recurrent layer over the sequence and another
  over the time-reversed sequence, reverses the second one's outputs back, and concatenates the two on
  the last axis, so that H_t sees the past (through the first) and the future (through the second) (§10.3).
- Deep RNNs (§10.5, figure 10.13a) are recurrent layers stacked in chapter 6's ``Sequential``: each takes
  the (N, T, H) hidden states of the one below as its input sequence.
- ``LastStep()`` keeps H[:, −1], the summary a sequence-to-label model classifies (figure 10.5);
  ``TimeDistributed(Linear(H, K))`` applies one layer at every step (the output o_t = c + V h_t of
  eq. 10.10 for a label per step) by reading (N, T, H) as N·T rows.
"""

import numpy as np

from .. import ShapeError
from ..ch02_linear_algebra import as_float_array
from ..ch06_feedforward import Layer

__all__ = ["Bidirectional", "LastStep", "TimeDistributed"]


def _sequence(layer, X, what="input"):
    X = as_float_array(X, np.float32)
    if X.ndim != 3 or X.shape[1] == 0:
        raise ShapeError(f"{layer!r} expects {what} (N, T, F) with T >= 1, got {X.shape}")
    return X


class _Wrapper(Layer):
    """A layer made of others: modes, buffer reuse and ``input_grad`` pass through to them."""

    def __init__(self, **inner):
        super().__init__()
        self._inner = inner  # name -> layer; params and grads are the inner layers' own arrays
        for prefix, layer in inner.items():
            for k in layer.params:
                name = k if len(inner) == 1 else f"{prefix}.{k}"
                self.params[name], self.grads[name] = layer.params[k], layer.grads[k]

    def train(self, mode=True):
        for layer in self._inner.values():
            layer.train(mode)
        return super().train(mode)

    def reuse_buffers(self, mode=True):
        for layer in self._inner.values():
            layer.reuse_buffers(mode)
        return super().reuse_buffers(mode)

    @property
    def input_grad(self):
        return all(layer.input_grad for layer in self._inner.values())

    @input_grad.setter
    def input_grad(self, value):
        for layer in self._inner.values():
            layer.input_grad = value


class Bidirectional(_Wrapper):
    """Bidirectional RNN (§10.3, figure 10.11): H = [H_fwd, reverse(H_bwd(reverse(X)))] on the last axis.

    Forward:   H^→ = f(X),   H^← = reverse_t(g(reverse_t(X))),   Y = [H^→, H^←]   (N, T, H_f + H_b)
    Backward:  dX = df(dY[..., :H_f]) + reverse_t(dg(reverse_t(dY[..., H_f:])))

    ``state`` is None or a pair (state of f, state of g); ``final_state`` and ``state_grad`` are the
    pairs of the two layers' own. The parameters are named "fwd.U", "bwd.U", … (the inner layers' arrays).

    Shapes: X (N, T, D) -> Y (N, T, H_f + H_b)
    """

    def __init__(self, layer_fwd, layer_bwd):
        super().__init__(fwd=layer_fwd, bwd=layer_bwd)
        self.layer_fwd, self.layer_bwd = layer_fwd, layer_bwd

    def __repr__(self):
        return f"Bidirectional({self.layer_fwd!r}, {self.layer_bwd!r})"

    def forward(self, X, state=None):
        if state is None:
            state = (None, None)
        elif not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError(f"{self!r}: state must be a pair (forward state, backward state)")
        X = _sequence(self, X)
        Hf = self.layer_fwd.forward(X, state[0])
        Hb = self.layer_bwd.forward(X[:, ::-1], state[1])  # the sequence read from its end
        self._split = Hf.shape[2]
        Y = self._output("Y", (*Hf.shape[:2], Hf.shape[2] + Hb.shape[2]), np.result_type(Hf, Hb))
        Y[..., : self._split] = Hf
        Y[..., self._split :] = Hb[:, ::-1]  # reversed back: Y[:, t] is about step t in both halves
        self.final_state = (self.layer_fwd.final_state, self.layer_bwd.final_state)
        return Y

    def backward(self, dY):
        split = self._cached(getattr(self, "_split", None))
        dY = np.asarray(dY)
        dXf = self.layer_fwd.backward(dY[..., :split])
        dXb = self.layer_bwd.backward(dY[..., split:][:, ::-1])
        self.state_grad = (self.layer_fwd.state_grad, self.layer_bwd.state_grad)
        if dXf is None:
            return None
        dX = self._output("dX", dXf.shape, dXf.dtype)
        return np.add(dXf, dXb[:, ::-1], out=dX)


class LastStep(Layer):
    """The last hidden state of every sequence, Y = H[:, −1] (a sequence-to-label model, figure 10.5).

    Backward: dH is zero at every step but the last, where it is dY.

    Shapes: H (N, T, F) -> Y (N, F)
    """

    def forward(self, H):
        H = _sequence(self, H)
        self._shape = H.shape
        Y = self._output("Y", (H.shape[0], H.shape[2]), H.dtype)
        Y[...] = H[:, -1]
        return Y

    def backward(self, dY):
        N, T, F = self._cached(getattr(self, "_shape", None))
        dY = self._check_dY(dY, (N, F))
        dH = self._output("dH", (N, T, F), dY.dtype)
        dH[:, :-1] = 0
        dH[:, -1] = dY
        return dH


class TimeDistributed(_Wrapper):
    """One layer applied at every step: the (N, T, F) sequence read as N·T rows of an (N·T, F) batch.

    Forward:   Y[:, t] = layer(X[:, t]) for every t, computed as layer(X.reshape(N·T, F)).reshape(N, T, F′)
    Backward:  dX = layer.backward(dY.reshape(N·T, F′)).reshape(N, T, F); the layer's parameter gradients
               are then sums over all steps, as the shared output weights V, c of eqs. 10.10, 10.22–10.23
               require. ``params`` and ``grads`` are the inner layer's own (same names).

    Shapes: X (N, T, F) -> Y (N, T, F′)

    >>> from handgrad.ch06_feedforward import Linear
    >>> TimeDistributed(Linear(4, 3, rng=0)).forward(np.ones((2, 5, 4), np.float32)).shape
    (2, 5, 3)
    """

    def __init__(self, layer):
        super().__init__(layer=layer)
        self.layer = layer

    def __repr__(self):
        return f"TimeDistributed({self.layer!r})"

    def forward(self, X):
        X = _sequence(self, X)
        N, T, F = X.shape
        Y = self.layer.forward(X.reshape(N * T, F))  # a view when X is contiguous
        self._shape = X.shape
        return Y.reshape(N, T, *Y.shape[1:])

    def backward(self, dY):
        N, T, F = self._cached(getattr(self, "_shape", None))
        dY = np.asarray(dY)
        if dY.ndim < 2 or dY.shape[:2] != (N, T):
            raise ShapeError(f"{self!r}.backward expects dY (N, T, ...) = ({N}, {T}, ...), got {dY.shape}")
        dX = self.layer.backward(dY.reshape(N * T, *dY.shape[2:]))
        return None if dX is None else dX.reshape(N, T, F)
