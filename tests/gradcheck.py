"""The one gradient-check helper every layer and loss test uses (float64, central differences, eq. 12)."""

import numpy as np

from handgrad.ch04_numerical import numerical_gradient


def relative_error(a, b):
    """max |a - b| / max(|a|, |b|, tiny): scale-free, so it means the same for large and small gradients."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0), 1e-12)
    return float(np.max(np.abs(a - b), initial=0.0) / scale)


def check_layer_gradients(layer, X, rng, tol=1e-6):
    """Compare a layer's backward pass with finite differences of L = Σ Y ⊙ G for a random G.

    Checks dL/dX (what ``backward`` returns) and every dL/dθ in ``layer.grads``. Returns the worst
    relative error so the caller asserts it.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = layer.forward(X)
    G = rng.standard_normal(Y.shape)

    def loss_of_input(x):
        return float(np.sum(layer.forward(x) * G))

    layer.forward(X)
    dX = layer.backward(G)
    analytic_params = {k: np.array(g, copy=True) for k, g in layer.grads.items()}
    worst = relative_error(dX, numerical_gradient(loss_of_input, X.copy()))
    for name, param in layer.params.items():

        def loss_of_param(p, name=name):
            saved = layer.params[name].copy()
            layer.params[name][...] = p
            try:
                return float(np.sum(layer.forward(X) * G))
            finally:
                layer.params[name][...] = saved

        numeric = numerical_gradient(loss_of_param, param.copy())
        worst = max(worst, relative_error(analytic_params[name], numeric))
    assert worst < tol, f"{type(layer).__name__}: relative gradient error {worst:.2e} exceeds {tol:.0e}"
    return worst
