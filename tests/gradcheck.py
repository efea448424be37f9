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


def check_owned_outputs(make_layer, x_shape, rng, dtype=np.float32, reuses_forward=True, reuses_dX=True):
    """The layer convention's ownership rule, for the layer ``make_layer()`` builds (seeded: two calls give
    identical layers), in training mode:

    1. by default a second ``forward`` (``backward``) leaves the first one's output (dX) as it was, in a
       different array (no memory shared);
    2. after ``reuse_buffers()`` the outputs, dX, parameter gradients and ``state`` are bit for bit the
       default ones, and the layer does reuse: ``forward(A)`` and ``forward(B)`` share their memory
       (``reuses_forward``), the same for dX (``reuses_dX``) — the behaviour the training loop opts into;
    3. ``reuse_buffers(False)`` switches it off again.
    """
    A, B = (rng.standard_normal(x_shape).astype(dtype) for _ in range(2))

    def run(layer):
        """forward(A), backward(GA), forward(B), backward(GB); the results and copies taken at once."""
        y1 = layer.forward(A)
        kept = [y1.copy()]
        G1 = np.random.default_rng(1).standard_normal(y1.shape).astype(dtype)
        d1 = layer.backward(G1)
        kept.append(d1.copy())
        grads1 = {k: g.copy() for k, g in layer.grads.items()}
        y2 = layer.forward(B)
        G2 = np.random.default_rng(2).standard_normal(y2.shape).astype(dtype)
        d2 = layer.backward(G2)
        state = {k: v.copy() for k, v in getattr(layer, "state", {}).items()}
        return (y1, d1, y2, d2), kept, (grads1, {k: g.copy() for k, g in layer.grads.items()}, state)

    default = make_layer().train()
    assert default.reuse_buffers(False) is default  # the default, stated
    (y1, d1, y2, d2), (y1_kept, d1_kept), fresh_rest = run(default)
    assert not np.shares_memory(y1, y2) and not np.shares_memory(d1, d2)
    np.testing.assert_array_equal(y1, y1_kept)  # the second forward left the first output alone
    np.testing.assert_array_equal(d1, d1_kept)  # and the second backward the first dX
    assert not np.array_equal(y1, y2) and not np.array_equal(d1, d2)  # the check could have failed

    reusing = make_layer().train()
    assert reusing.reuse_buffers() is reusing
    (r1, e1, r2, e2), (r1_kept, e1_kept), reuse_rest = run(reusing)
    for got, want in ((r1_kept, y1_kept), (e1_kept, d1_kept), (r2, y2), (e2, d2)):
        np.testing.assert_array_equal(got, want)  # bit for bit: assert_array_equal compares exactly
        assert got.dtype == want.dtype
    for got, want in zip(reuse_rest, fresh_rest):
        assert got.keys() == want.keys()
        for k in got:
            np.testing.assert_array_equal(got[k], want[k])
    # the same memory (a Sequential ending in Flatten returns a new view of its last buffer each time)
    assert np.shares_memory(r1, r2) == reuses_forward and np.shares_memory(e1, e2) == reuses_dX

    reusing.reuse_buffers(False)
    assert not np.shares_memory(reusing.forward(A), reusing.forward(B))
