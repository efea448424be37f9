"""Back-propagation through a chain of layers: ``Sequential`` (book §6.5; design report §3.5)."""

import numpy as np

from .._checks import check_int
from .layers import Layer

__all__ = ["Sequential"]


class Sequential(Layer):
    """A chain of layers applied in order, back-propagated in reverse (book §6.5; as PyTorch's Sequential).

    ``forward`` composes the layers' forwards; ``backward(dY)`` runs the chain rule from the last layer
    to the first and returns dX of the first (eq. 14 for each Linear). With
    ``backward(dY, need_input_grad=False)`` the layers before the first parameterised one are skipped
    and that one computes only its parameter gradients (saving one matrix product), returning None.

    ``parameters()`` lists (name, param, grad) with dotted names "<index>.<param>" such as "0.W"; the
    arrays are the layers' own, so updating them in place updates the model. ``params``/``grads`` give
    the same as dicts, so a Sequential is itself a Layer.

    ``reuse_buffers(mode=True)`` passes the opt-in of the layer convention (``layers`` module doc) to every
    layer: a training loop calls ``model.reuse_buffers()`` once after building the model.
    """

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            if not all(hasattr(layer, m) for m in ("forward", "backward", "train")):
                raise TypeError(
                    f"Sequential expects layers (forward, backward, train); argument {i} is {layer!r}"
                )
        self.layers = list(layers)
        self.training = True

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner})"

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(*self.layers[index])
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def parameters(self):
        out = []
        for i, layer in enumerate(self.layers):
            if hasattr(layer, "parameters"):
                out.extend((f"{i}.{name}", p, g) for name, p, g in layer.parameters())
            else:
                out.extend((f"{i}.{name}", p, layer.grads[name]) for name, p in layer.params.items())
        return out

    @property
    def params(self):
        return {name: p for name, p, _ in self.parameters()}

    @property
    def grads(self):
        return {name: g for name, _, g in self.parameters()}

    def train(self, mode=True):
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def reuse_buffers(self, mode=True):
        self._reuse = bool(mode)
        for layer in self.layers:
            if hasattr(layer, "reuse_buffers"):  # a duck-typed layer without buffers has nothing to reuse
                layer.reuse_buffers(mode)
        return self

    def forward(self, X):
        for layer in self.layers:
            X = layer.forward(X)
        return X

    def backward(self, dY, need_input_grad=True):
        stop = 0
        if not need_input_grad:
            has_params = [bool(getattr(layer, "params", None)) for layer in self.layers]
            stop = has_params.index(True) if any(has_params) else len(self.layers)
        for i in range(len(self.layers) - 1, stop - 1, -1):
            layer = self.layers[i]
            if i == stop and not need_input_grad:
                saved = layer.input_grad
                layer.input_grad = False
                try:
                    layer.backward(dY)
                finally:
                    layer.input_grad = saved
                return None
            dY = layer.backward(dY)
        return None if not need_input_grad else dY

    def predict(self, X, batch_size=None):
        """Class indices argmax_j f(X)_j, evaluated in eval mode in batches; the previous modes are restored."""
        batch_size = check_int(batch_size, "batch_size", low=1, optional=True)
        X = np.asarray(X)
        modes = [layer.training for layer in self.layers]
        own = self.training
        self.eval()
        try:
            n = X.shape[0] if X.ndim else 0
            step = n if batch_size is None else int(batch_size)
            parts = [np.argmax(self.forward(X[i : i + step]), axis=1) for i in range(0, n, max(step, 1))]
        finally:
            self.training = own
            for layer, mode in zip(self.layers, modes):
                layer.train(mode)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.intp)
